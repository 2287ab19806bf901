"""The processes the bench starts, and what /proc says about them (CPU time, RSS).

Every service is started in a session of its own and stopped by its process group id, which is
the id of the process this bench started: nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
STOP_GRACE: Final = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = _stat_fields(pid)
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def status_kib(pid: int, key: str) -> int:
    """A `kB` line of /proc/<pid>/status, such as VmRSS or VmHWM; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return float(total - idle), float(total)


class Service:
    """One started program: its main process and, for nginx, its worker processes."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        return [self.pid, *children(self.pid)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    def rss_kib(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in self.pids())

    def hwm_kib(self) -> int:
        return sum(status_kib(pid, "VmHWM") for pid in self.pids())

    def reset_peak(self) -> bool:
        return all([reset_peak(pid) for pid in self.pids()])

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class RssSampler:
    """Samples the summed VmRSS of a service every `interval` seconds in a thread."""

    def __init__(self, service: Service, interval: float = 0.05) -> None:
        self.service = service
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.service.rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.service.rss_kib())


class Processes:
    """Starts services and stops every one of them on exit, error or not."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.services: list[Service] = []

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Service:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=self.workdir,  # never the checkout: `python -m proxy` would import it
                start_new_session=True,
            )
        service = Service(name, process, log_path)
        self.services.append(service)
        return service

    def stop(self, service: Service) -> None:
        process = service.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Anything left in its group (nginx workers whose master died first) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if service in self.services:
            self.services.remove(service)

    def stop_all(self) -> None:
        for service in reversed(list(self.services)):
            self.stop(service)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


# No HTTP_PROXY or the like may send the bench's own requests anywhere else.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """One plain GET to 127.0.0.1 (the bench never talks to anything else)."""
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with _OPENER.open(url, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def wait_until_answers(
    service: Service, url: str, timeout: float = 15.0, interval: float = 0.005
) -> float:
    """Poll `url` until it answers 200; the seconds it took. RuntimeError if the service dies."""
    started = time.perf_counter()
    deadline = started + timeout
    while True:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with code {service.process.returncode} before it "
                f"answered; its log ({service.log_path}):\n{service.log_tail()}"
            )
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout=1.0)
            if status == 200:
                return time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"{service.name} did not answer {url} within {timeout:g} s; its log "
                f"({service.log_path}):\n{service.log_tail()}"
            )
        time.sleep(interval)


@contextlib.contextmanager
def termination_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run like Ctrl-C does: through every `finally`."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

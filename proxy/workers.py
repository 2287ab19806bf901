"""--workers N: N server processes sharing one port (SO_REUSEPORT); the parent supervises.

Each worker is a whole proxy (own event loop, pool, credential cache): the kernel spreads new
connections between them. The workers run in their own session, so a terminal's Ctrl-C reaches
the parent only, which passes each signal on: the second Ctrl-C still exits at once. Their
metrics go to files in a directory the parent makes and removes (proxy/metrics.py), so that the
worker that answers a scrape shows the whole server's figures.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import FrameType
from typing import Any

from proxy.admin import cannot_listen
from proxy.settings import ConfigError, Settings, load_settings

log = logging.getLogger("proxy")

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STARTUP_TIMEOUT = 60.0


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) so that port 0 becomes one port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((host, port))
    return reserved, reserved.getsockname()[1]


def _worker(
    flags: dict[str, Any],
    config_file: Path | None,
    index: int,
    all_listening: Barrier,
    metrics_dir: str,
) -> None:
    os.setsid()
    from proxy.metrics import use_directory

    use_directory(metrics_dir)  # before the server makes its metrics
    from proxy.cli import _run
    from proxy.logs import configure
    from proxy.server import serve

    def load() -> Settings:
        return load_settings({**flags, "workers": 1}, config_file=config_file)

    settings = load()
    configure(settings.log_format, settings.log_level)
    # The banner (worker 0's) tells clients where to connect: only once every worker listens.
    _run(
        serve(
            settings,
            load,
            config_file,
            reuse_port=True,
            announce=index == 0,
            listening=lambda: all_listening.wait(STARTUP_TIMEOUT),
        )
    )


def supervise(settings: Settings, flags: dict[str, Any], config_file: Path | None) -> int:
    """Run the workers until they exit; 0 only if every one exited 0."""
    reserved, port = reserve_port(settings.host, settings.port)
    flags = {**flags, "port": port}  # port 0 becomes one port, the same for every worker
    admin: socket.socket | None = None
    if (address := settings.admin_address) is not None:
        try:
            admin, admin_port = reserve_port(*address)
        except OSError as error:
            reserved.close()
            raise cannot_listen(settings, error) from None
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        flags["admin_listen"] = f"{shown}:{admin_port}"
    try:
        metrics_dir = tempfile.mkdtemp(prefix="lambda-url-proxy-metrics-")
    except OSError as error:
        reserved.close()
        if admin is not None:
            admin.close()
        raise ConfigError(
            f"workers = {settings.workers}: the workers share their metrics through a temporary "
            f"directory, and none could be made ({error}): set TMPDIR to a writable folder "
            "(in Kubernetes, an emptyDir volume mounted at /tmp)"
        ) from None
    context = multiprocessing.get_context("spawn")
    all_listening = context.Barrier(settings.workers)
    workers = [
        context.Process(
            target=_worker,
            args=(flags, config_file, index, all_listening, metrics_dir),
            name=f"w{index}",
        )
        for index in range(settings.workers)
    ]
    log.info("starting %d worker processes on port %d", len(workers), port)

    def forward(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        reserved.close()
        if admin is not None:
            admin.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    codes = [worker.exitcode for worker in workers]
    if any(codes):
        log.error("worker exit codes: %s", codes)
        return 1
    return 0

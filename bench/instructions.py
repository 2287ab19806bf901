"""Instructions per request, counted by callgrind: a figure that repeats to within about 1 %
where CPU time under wrk moves by +-20 % on this shared VM (issue #16, bench/README.md).

    python -m bench.instructions [CMD ...] [--requests N] [--concurrency C]
                                 [--scenario get_small|get_distinct|post_10k] [--repeat K]

Each proxy command (default: the installed `lambda-url-proxy`) is started in turn under
`valgrind --tool=callgrind --instr-atstart=no` with the bench's environment and arguments
(`--route /=<upstream> ...`, bench/cli.py), warmed up uninstrumented, then counted over N requests
sent by C keep-alive client threads: the `totals:` of callgrind's dump divided by N. Compare an
older checkout with this one:

    git worktree add --detach /tmp/base HEAD~1
    python -m bench.instructions "env PYTHONPATH=/tmp/base python -m proxy" lambda-url-proxy
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import cli, micro, nginx, procs
from bench.cli import RESULTS, default_proxy_command, proxy_argv, proxy_environment
from bench.load import Scenario
from bench.procs import Processes, Service
from bench.standin import StandIn

INSTALL_HINT: Final = "install it with: apt-get update && apt-get install -y valgrind"
START_TIMEOUT: Final = 120.0  # seconds: the proxy takes about 10 s to start under valgrind
CONTROL_TIMEOUT: Final = 60.0  # callgrind_control waits for the proxy to read its command
ASSIGNMENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# The bench's scenarios this counts, and what the upstream answers to each, byte for byte.
ANSWERS: Final = {
    "get_small": nginx.SMALL_JSON.encode(),
    "get_distinct": nginx.SMALL_JSON.encode(),  # each request its own target: `?n=<count>`
    "post_10k": b'{"received": true}',
}
SCENARIOS: Final = {s.name: s for s in cli.SCENARIOS if s.name in ANSWERS}


@dataclass(frozen=True)
class Options:
    commands: tuple[str, ...]
    requests: int
    concurrency: int
    scenario: Scenario
    repeat: int
    warmup: int
    output: Path | None
    keep: Path | None


class Failed(RuntimeError):
    """A proxy that did not start or answered wrongly: said, and the run exits 1."""


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description="Instructions per request of each proxy command, counted by callgrind; "
        "prints a table with the ratio of each command to the first and writes "
        "bench/results/instructions-<timestamp>.json",
    )
    parser.add_argument(
        "commands",
        nargs="*",
        metavar="CMD",
        help="proxy commands, each one shell-quoted string (default: lambda-url-proxy beside "
        "this Python); `env NAME=VALUE ... cmd` sets variables for that command",
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests counted (2000)")
    parser.add_argument("--concurrency", type=int, default=10, help="client connections (10)")
    parser.add_argument("--scenario", default="get_small", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per command, each a fresh process (1)"
    )
    parser.add_argument("--warmup", type=int, default=300, help="uncounted requests first (300)")
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/...)")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="copy each run's callgrind dump into DIR, to read with callgrind_annotate",
    )
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, not {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, not {args.warmup}")
    if args.concurrency > args.requests:
        parser.error(f"--concurrency {args.concurrency} is more than --requests {args.requests}")
    for command in args.commands:
        try:
            split_command(command)
        except ValueError as error:
            parser.error(str(error))
    return Options(
        commands=tuple(args.commands) or (shlex.join(default_proxy_command()),),
        requests=args.requests,
        concurrency=args.concurrency,
        scenario=SCENARIOS[args.scenario],
        repeat=args.repeat,
        warmup=args.warmup,
        output=args.output,
        keep=args.keep,
    )


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """`env A=1 B=2 prog args` (or `A=1 prog args`) -> ({A: 1, B: 2}, [prog, args]): valgrind
    must start the proxy's own program, not `env` (it does not follow an exec by default)."""
    words = shlex.split(command)
    if words[:1] == ["env"]:
        words = words[1:]
        if words and words[0].startswith("-"):
            raise ValueError(f"{command!r}: env's options are not supported, only NAME=VALUE")
    variables: dict[str, str] = {}
    while words and ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        variables[name] = value
    if not words:
        raise ValueError(f"{command!r} names no program to run")
    return variables, words


def shares(total: int, parts: int) -> list[int]:
    """`total` requests over `parts` client threads, as evenly as can be, summing to `total`."""
    base, extra = divmod(total, parts)
    return [base + (1 if n < extra else 0) for n in range(parts)]


def callgrind_totals(text: str) -> int:
    """The instructions of one callgrind dump: its `totals:` line. (Its `summary:` line says 0
    when instrumentation started off, as here.)"""
    found = re.search(r"^totals:\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise ValueError("no totals: line in the callgrind dump")
    return int(found.group(1))


def summarize(runs: Sequence[tuple[str, list[float]]]) -> list[dict[str, Any]]:
    """Per command (in the order given): the median of its runs' instructions per request and
    the ratio of that median to the first command's."""
    rows: list[dict[str, Any]] = []
    first: float | None = None
    for command, per_request in runs:
        median = statistics.median(per_request)
        first = median if first is None else first
        rows.append(
            {"command": command, "runs": per_request, "median": median, "ratio": median / first}
        )
    return rows


def render(rows: list[dict[str, Any]], heading: str) -> str:
    width = max(len("command"), *(len(row["command"]) for row in rows))
    lines = [
        heading,
        f"{'command':<{width}}  {'instr/request':>13}  {'ratio':>6}  runs",
    ]
    for row in rows:
        # A run's counted seconds beside its count: time-driven work (timer ticks, what is
        # made once a second) is counted per second, so a slow run counts more (README).
        seconds = row.get("seconds") or [None] * len(row["runs"])
        runs = ", ".join(
            f"{value:,.0f}" + (f" ({took:.0f} s)" if took is not None else "")
            for value, took in zip(row["runs"], seconds, strict=True)
        )
        lines.append(
            f"{row['command']:<{width}}  {row['median']:>13,.0f}  {row['ratio']:>6.3f}  {runs}"
        )
    return "\n".join(lines)


# --- the upstream -------------------------------------------------------------------------------


@contextlib.contextmanager
def upstream(processes: Processes, workdir: Path) -> Iterator[tuple[int, str]]:
    """(port, description): the bench's nginx if it is installed, else the asyncio stand-in."""
    try:
        tools = nginx.find_tools()
    except nginx.MissingTool as missing:
        with StandIn() as stand_in:
            yield stand_in.port, f"an asyncio stand-in in this process (no nginx: {missing})"
        return
    big = workdir / "1g.bin"
    big.touch()  # upstream_conf names a big file; this run never asks for it
    port = procs.free_port()
    conf = workdir / "upstream.conf"
    conf.write_text(nginx.upstream_conf(workdir, port, tools.echo_module, big))
    service = processes.start("upstream", [tools.nginx, "-c", str(conf), "-p", str(workdir)])
    try:
        procs.wait_until_answers(service, f"http://127.0.0.1:{port}/_bench/health")
    except RuntimeError as error:
        raise Failed(f"the upstream: {error}") from None
    yield port, f"nginx {tools.nginx_version} (bench/nginx.py)"


# --- the client ---------------------------------------------------------------------------------


def exchange(connection: http.client.HTTPConnection, scenario: Scenario, number: int = 0) -> None:
    """One request of the scenario and its answer checked; `number` makes the target of a
    distinct scenario its own, as the bench's wrk script does."""
    target = f"{scenario.path}?n={number}" if scenario.distinct else scenario.path
    body = b"x" * scenario.body_bytes if scenario.body_bytes else None
    connection.request(scenario.method, target, body=body)
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200 or answer != ANSWERS[scenario.name]:
        raise Failed(
            f"{scenario.method} {target} answered {response.status} {answer[:200]!r}, "
            f"not 200 {ANSWERS[scenario.name][:60]!r}"
        )


def drive(
    port: int,
    scenario: Scenario,
    total: int,
    concurrency: int,
    numbers: Iterator[int] | None = None,
) -> None:
    """`total` requests from `concurrency` keep-alive connections at once; Failed on the first
    wrong answer (the others stop at their next request). `numbers` (shared by the threads:
    `next` on an itertools.count is atomic) numbers the requests of a distinct scenario."""
    errors: list[BaseException] = []
    numbers = itertools.count(1) if numbers is None else numbers

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for _ in range(count):
                if errors:
                    return
                exchange(connection, scenario, next(numbers))
        except (Failed, OSError, http.client.HTTPException) as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=client, args=(count,), daemon=True)
        for count in shares(total, concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        first = errors[0]
        said = str(first) if isinstance(first, Failed) else f"{type(first).__name__}: {first}"
        raise Failed(f"{len(errors)} of {concurrency} client(s) failed; the first: {said}")


def check_signed(port: int) -> None:
    """The upstream saw a SigV4 Authorization through the proxy (bench/cli.py's check)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/headers")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        raise Failed(f"GET /headers through the proxy: {type(error).__name__}: {error}") from None
    finally:
        connection.close()
    expected = f"AWS4-HMAC-SHA256 Credential={micro.ACCESS_KEY}/".encode()
    if response.status != 200 or not body.startswith(expected):
        raise Failed(f"the proxy did not sign: GET /headers -> {response.status} {body[:300]!r}")


# --- one count ----------------------------------------------------------------------------------


def control(service: Service, *flags: str) -> None:
    argv = ["callgrind_control", *flags, str(service.pid)]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=CONTROL_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise Failed(f"{shlex.join(argv)} had no answer within {CONTROL_TIMEOUT:g} s") from None
    if result.returncode != 0:
        raise Failed(f"{shlex.join(argv)} failed: {result.stdout}{result.stderr}")


def count_once(
    processes: Processes,
    workdir: Path,
    label: str,
    command: str,
    upstream_port: int,
    options: Options,
) -> tuple[float, float]:
    """Start `command` under callgrind, warm it up, count `options.requests` requests, stop it:
    the instructions per request, and the seconds the counted requests took."""
    variables, program = split_command(command)
    env = {**proxy_environment(workdir), **variables}
    out = workdir / f"{label}.callgrind"
    port = procs.free_port()
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        *proxy_argv(program, upstream_port, port),
    ]
    service = processes.start(label, argv, env)
    try:
        procs.wait_until_answers(
            service, f"http://127.0.0.1:{port}/_proxy/health", START_TIMEOUT, interval=0.2
        )
    except RuntimeError as error:
        raise Failed(str(error)) from None
    try:
        check_signed(port)
        numbers = itertools.count(1)  # distinct targets stay distinct after the warm-up
        if options.warmup:
            concurrency = min(options.concurrency, options.warmup)
            drive(port, options.scenario, options.warmup, concurrency, numbers)
        control(service, "--instr=on")
        counting = time.perf_counter()
        drive(port, options.scenario, options.requests, options.concurrency, numbers)
        seconds = time.perf_counter() - counting
        control(service, "--instr=off")
        control(service, "--dump")
    except Failed as error:
        raise Failed(f"{command}: {error}\nthe proxy's log:\n{service.log_tail()}") from None
    dumps = sorted(workdir.glob(f"{out.name}.*"))  # the --dump writes <out>.<n>
    if not dumps:
        raise Failed(f"{command}: callgrind wrote no dump ({out}.*)")
    totals = callgrind_totals(dumps[-1].read_text(errors="replace"))
    processes.stop(service)
    if options.keep is not None:
        options.keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dumps[-1], options.keep / out.name)
    for path in workdir.glob(f"{out.name}*"):
        path.unlink()
    return totals / options.requests, seconds


def valgrind_version() -> str:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise FileNotFoundError
    return subprocess.run(
        ["valgrind", "--version"], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def run(options: Options) -> dict[str, Any]:
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "stamp": started.strftime("%Y%m%d-%H%M%S"),
        "scenario": options.scenario.name,
        "requests": options.requests,
        "concurrency": options.concurrency,
        "warmup": options.warmup,
        "repeat": options.repeat,
        "host": {
            "python": platform.python_version(),
            "valgrind": valgrind_version(),
            "cores": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
        },
    }
    runs: list[tuple[str, list[float]]] = [(command, []) for command in options.commands]
    result["runs"] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-instructions-") as folder,
        Processes(Path(folder)) as processes,
    ):
        workdir = Path(folder)
        with upstream(processes, workdir) as (upstream_port, described):
            result["upstream"] = described
            print(f"upstream: {described}", file=sys.stderr, flush=True)
            for repetition in range(options.repeat):  # interleaved: a drift touches all alike
                for n, command in enumerate(options.commands):
                    label = f"proxy-{n + 1}-run-{repetition + 1}"
                    per_request, seconds = count_once(
                        processes, workdir, label, command, upstream_port, options
                    )
                    runs[n][1].append(per_request)
                    result["runs"].append(
                        {"label": label, "command": command, "per_request": per_request}
                        | {"counted_seconds": seconds}
                    )
                    print(
                        f"  [{repetition + 1}/{options.repeat}] {command}: "
                        f"{per_request:,.0f} instructions per request "
                        f"({options.requests} requests in {seconds:.1f} s under callgrind)",
                        file=sys.stderr,
                        flush=True,
                    )
    result["rows"] = summarize(runs)
    for n, row in enumerate(result["rows"]):
        row["seconds"] = [r["counted_seconds"] for r in result["runs"][n :: len(runs)]]
    result["wall_s"] = (datetime.now(UTC) - started).total_seconds()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        valgrind_version()
    except (FileNotFoundError, subprocess.CalledProcessError):
        print(
            f"bench.instructions: valgrind (callgrind) is missing: {INSTALL_HINT}", file=sys.stderr
        )
        return 2
    try:
        with procs.termination_as_exit():
            result = run(options)
    except Failed as error:
        print(f"bench.instructions: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "bench.instructions: interrupted; every process it started is stopped", file=sys.stderr
        )
        return 130
    heading = (
        f"instructions per request (callgrind, user space of the proxy process): "
        f"{options.scenario.title}, {options.requests} requests over {options.concurrency} "
        f"connections, median of {options.repeat} run(s); upstream: {result['upstream']}"
    )
    print(render(result["rows"], heading))
    output = options.output or RESULTS / f"instructions-{result['stamp']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfigures written to {output} (whole run {result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

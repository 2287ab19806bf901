"""`python -m bench [--quick]`: start everything on 127.0.0.1, measure, print, save JSON, stop all.

Targets, all in front of the same fast upstream (nginx, see bench/nginx.py):
  direct            wrk -> upstream (the limit of this machine)
  nginx             wrk -> nginx reverse proxy (keep-alive pool) -> upstream
  lambda-url-proxy  wrk -> `lambda-url-proxy` (a real subprocess) -> upstream
  compiled          wrk -> the same proxy compiled by mypyc (--compiled: bench/compiled.py)
  <variant>         wrk -> another proxy command given with --variant LABEL=COMMAND
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import compiled, hostile, load, micro, nginx, procs, report
from bench.load import Scenario
from bench.procs import Processes, RssSampler, Service

RESULTS: Final = Path(__file__).resolve().parent / "results"
ONE_GIB: Final = 1 << 30
ONE_MIB: Final = 1 << 20

PARTS: Final = ("micro", "startup", "load", "ttfb", "stream", "hostile")
SCENARIOS: Final = (
    Scenario("get_small", "GET small JSON", "GET", "/small", connections=50),
    Scenario("get_distinct", "GET small, each distinct", "GET", "/small", 50, distinct=True),
    Scenario("post_10k", "POST 10 KiB", "POST", "/post", connections=50, body_bytes=10240),
    Scenario("get_1m", "GET 1 MiB streamed", "GET", "/bytes/1m", connections=10),
)


@dataclass
class Target:
    name: str
    kind: str  # "direct", "nginx", "proxy" or "peer"
    port: int
    service: Service | None = None
    command: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    quick: bool
    seconds: float
    repeat: int
    warmup: float
    ttfb_samples: int
    startup_runs: int
    stream_runs: int
    micro_repeat: int
    nginx_workers: int
    wrk_threads: int
    scenarios: tuple[str, ...]
    parts: tuple[str, ...]


def proxy_environment(workdir: Path) -> dict[str, str]:
    """The proxy's environment: static example keys, nothing from the user's AWS setup, no proxy
    variables, no instance metadata look-up."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "LAMBDA_URL_PROXY_"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env.update(
        AWS_ACCESS_KEY_ID=micro.ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=micro.SECRET_KEY,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(workdir / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(workdir / "aws-credentials"),
    )
    return env


def default_proxy_command() -> list[str]:
    beside = Path(sys.executable).parent / "lambda-url-proxy"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("lambda-url-proxy")
    if found:
        return [found]
    raise SystemExit(
        "bench: the lambda-url-proxy command is not installed; run `pip install -e .` first"
    )


def proxy_argv(command: list[str], upstream_port: int, port: int) -> list[str]:
    return [
        *command,
        "--route",
        f"/=http://127.0.0.1:{upstream_port}",
        "--region",
        "us-east-1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


# Other signing proxies the bench can put beside this one (`--peer NAME`), each when its binary
# is on the PATH: how it is started in front of the bench's upstream, signing as the proxy does.
# `aws-sigv4-proxy-pooled` is the same program built with a larger idle pool to its upstream
# (Go's default keeps 2 idle connections per host, so under 50 clients most requests open a new
# one): issue 16's second Go figure. bench/README.md says how to build both.
PEERS: Final = ("aws-sigv4-proxy", "aws-sigv4-proxy-pooled")


def peer_argv(binary: str, upstream_port: int, port: int) -> list[str]:
    """awslabs/aws-sigv4-proxy (Go) as shipped: signs for service lambda in us-east-1 with the
    same keys (from the environment) and forwards over plain http to the bench's upstream."""
    return [
        binary,
        "--port",
        f"127.0.0.1:{port}",
        "--name",
        "lambda",
        "--region",
        "us-east-1",
        "--host",
        f"127.0.0.1:{upstream_port}",
        "--upstream-url-scheme",
        "http",
    ]


def find_peers(names: list[str]) -> list[tuple[str, str]]:
    """(name, binary) of each peer asked for whose binary is on the PATH; the others are said
    and skipped: the run goes on without them."""
    found = []
    for name in names:
        binary = shutil.which(name)
        if binary is None:
            say(
                f"bench: --peer {name}: no `{name}` on the PATH, so it is not measured in this "
                "run; build it (Go: awslabs/aws-sigv4-proxy) and put the binary on the PATH "
                "(bench/README.md)"
            )
            continue
        found.append((name, binary))
    return found


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- start-up -----------------------------------------------------------------------------------


def measure_startup(
    processes: Processes, command: list[str], env: dict[str, str], runs: int
) -> dict[str, Any]:
    """Launch to first answered /_proxy/health, `runs` times; and `--help` wall time."""
    to_first: list[float] = []
    for n in range(runs):
        port = procs.free_port()
        started = time.perf_counter()
        service = processes.start(f"startup-{n}", proxy_argv(command, 9, port), env)
        procs.wait_until_answers(service, f"http://127.0.0.1:{port}/_proxy/health")
        to_first.append(time.perf_counter() - started)
        processes.stop(service)
    helps: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*command, "--help"], env=env, capture_output=True, timeout=30, check=True)
        helps.append(time.perf_counter() - started)
    return {
        "runs": runs,
        "to_first_answer_s": statistics.median(to_first),
        "to_first_answer_all_s": to_first,
        "help_s": statistics.median(helps),
        "help_all_s": helps,
    }


# --- load ---------------------------------------------------------------------------------------


def measure_run(
    tools: nginx.Tools,
    target: Target,
    upstream: Service,
    scenario: Scenario,
    seconds: float,
    script: Path,
    threads: int,
) -> dict[str, Any]:
    service = target.service
    if service is not None:
        service.reset_peak()
    cpu_before = service.cpu_seconds() if service else 0.0
    upstream_before = upstream.cpu_seconds()
    busy_before, total_before = procs.machine_cpu()
    if service is not None:
        with RssSampler(service, interval=0.1) as sampler:
            figures = load.run_wrk(
                tools.wrk, f"http://127.0.0.1:{target.port}", scenario, seconds, script, threads
            )
        peak_kib = max(sampler.peak_kib, service.hwm_kib())
    else:
        figures = load.run_wrk(
            tools.wrk, f"http://127.0.0.1:{target.port}", scenario, seconds, script, threads
        )
        peak_kib = 0
    busy_after, total_after = procs.machine_cpu()
    requests = max(1, int(figures["requests"]))
    duration = figures["duration_us"] / 1e6
    errors = sum(
        int(figures[k])
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    run: dict[str, Any] = {
        "requests": figures["requests"],
        "errors": errors,
        "seconds": duration,
        "req_s": figures["requests"] / duration,
        "mib_s": figures["bytes"] / duration / ONE_MIB,
        "p50_ms": figures["p50_us"] / 1000,
        "p90_ms": figures["p90_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "upstream_cpu_us": (upstream.cpu_seconds() - upstream_before) / requests * 1e6,
        "machine_busy_pct": 100 * (busy_after - busy_before) / max(1.0, total_after - total_before),
        "wrk": figures,
    }
    if service is not None:
        run["cpu_us"] = (service.cpu_seconds() - cpu_before) / requests * 1e6
        run["peak_rss_mib"] = peak_kib / 1024
    return run


def measure_load(
    tools: nginx.Tools,
    targets: list[Target],
    upstream: Service,
    plan: Plan,
    workdir: Path,
    logs: list[Path],
) -> dict[str, Any]:
    """Every scenario against every target, `plan.repeat` times, interleaved so that a drift of
    the machine during the run touches all targets alike."""
    scenarios = [s for s in SCENARIOS if s.name in plan.scenarios]
    scripts = {s.name: load.wrk_script(s, workdir) for s in scenarios}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.name: {t.name: [] for t in targets} for s in scenarios
    }
    for rep in range(plan.repeat):
        for scenario in scenarios:
            for target in targets:
                if rep == 0 and plan.warmup > 0:
                    load.run_wrk(
                        tools.wrk,
                        f"http://127.0.0.1:{target.port}",
                        scenario,
                        plan.warmup,
                        scripts[scenario.name],
                        plan.wrk_threads,
                    )
                run = measure_run(
                    tools,
                    target,
                    upstream,
                    scenario,
                    plan.seconds,
                    scripts[scenario.name],
                    plan.wrk_threads,
                )
                runs[scenario.name][target.name].append(run)
                say(
                    f"  [{rep + 1}/{plan.repeat}] {scenario.title:<20} {target.name:<22} "
                    f"{run['req_s']:>9.0f} req/s  p99 {run['p99_ms']:7.2f} ms"
                    + (f"  {run['cpu_us']:6.1f} µs CPU/req" if "cpu_us" in run else "")
                    + (f"  {run['errors']} ERRORS" if run["errors"] else "")
                )
                for path in logs:  # access logs grow by millions of lines otherwise
                    if path.exists():
                        os.truncate(path, 0)
    return {
        s.name: {
            "title": s.title,
            "method": s.method,
            "path": s.path,
            "connections": s.connections,
            "body_bytes": s.body_bytes,
            "targets": {
                t.name: {
                    "median": report.medians(runs[s.name][t.name]),
                    "runs": runs[s.name][t.name],
                }
                for t in targets
            },
        }
        for s in scenarios
    }


def measure_ttfb(targets: list[Target], samples: int) -> dict[str, Any]:
    return {t.name: load.time_to_first_byte(t.port, "/slow", samples) for t in targets}


def measure_big_stream(targets: list[Target], runs: int) -> dict[str, Any]:
    """One 1 GiB answer at a time through each proxy (and direct, for the throughput), `runs`
    times: the proxy's RSS growth over its RSS just before (VmHWM, reset first, and VmRSS sampled
    every 20 ms; the largest growth of the runs) and the median throughput."""
    results: dict[str, Any] = {}
    for target in targets:
        if target.kind == "nginx":
            continue  # nginx buffers to temporary files by default: not comparable, not asked
        service = target.service
        seconds: list[float] = []
        growth: list[tuple[int, int, int]] = []  # (growth, before, peak) in KiB
        for _ in range(runs):
            if service is None:
                seconds.append(load.stream_through(target.port, "/bytes/1g", ONE_GIB))
                continue
            before_kib = service.rss_kib()
            reset = service.reset_peak()
            with RssSampler(service, interval=0.02) as sampler:
                seconds.append(load.stream_through(target.port, "/bytes/1g", ONE_GIB))
            peak_kib = max(sampler.peak_kib, service.hwm_kib() if reset else 0)
            growth.append((max(0, peak_kib - before_kib), before_kib, peak_kib))
        median = statistics.median(seconds)
        results[target.name] = {"runs": runs, "seconds": median, "mib_s": 1024 / median}
        if growth:
            worst = max(growth)
            results[target.name].update(
                rss_growth_mib=worst[0] / 1024,
                rss_before_mib=worst[1] / 1024,
                rss_peak_mib=worst[2] / 1024,
            )
    return results


def sanity_check(targets: list[Target]) -> None:
    """Each target answers each scenario correctly before anything is timed, and the proxy
    really signs (the upstream echoes the Authorization header it got)."""
    for target in targets:
        for method, path, body, want in (
            ("GET", "/small", None, nginx.SMALL_JSON.encode()),
            ("POST", "/post", b"x" * 10240, b'{"received": true}'),
        ):
            status, answer = load.check_answer(target.port, method, path, body)
            if status != 200 or answer != want:
                raise RuntimeError(f"{target.name}: {method} {path} -> {status} {answer[:200]!r}")
        status, answer = load.check_answer(target.port, "GET", "/bytes/1m")
        if status != 200 or len(answer) != ONE_MIB:
            raise RuntimeError(f"{target.name}: GET /bytes/1m -> {status}, {len(answer)} bytes")
        if target.kind in ("proxy", "peer"):
            status, answer = load.check_answer(target.port, "GET", "/headers")
            expected = f"AWS4-HMAC-SHA256 Credential={micro.ACCESS_KEY}/".encode()
            if (
                status != 200
                or not answer.startswith(expected)
                or b"/us-east-1/lambda/" not in answer
            ):
                raise RuntimeError(f"{target.name} did not sign: {status} {answer[:300]!r}")


# --- the run ------------------------------------------------------------------------------------


def start_services(
    processes: Processes,
    tools: nginx.Tools,
    plan: Plan,
    workdir: Path,
    proxies: list[tuple[str, list[str]]],
    env: dict[str, str],
    peers: list[tuple[str, str]] = [],  # noqa: B006 - read only
) -> tuple[Service, list[Target]]:
    big = workdir / "1g.bin"
    nginx.make_sparse_file(big, ONE_GIB)
    upstream_port, nginx_port = procs.free_port(), procs.free_port()
    upstream_conf = workdir / "upstream.conf"
    upstream_conf.write_text(nginx.upstream_conf(workdir, upstream_port, tools.echo_module, big))
    proxy_conf = workdir / "nginx-proxy.conf"
    proxy_conf.write_text(
        nginx.proxy_conf(workdir, nginx_port, upstream_port, workers=plan.nginx_workers)
    )
    upstream = processes.start(
        "upstream", [tools.nginx, "-c", str(upstream_conf), "-p", str(workdir)]
    )
    procs.wait_until_answers(upstream, f"http://127.0.0.1:{upstream_port}/_bench/health")
    targets = [Target("direct (the limit)", "direct", upstream_port)]
    service = processes.start(
        "nginx-proxy", [tools.nginx, "-c", str(proxy_conf), "-p", str(workdir)]
    )
    procs.wait_until_answers(service, f"http://127.0.0.1:{nginx_port}/_bench/health")
    targets.append(Target("nginx", "nginx", nginx_port, service))
    for label, command in proxies:
        port = procs.free_port()
        service = processes.start(
            f"proxy-{len(targets)}", proxy_argv(command, upstream_port, port), env
        )
        procs.wait_until_answers(service, f"http://127.0.0.1:{port}/_proxy/health")
        targets.append(Target(label, "proxy", port, service, command))
    for name, binary in peers:
        port = procs.free_port()
        argv = peer_argv(binary, upstream_port, port)
        service = processes.start(f"peer-{len(targets)}", argv, env)
        # A peer has no health endpoint of its own: the upstream's, through it.
        procs.wait_until_answers(service, f"http://127.0.0.1:{port}/_bench/health")
        targets.append(Target(name, "peer", port, service, argv))
    return upstream, targets


def host_facts(tools: nginx.Tools, proxies: list[tuple[str, list[str]]]) -> dict[str, Any]:
    from importlib.metadata import version

    import aiohttp

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": version("uvloop"),
        "nginx": tools.nginx_version,
        "wrk": tools.wrk_version,
        "proxies": {label: shlex.join(command) for label, command in proxies},
        "loadavg_at_start": os.getloadavg(),
    }


def run_profile(
    label: str,
    scenario: Scenario,
    tools: nginx.Tools,
    targets: list[Target],
    plan: Plan,
    workdir: Path,
    stem: Path,
) -> dict[str, Any]:
    from bench import profile

    proxy = next((t for t in targets if t.name == label), None)
    if proxy is None or proxy.service is None:
        raise SystemExit(f"bench: --profile {label!r} is not one of the proxies measured")
    say(f"bench: profiling {proxy.name} under {scenario.title} (py-spy)")
    return profile.profile(
        tools, proxy.port, proxy.service.pid, scenario, plan.seconds, workdir, stem
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    tools = nginx.find_tools()
    quick = bool(args.quick)
    plan = Plan(
        quick=quick,
        seconds=args.seconds or (2.0 if quick else 10.0),
        repeat=args.repeat or (1 if quick else 3),
        warmup=1.0 if quick else 2.0,
        ttfb_samples=8 if quick else 25,
        startup_runs=3 if quick else 5,
        stream_runs=1 if quick else 3,
        micro_repeat=3 if quick else 7,
        nginx_workers=args.nginx_workers,
        wrk_threads=args.wrk_threads,
        scenarios=tuple(name for name in args.scenarios.split(",") if name),
        parts=tuple(name for name in args.parts.split(",") if name),
    )
    unknown = (set(plan.scenarios) | {args.profile_scenario}) - {s.name for s in SCENARIOS}
    unknown |= set(plan.parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s) or part(s): {', '.join(sorted(unknown))}")
    main_command = shlex.split(args.proxy_cmd) if args.proxy_cmd else default_proxy_command()
    proxies = [("lambda-url-proxy", main_command)]
    if args.proxy_workers > 1:  # issue 5 asks for the N = 2 figure beside the one-process one
        proxies.append(
            (
                f"proxy --workers {args.proxy_workers}",
                [*main_command, "--workers", str(args.proxy_workers)],
            )
        )
    for variant in args.variant:
        label, _, command = variant.partition("=")
        if not label or not command:
            raise SystemExit(f"bench: --variant {variant!r} is not LABEL=COMMAND")
        proxies.append((label, shlex.split(command)))
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory(prefix="lambda-url-proxy-bench-") as tmp:
        workdir = Path(tmp)
        if args.compiled:
            say("bench: building the compiled proxy (setup.py, USE_MYPYC=1): a minute or two")
            try:
                site = compiled.build(workdir / "compiled")
            except compiled.BuildFailed as error:
                raise SystemExit(f"bench: --compiled: {error}") from None
            command = compiled.command(site)
            proxies.append(("compiled", command))
            if args.proxy_workers > 1:
                label = f"compiled --workers {args.proxy_workers}"
                proxies.append((label, [*command, "--workers", str(args.proxy_workers)]))
        result: dict[str, Any] = {
            "started": started.isoformat(timespec="seconds"),
            "stamp": stamp,
            "plan": plan.__dict__,
            "host": host_facts(tools, proxies),
        }
        env = proxy_environment(workdir)
        say(f"bench: {'quick' if quick else 'full'} run; work files in {workdir}")
        load_1m = os.getloadavg()[0]
        if load_1m > 0.5:
            say(
                f"bench: warning: the machine is busy already (load average {load_1m:.2f}): "
                "throughput figures will be noisy; CPU per request suffers least"
            )
        if "micro" in plan.parts:
            say("bench: signing micro-benchmark")
            timed = 0.05 if quick else 0.2  # seconds per timeit repeat
            result["signing"] = micro.signing(plan.micro_repeat, timed)
        with Processes(workdir) as processes:
            if "startup" in plan.parts:
                say("bench: start-up times")
                result["startup"] = {
                    label: measure_startup(processes, command, env, plan.startup_runs)
                    for label, command in proxies
                }
            if not ({"load", "ttfb", "stream", "hostile"} & set(plan.parts) or args.profile):
                return finish(result, proxies, started)
            say("bench: starting upstream, nginx and the proxies")
            peers = find_peers(args.peer)
            upstream, targets = start_services(processes, tools, plan, workdir, proxies, env, peers)
            sanity_check(targets)
            logs = [workdir / "nginx-proxy-access.log"] + [
                t.service.log_path for t in targets if t.kind == "proxy" and t.service
            ]
            if "load" in plan.parts:
                say(
                    f"bench: load, {plan.repeat} x {plan.seconds:g} s per scenario and target "
                    f"(wrk -t{plan.wrk_threads})"
                )
                result["scenarios"] = measure_load(tools, targets, upstream, plan, workdir, logs)
            if "ttfb" in plan.parts:
                say("bench: time to first byte of a slow chunked stream")
                result["ttfb"] = measure_ttfb(targets, plan.ttfb_samples)
            if "stream" in plan.parts:
                say(f"bench: one 1 GiB answer through each proxy, {plan.stream_runs} time(s)")
                result["stream_1g"] = measure_big_stream(targets, plan.stream_runs)
            if "hostile" in plan.parts:
                say("bench: hostile input: floods of heads and uploads, a gzip bomb")
                result["hostile"] = hostile.measure(
                    processes, main_command, targets[0].port, env, workdir, quick
                )
            if args.profile:
                scenario = next(s for s in SCENARIOS if s.name == args.profile_scenario)
                result["profile"] = run_profile(
                    args.profile, scenario, tools, targets, plan, workdir, RESULTS / stamp
                )
    return finish(result, proxies, started)


def finish(
    result: dict[str, Any], proxies: list[tuple[str, list[str]]], started: datetime
) -> dict[str, Any]:
    result["checks"] = report.checks(result, [label for label, _ in proxies])
    result["host"]["loadavg_at_end"] = os.getloadavg()
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["wall_s"] = (datetime.now(UTC) - started).total_seconds()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark lambda-url-proxy against nginx and the bare upstream, all on "
        "127.0.0.1; prints a table and writes bench/results/<timestamp>.json",
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default 10; quick 2)")
    parser.add_argument("--repeat", type=int, help="runs per scenario and target (default 3)")
    parser.add_argument(
        "--proxy-cmd", help="the proxy command (default: lambda-url-proxy beside this Python)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=COMMAND",
        help="another proxy command to measure in the same run, e.g. "
        "'quiet=lambda-url-proxy --log-level warning' (repeatable)",
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="also build the proxy compiled by mypyc (setup.py: needs gcc) and measure it",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated wrk scenarios to run (default: all: %(default)s)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run (default: all: %(default)s)",
    )
    parser.add_argument(
        "--proxy-workers",
        type=int,
        default=2,
        metavar="N",
        help="also measure lambda-url-proxy --workers N (default 2; 1 to skip)",
    )
    parser.add_argument("--nginx-workers", type=int, default=1, help="nginx proxy workers (1)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="lambda-url-proxy",
        metavar="LABEL",
        help="also record a py-spy profile of a proxy (default: lambda-url-proxy)",
    )
    parser.add_argument(
        "--profile-scenario",
        default=SCENARIOS[0].name,
        help="the scenario run while profiling (default: %(default)s)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        choices=PEERS,
        help="also measure this other signing proxy, when its binary is on the PATH "
        "(repeatable; skipped with a message otherwise)",
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/<ts>.json)")
    args = parser.parse_args(argv)
    try:
        with procs.termination_as_exit():
            result = run(args)
    except nginx.MissingTool as error:
        print(f"bench: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
    print(report.render(result))
    output = args.output or RESULTS / f"{result['stamp']}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nfigures written to {output} (whole run {result['wall_s']:.0f} s)")

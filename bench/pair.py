"""Two proxy commands under load at the same time, each under its own wrk: CPU per request of each,
round after round, and the medians. How each change of bench/README.md is measured against its
parent: on this shared 2-core VM, one run after the other moves by +-20 % between rounds, while
running both at once makes the machine's noise hit both alike.

    python -m bench.pair A_COMMAND B_COMMAND [--scenario get_small] [--rounds 7] [--seconds 3]

Each command gets the bench's arguments (`--route /=<upstream> ...`, bench/cli.py) appended,
and the bench's environment, with AWS_ENDPOINT_URL_LAMBDA at the upstream too; the upstream is the
bench's nginx (bench/nginx.py), which also answers as the Lambda API does for a function without
a URL. Invoke against a URL route:

    python -m bench.pair lambda-url-proxy "lambda-url-proxy --route /small=function:bench"
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench import load, nginx, procs
from bench.cli import ONE_GIB, SCENARIOS, proxy_argv, proxy_environment
from bench.procs import Processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pair", description=__doc__)
    parser.add_argument("a", help="the first proxy command")
    parser.add_argument("b", help="the second proxy command")
    parser.add_argument("--scenario", default="get_small", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    tools = nginx.find_tools()
    with tempfile.TemporaryDirectory(prefix="bench-pair-") as folder, Processes(Path(folder)) as ps:
        workdir = Path(folder)
        big = workdir / "1g.bin"
        nginx.make_sparse_file(big, ONE_GIB)
        upstream_port = procs.free_port()
        conf = workdir / "upstream.conf"
        conf.write_text(nginx.upstream_conf(workdir, upstream_port, tools.echo_module, big))
        upstream = ps.start("upstream", [tools.nginx, "-c", str(conf), "-p", str(workdir)])
        procs.wait_until_answers(upstream, f"http://127.0.0.1:{upstream_port}/_bench/health")
        env = proxy_environment(workdir)
        # A route naming a function without a URL invokes it at the upstream (bench/nginx.py):
        # `--route /small=function:bench` measures Invoke beside the URL route to /small.
        env["AWS_ENDPOINT_URL_LAMBDA"] = f"http://127.0.0.1:{upstream_port}"
        proxies = []
        for label, command in (("A", args.a), ("B", args.b)):
            port = procs.free_port()
            argv = proxy_argv(shlex.split(command), upstream_port, port)
            service = ps.start(f"proxy-{label}", argv, env)
            procs.wait_until_answers(service, f"http://127.0.0.1:{port}/_proxy/health")
            proxies.append((label, port, service))
        script = load.wrk_script(scenario, workdir)
        figures: dict[str, list[float]] = {"A": [], "B": []}
        for round_ in range(args.rounds + 1):  # the first round warms up
            results: dict[str, tuple[float, dict[str, Any]]] = {}

            def measure(
                label: str,
                port: int,
                service: procs.Service,
                results: dict[str, tuple[float, dict[str, Any]]] = results,
            ) -> None:
                before = service.cpu_seconds()
                run = load.run_wrk(
                    tools.wrk, f"http://127.0.0.1:{port}", scenario, args.seconds, script
                )
                results[label] = (service.cpu_seconds() - before, run)

            threads = [threading.Thread(target=measure, args=proxy) for proxy in proxies]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            line = []
            for label, (cpu, run) in sorted(results.items()):
                per_request = cpu / max(run["requests"], 1) * 1e6
                line.append(f"{label} {per_request:6.1f} us/req {run['requests']:7d} req")
                if round_:
                    figures[label].append(per_request)
            print(f"round {round_}{' (warm-up)' if not round_ else ''}: " + "   ".join(line))
        a, b = (statistics.median(figures[label]) for label in ("A", "B"))
        print(
            f"{scenario.title}: median CPU per request over {args.rounds} rounds: "
            f"A {a:.1f} us, B {b:.1f} us, A/B {a / b:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

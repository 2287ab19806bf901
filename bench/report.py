"""Medians, the issue's targets (PASS/MISS, never asserted) and the printed table."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from bench import hostile

NGINX = "nginx"
DIRECT = "direct (the limit)"
# bench/cli.py PEERS: the Go proxy as shipped, and built with a larger idle pool, each when its
# binary is on the PATH.
PEER = "aws-sigv4-proxy"
POOLED_PEER = "aws-sigv4-proxy-pooled"
# Issue 16: at most 130 us of CPU per small GET, set when nginx took 29-31 us on this machine.
ISSUE_16_CPU_VS_NGINX = 130 / 30


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs; errors are summed (one bad run must show)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    figures = {k: statistics.median(run[k] for run in runs) for k in keys}
    figures["errors"] = sum(run["errors"] for run in runs)
    return figures


def _figure(result: dict[str, Any], scenario: str, target: str, key: str) -> float | None:
    try:
        value = result["scenarios"][scenario]["targets"][target]["median"][key]
    except KeyError:
        return None
    return float(value)


def _check(
    checks: list[dict[str, Any]],
    proxy: str,
    name: str,
    value: float | None,
    target: str,
    passed: Callable[[float], bool],
    shown: str,
) -> None:
    if value is None:
        return
    checks.append(
        {
            "proxy": proxy,
            "check": name,
            "value": value,
            "shown": shown.format(value),
            "target": target,
            "pass": passed(value),
        }
    )


def checks(result: dict[str, Any], proxies: list[str]) -> list[dict[str, Any]]:
    """The issue's targets for each proxy measured, from figures of this run only."""
    found: list[dict[str, Any]] = []

    def ratio(scenario: str, proxy: str, key: str, to: str = NGINX) -> float | None:
        ours, theirs = _figure(result, scenario, proxy, key), _figure(result, scenario, to, key)
        return ours / theirs if ours is not None and theirs else None

    for proxy in proxies:
        # Issue 16: one process at least the shipped Go proxy's requests a second, `--workers 2`
        # at least the pooled one's, and CPU per request below the pooled one's.
        for peer in (PEER, POOLED_PEER):
            _check(
                found,
                proxy,
                f"GET small req/s vs {peer}",
                ratio("get_small", proxy, "req_s", peer),
                ">= 1.0 x",
                lambda v: v >= 1.0,
                "{:.2f} x",
            )
            _check(
                found,
                proxy,
                f"GET small CPU/req vs {peer}",
                ratio("get_small", proxy, "cpu_us", peer),
                "<= 1.0 x",
                lambda v: v <= 1.0,
                "{:.2f} x",
            )
        _check(
            found,
            proxy,
            "GET small req/s vs nginx",
            ratio("get_small", proxy, "req_s"),
            ">= 0.35 x",
            lambda v: v >= 0.35,
            "{:.2f} x",
        )
        _check(
            found,
            proxy,
            "GET small proxy CPU per request",
            _figure(result, "get_small", proxy, "cpu_us"),
            "<= 100 us",
            lambda v: v <= 100,
            "{:.0f} us",
        )
        for scenario, title in (("get_small", "GET small"), ("get_distinct", "GET distinct")):
            # Issue 16's 130 us was set when nginx took 30 us a request on this machine, whose
            # speed has since moved 2.5 x either way: the same bound as a multiple of nginx's.
            _check(
                found,
                proxy,
                f"{title} CPU/req vs nginx's",
                ratio(scenario, proxy, "cpu_us"),
                f"<= {ISSUE_16_CPU_VS_NGINX:.2f} x",
                lambda v: v <= ISSUE_16_CPU_VS_NGINX,
                "{:.2f} x",
            )
        _check(
            found,
            proxy,
            "GET small p99 vs nginx p99",
            ratio("get_small", proxy, "p99_ms"),
            "<= 3 x",
            lambda v: v <= 3,
            "{:.2f} x",
        )
        _check(
            found,
            proxy,
            "POST 10 KiB req/s vs nginx",
            ratio("post_10k", proxy, "req_s"),
            ">= 0.25 x",
            lambda v: v >= 0.25,
            "{:.2f} x",
        )
        _check(
            found,
            proxy,
            "GET 1 MiB streamed req/s vs nginx",
            ratio("get_1m", proxy, "req_s"),
            ">= 1.0 x",
            lambda v: v >= 1.0,
            "{:.2f} x",
        )
        stream = result.get("stream_1g", {}).get(proxy)
        _check(
            found,
            proxy,
            "peak RSS growth, one 1 GiB answer",
            stream["rss_growth_mib"] if stream else None,
            "< 32 MiB",
            lambda v: v < 32,
            "{:.1f} MiB",
        )
        ttfb = result.get("ttfb", {})
        if proxy in ttfb and DIRECT in ttfb:
            _check(
                found,
                proxy,
                "time to first byte, added to direct",
                ttfb[proxy]["first_byte_ms"] - ttfb[DIRECT]["first_byte_ms"],
                "< 5 ms",
                lambda v: v < 5,
                "{:+.2f} ms",
            )
        startup = result.get("startup", {}).get(proxy)
        _check(
            found,
            proxy,
            "start-up to first answered request",
            startup["to_first_answer_s"] if startup else None,
            "< 1.5 s",
            lambda v: v < 1.5,
            "{:.2f} s",
        )
        _check(
            found,
            proxy,
            "--help, wall time (issue 16)",
            startup["help_s"] if startup else None,
            "< 0.25 s",
            lambda v: v < 0.25,
            "{:.3f} s",
        )
    signing = result.get("signing")
    if signing:
        _check(
            found,
            "proxy.signing",
            "sign() vs botocore add_auth",
            signing["speedup"],
            ">= 3 x faster",
            lambda v: v >= 3,
            "{:.1f} x faster",
        )
    return found


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(result: dict[str, Any]) -> str:
    host = result["host"]
    plan = result["plan"]
    lines = [
        "",
        f"lambda-url-proxy bench, {result['started']} UTC, {host['cpu']} x {host['cores']} "
        f"cores, Python {host['python']}, aiohttp {host['aiohttp']}, uvloop {host['uvloop']}, "
        f"nginx {host['nginx']}, wrk {host['wrk']}",
        f"median of {plan['repeat']} x {plan['seconds']:g} s wrk runs (-t{plan['wrk_threads']}); "
        f"nginx proxy workers: {plan['nginx_workers']}; ratios are against nginx in this run",
    ]
    header = (
        f"{'target':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} "
        f"{'peak RSS MiB':>13} {'upstr us/req':>13} {'busy %':>7} {'vs nginx':>9}"
    )
    for scenario in result.get("scenarios", {}).values():
        lines += ["", f"{scenario['title']} ({scenario['connections']} connections)", header]
        nginx_rps = scenario["targets"].get(NGINX, {}).get("median", {}).get("req_s")
        for name, figures in scenario["targets"].items():
            m = figures["median"]
            errors = f"  {m['errors']:.0f} errors!" if m.get("errors") else ""
            lines.append(
                f"{name:<22} {m['req_s']:>9.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
                f"{_cell(m.get('cpu_us'), '.1f'):>11} {_cell(m.get('peak_rss_mib'), '.1f'):>13} "
                f"{m['upstream_cpu_us']:>13.1f} {m['machine_busy_pct']:>7.0f} "
                f"{_cell(m['req_s'] / nginx_rps if nginx_rps else None, '.2f'):>9}{errors}"
            )
    if result.get("ttfb"):
        lines += ["", "Time to first byte, slow chunked stream (first part after 10 ms), median ms"]
        lines.append(f"{'target':<22} {'headers':>9} {'1st byte':>9} {'complete':>9}")
        for name, t in result["ttfb"].items():
            lines.append(
                f"{name:<22} {t['headers_ms']:>9.2f} {t['first_byte_ms']:>9.2f} "
                f"{t['complete_ms']:>9.2f}"
            )
    if result.get("stream_1g"):
        lines += ["", "One 1 GiB answer at a time (median throughput; largest RSS growth)"]
        for name, s in result["stream_1g"].items():
            rss = (
                f", proxy RSS {s['rss_before_mib']:.1f} -> peak {s['rss_peak_mib']:.1f} MiB "
                f"(growth {s['rss_growth_mib']:.1f} MiB)"
                if "rss_growth_mib" in s
                else ""
            )
            lines.append(f"{name:<22} {s['mib_s']:>7.0f} MiB/s{rss}")
    signing = result.get("signing")
    if signing:
        lines += ["", "Signing, us per signature (median)"]
        for case in signing["cases"]:
            lines.append(
                f"  {case['request']}: proxy sign_request {case['proxy_sign_us']:.1f}, botocore "
                f"add_auth {case['botocore_add_auth_us']:.1f} ({case['speedup']:.1f} x); same "
                f"Authorization: {'yes' if case['same_authorization'] else 'NO'}"
            )
    for label, startup in result.get("startup", {}).items():
        lines.append(
            f"Start-up of {label}: {startup['to_first_answer_s'] * 1000:.0f} ms to the first "
            f"answered request; --help {startup['help_s'] * 1000:.0f} ms "
            f"(median of {startup['runs']})"
        )
    if result.get("hostile"):
        lines += hostile.render(result["hostile"])
    if result.get("profile"):
        lines += ["", result["profile"]["summary"]]
    if result.get("checks"):
        lines += ["", "Targets from issues 5 and 16 (reported, not asserted)"]
        for c in result["checks"]:
            lines.append(
                f"  {'PASS' if c['pass'] else 'MISS'}  {c['proxy']:<18} {c['check']:<38} "
                f"{c['shown']:>16}  (target {c['target']})"
            )
    return "\n".join(lines)

"""Bounded load with wrk, and the small Python clients for what wrk cannot measure."""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# wrk reports through this script's done(): exact counts and percentiles, as one JSON line.
_REPORT: Final = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    method: str
    path: str
    connections: int
    body_bytes: int = 0
    expect_bytes: int | None = None
    # Each request's target its own (`?n=<count>`): what the proxy caches by target or by
    # signature (requests alike within a second share one) never helps.
    distinct: bool = False


def wrk_script(scenario: Scenario, folder: Path) -> Path:
    lines = [f'wrk.method = "{scenario.method}"']
    if scenario.body_bytes:
        lines.append(f'wrk.body = string.rep("x", {scenario.body_bytes})')
        lines.append('wrk.headers["Content-Type"] = "application/octet-stream"')
    if scenario.distinct:
        lines += [
            "local count = 0",
            "request = function()",
            "  count = count + 1",
            '  return wrk.format(nil, wrk.path .. "?n=" .. count)',
            "end",
        ]
    path = folder / f"wrk-{scenario.name}.lua"
    path.write_text("\n".join(lines) + "\n" + _REPORT)
    return path


def run_wrk(
    wrk: str, url: str, scenario: Scenario, seconds: float, script: Path, threads: int = 1
) -> dict[str, Any]:
    """One wrk run: fixed connections, fixed duration. Its figures, as a dict."""
    assert url.startswith("http://127.0.0.1:"), url
    duration = max(1, round(seconds))
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{scenario.connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url + scenario.path,
    ]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 30, check=False
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            figures: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return figures
    raise RuntimeError(
        f"wrk gave no figures (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


def _connection(port: int, timeout: float) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def time_to_first_byte(port: int, path: str, samples: int, warmup: int = 3) -> dict[str, Any]:
    """Median time from sending a request to its headers and to its first body byte, on one
    kept-alive connection (the same client for every target, so its own cost cancels out)."""
    connection = _connection(port, timeout=10)
    headers_ms: list[float] = []
    first_ms: list[float] = []
    total_ms: list[float] = []
    try:
        for n in range(warmup + samples):
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            got_headers = time.perf_counter()
            first = response.read1(65536)
            got_first = time.perf_counter()
            rest = response.read()
            ended = time.perf_counter()
            if response.status != 200 or not first or not (first + rest).startswith(b'{"part"'):
                raise RuntimeError(f"bad slow-stream answer: {response.status} {first + rest!r}")
            if n >= warmup:
                headers_ms.append((got_headers - started) * 1000)
                first_ms.append((got_first - started) * 1000)
                total_ms.append((ended - started) * 1000)
    finally:
        connection.close()
    return {
        "samples": samples,
        "headers_ms": statistics.median(headers_ms),
        "first_byte_ms": statistics.median(first_ms),
        "first_byte_ms_min": min(first_ms),
        "first_byte_ms_max": max(first_ms),
        "complete_ms": statistics.median(total_ms),
    }


def stream_through(port: int, path: str, expect: int, read_size: int = 1 << 20) -> float:
    """Read one large answer as fast as possible, discarding it; seconds it took."""
    connection = _connection(port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        received = 0
        while chunk := response.read(read_size):
            received += len(chunk)
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    if response.status != 200 or received != expect:
        raise RuntimeError(f"{path}: status {response.status}, {received} bytes of {expect}")
    return elapsed


def check_answer(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = _connection(port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()

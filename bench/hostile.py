"""Memory and stalls under hostile input (issue #12): the proxy's RSS while it is flooded with
unfinished request heads that carry no token, and with concurrent 6 MiB uploads; and how long
`/_proxy/health` takes to answer while a gzip bomb uploads.

The proxy runs as in a container: bound wide (`--host 0.0.0.0`) with an `--access-token`; every
byte goes to 127.0.0.1. The clients run in this process, on asyncio, each flood at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import zlib
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import procs
from bench.procs import Processes, RssSampler, Service

TOKEN: Final = "bench-hostile-token"  # noqa: S105 - a bench's own token, on 127.0.0.1
HEAD_LINE: Final = b"X-Flood-%03d: " + b"f" * 8175 + b"\r\n"  # 8190 bytes: aiohttp's own limit
UPLOAD_BYTES: Final = 6 * 1024 * 1024  # Lambda's limit, and the proxy's max_body_size
BOMB_INFLATED: Final = 1 << 30  # 1 GiB of zeros: about 1 MiB of gzip


@dataclass(frozen=True)
class Floods:
    heads: int  # unfinished heads at once
    head_lines: int  # 8190-byte header lines in each (127: the most aiohttp accepts)
    uploads: int  # concurrent 6 MiB uploads
    health_samples: int  # /_proxy/health requests timed at rest
    bombs: int  # gzip bombs uploaded one after the other while /_proxy/health is timed

    @classmethod
    def for_run(cls, quick: bool) -> Floods:
        # The review's floods (issue #12) in the full run; a fifth of them in the quick one.
        return cls(100, 127, 60, 20, 20) if quick else cls(500, 127, 300, 50, 50)


def proxy_argv(command: list[str], upstream_port: int, port: int) -> list[str]:
    return [
        *command,
        *("--route", f"/=http://127.0.0.1:{upstream_port}", "--region", "us-east-1"),
        *("--host", "0.0.0.0", "--port", str(port), "--access-token", TOKEN),
    ]


async def _status(reader: asyncio.StreamReader) -> int:
    """The status of the answer, 0 if the connection ended without one."""
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
        line = await reader.readline()
        return int(line.split()[1]) if line.startswith(b"HTTP/") else 0
    return 0


def _answer(status: asyncio.Task[int]) -> str:
    if not status.done():
        return "still open"
    return str(status.result() or "closed")  # closed: reset before its answer could be read


# --- unfinished heads without a token ----------------------------------------------------------


async def _unfinished_head(port: int, lines: int, sent: asyncio.Event, hold: asyncio.Event) -> str:
    """Send a request head of `lines` long header lines that never ends, wait for `hold`; the
    answer it got meanwhile. The answer is read as it comes: once the proxy has closed, the rest
    of the head makes the connection reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(_status(reader))
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for n in range(lines):
                writer.write(HEAD_LINE % n)
                await writer.drain()
        sent.set()
        await hold.wait()
        return _answer(answer)
    finally:
        answer.cancel()
        writer.transport.abort()


async def _head_flood(port: int, floods: Floods, service: Service) -> dict[str, Any]:
    hold = asyncio.Event()
    sent = [asyncio.Event() for _ in range(floods.heads)]
    clients = [
        asyncio.create_task(_unfinished_head(port, floods.head_lines, done, hold)) for done in sent
    ]
    started = time.perf_counter()
    await asyncio.gather(*(done.wait() for done in sent))
    sent_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # every head is in (or refused): what the proxy holds now
    held_kib = service.rss_kib()
    hold.set()
    answers = Counter(await asyncio.gather(*clients))
    return {
        "connections": floods.heads,
        "head_bytes": len(b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        + floods.head_lines * len(HEAD_LINE % 0),
        "sent_s": sent_s,
        "rss_held_mib": held_kib / 1024,
        "answers": dict(answers),
        "refused_in_log": service.log_path.read_text(errors="replace").count(" head_too_large"),
    }


# --- concurrent uploads ----------------------------------------------------------------------


async def _upload(port: int, body: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(_status(reader))
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(
                b"POST /post HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proxy-Token: %s\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (TOKEN.encode(), len(body))
            )
            writer.write(body)
            await writer.drain()
        return await asyncio.wait_for(answer, 120)
    finally:
        answer.cancel()
        writer.transport.abort()


async def _upload_flood(port: int, floods: Floods) -> dict[str, Any]:
    body = bytes(range(256)) * (UPLOAD_BYTES // 256)
    started = time.perf_counter()
    answers = Counter(await asyncio.gather(*(_upload(port, body) for _ in range(floods.uploads))))
    return {
        "uploads": floods.uploads,
        "upload_bytes": UPLOAD_BYTES,
        "seconds": time.perf_counter() - started,
        "answers": {str(status or "none"): n for status, n in answers.items()},
    }


# --- the gzip bomb ---------------------------------------------------------------------------


def gzip_bomb(path: Path) -> bytes:
    """1 GiB of zeros, gzipped (about 1 MiB); made once, kept in the work directory."""
    if not path.exists():
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
        zeros = bytes(1 << 20)
        parts = [packer.compress(zeros) for _ in range(BOMB_INFLATED >> 20)]
        path.write_bytes(b"".join(parts) + packer.flush())
    return path.read_bytes()


async def _health_ms(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await reader.read()
    finally:
        writer.close()
    return (time.perf_counter() - started) * 1000


async def _health_latencies(port: int, samples: int, interval: float = 0.01) -> list[float]:
    timings = []
    for _ in range(samples):
        timings.append(await _health_ms(port))
        await asyncio.sleep(interval)
    return timings


async def _bomb_upload(port: int, bomb: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /post HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proxy-Token: %s\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (TOKEN.encode(), len(bomb))
        )
        writer.write(bomb)
        status = await asyncio.wait_for(_status(reader), 60)
    finally:
        writer.transport.abort()
    return status, time.perf_counter() - started


async def _bomb(port: int, floods: Floods, bomb: bytes) -> dict[str, Any]:
    at_rest = await _health_latencies(port, floods.health_samples)

    async def bombs() -> list[tuple[int, float]]:
        return [await _bomb_upload(port, bomb) for _ in range(floods.bombs)]

    uploads = asyncio.create_task(bombs())
    during: list[float] = []
    while not uploads.done() or not during:  # at least one sample while they are in flight
        during += await _health_latencies(port, 1, 0.002)
    answers = await uploads
    return {
        "bomb_bytes": len(bomb),
        "inflated_bytes": BOMB_INFLATED,
        "bombs": floods.bombs,
        "statuses": dict(Counter(status for status, _ in answers)),
        "upload_ms": _summary([seconds * 1000 for _, seconds in answers]),
        "health_at_rest_ms": _summary(at_rest),
        "health_during_ms": _summary(during),
    }


def _summary(timings: list[float]) -> dict[str, float]:
    return {
        "samples": len(timings),
        "p50": statistics.median(timings),
        "max": max(timings),
    }


# --- the run -----------------------------------------------------------------------------------


def _measured(
    service: Service, part: Callable[[], Coroutine[Any, Any, dict[str, Any]]]
) -> dict[str, Any]:
    """Run `part`; the proxy's RSS just before, its peak during (VmHWM, reset first, and VmRSS
    sampled every 20 ms) and half a second after."""
    before_kib = service.rss_kib()
    reset = service.reset_peak()
    with RssSampler(service, interval=0.02) as sampler:
        figures = asyncio.run(part())
    peak_kib = max(sampler.peak_kib, service.hwm_kib() if reset else 0)
    time.sleep(0.5)
    figures.update(
        rss_before_mib=before_kib / 1024,
        rss_peak_mib=peak_kib / 1024,
        rss_after_mib=service.rss_kib() / 1024,
    )
    return figures


Load = Callable[[int, Service], Coroutine[Any, Any, dict[str, Any]]]


def measure(
    processes: Processes,
    command: list[str],
    upstream_port: int,
    env: dict[str, str],
    workdir: Path,
    quick: bool,
) -> dict[str, Any]:
    """The three hostile loads, one after the other, each against a proxy started afresh."""
    floods = Floods.for_run(quick)
    bomb = gzip_bomb(workdir / "bomb.gz")
    loads: dict[str, Load] = {
        "heads_without_token": lambda port, service: _head_flood(port, floods, service),
        "uploads_6mib": lambda port, service: _upload_flood(port, floods),
        "gzip_bomb": lambda port, service: _bomb(port, floods, bomb),
    }
    results: dict[str, Any] = {"command": command, "floods": floods.__dict__}
    for name, load in loads.items():
        port = procs.free_port()
        service = processes.start(f"hostile-{name}", proxy_argv(command, upstream_port, port), env)
        procs.wait_until_answers(service, f"http://127.0.0.1:{port}/_proxy/health")
        results[name] = _measured(service, lambda: load(port, service))  # noqa: B023 - run now
        processes.stop(service)
    return results


def render(hostile: dict[str, Any]) -> list[str]:
    heads, uploads, bomb = (
        hostile["heads_without_token"],
        hostile["uploads_6mib"],
        hostile["gzip_bomb"],
    )
    return [
        "",
        "Hostile input: the proxy bound to 0.0.0.0 with an access token (RSS MiB before -> "
        "peak -> after)",
        f"  {heads['connections']} unfinished {heads['head_bytes'] / 1024:.0f} KiB heads, no "
        f"token: {heads['rss_before_mib']:.1f} -> {heads['rss_peak_mib']:.1f} -> "
        f"{heads['rss_after_mib']:.1f} (held with all sent: {heads['rss_held_mib']:.1f}); "
        f"answers seen {heads['answers']}, 431s logged {heads['refused_in_log']}",
        f"  {uploads['uploads']} concurrent 6 MiB uploads: {uploads['rss_before_mib']:.1f} -> "
        f"{uploads['rss_peak_mib']:.1f} -> {uploads['rss_after_mib']:.1f}; all done in "
        f"{uploads['seconds']:.1f} s; answers {uploads['answers']}",
        f"  /_proxy/health while {bomb['bombs']} gzip bombs of {bomb['bomb_bytes'] / 1024:.0f} KiB "
        f"({bomb['inflated_bytes'] >> 30} GiB inflated) upload one after the other: p50 "
        f"{bomb['health_during_ms']['p50']:.1f} ms, max {bomb['health_during_ms']['max']:.1f} ms "
        f"({bomb['health_during_ms']['samples']:.0f} samples; at rest p50 "
        f"{bomb['health_at_rest_ms']['p50']:.1f}, max {bomb['health_at_rest_ms']['max']:.1f}); "
        f"each upload {bomb['upload_ms']['p50']:.0f} ms (max {bomb['upload_ms']['max']:.0f}), "
        f"answers {bomb['statuses']}",
    ]

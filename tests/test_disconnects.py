"""Clients that hang up mid-stream: the upstream side is released at once, and after 10,000 of
them the proxy's open file descriptors and memory are back where they started."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests.conftest import AKID, SECRET, spawn
from tests.fake_function_url import FakeFunctionUrl

DISCONNECTS = 10_000
CONCURRENCY = 50


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def hang_up_mid_stream(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /fn/slow-stream/1000/0.01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    await reader.read(64)  # the stream has begun...
    writer.transport.abort()  # ...and the client is gone


@pytest.mark.timeout(300)  # 17 s on a quiet machine; over 120 s with the machine's 2 cores full
async def test_ten_thousand_disconnects_leak_nothing(fake: FakeFunctionUrl) -> None:
    proxy = await asyncio.to_thread(
        spawn,
        [
            "lambda-url-proxy",
            "--port",
            "0",
            "--route",
            f"/fn={fake.url}",
            "--region",
            "us-east-1",
        ],
        {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET},
    )
    pid = proxy.process.pid
    try:

        async def batch(count: int) -> None:
            queue = iter(range(count))

            async def worker() -> None:
                for _ in queue:
                    await hang_up_mid_stream(proxy.port)

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

        await batch(500)  # warm up: pools, caches and allocator arenas reach their size
        await fake.wait_stream_cancelled(500)
        await asyncio.sleep(0.5)
        fds_before, rss_before = open_fds(pid), rss_mib(pid)
        started = time.monotonic()
        await batch(DISCONNECTS)
        elapsed = time.monotonic() - started
        # Every upstream stream was cut by the proxy, not left to run out.
        await asyncio.wait_for(fake.wait_stream_cancelled(500 + DISCONNECTS), 30)
        await asyncio.sleep(0.5)
        fds_after, rss_after = open_fds(pid), rss_mib(pid)
    finally:
        proxy.stop()
    print(
        f"{DISCONNECTS} disconnects in {elapsed:.1f} s: fds {fds_before} -> {fds_after}, "
        f"RSS {rss_before:.1f} -> {rss_after:.1f} MiB"
    )
    assert fds_after <= fds_before + 2
    assert rss_after - rss_before < 8  # MiB: flat, not 10,000 leaked requests

"""--workers N: processes sharing one port; the kernel spreads connections between them."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import AKID, SECRET, spawn
from tests.fake_function_url import FakeFunctionUrl

# Not in the development loop (-m "not slow"): two worker processes.
pytestmark = pytest.mark.slow


async def health_pid(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    pid: int = json.loads(answer.partition(b"\r\n\r\n")[2])["pid"]
    return pid


async def test_two_workers_share_the_port_and_stop_together(fake: FakeFunctionUrl) -> None:
    proxy = await asyncio.to_thread(
        spawn,
        [
            "lambda-url-proxy",
            "--port",
            "0",
            "--workers",
            "2",
            "--route",
            f"/fn={fake.url}",
            "--region",
            "us-east-1",
        ],
        {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET},
    )
    stopping: asyncio.Task[int] | None = None
    try:
        pids = {await health_pid(proxy.port) for _ in range(60)}  # a new connection each
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"GET /fn/slow-headers/0.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        await asyncio.sleep(0.2)  # in flight when the workers are told to stop
        stopping = asyncio.create_task(asyncio.to_thread(proxy.stop))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        exit_code = await (stopping or asyncio.to_thread(proxy.stop))
    assert len(pids) == 2 and proxy.process.pid not in pids  # two workers, not the parent
    assert answer.startswith(b"HTTP/1.1 200")
    assert fake.received[-1].verified
    assert exit_code == 0
    text = "".join(proxy.lines)
    assert "starting 2 worker processes" in text
    assert text.count("shutting down") == 2  # each worker drained
    # Finished while its worker drained: the access line, held for a batch, was still written
    # (logging flushes its handlers at exit).
    (access,) = [line for line in proxy.lines if "/fn/slow-headers/0.5" in line]
    assert " 200 " in access

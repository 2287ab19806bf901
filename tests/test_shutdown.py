"""Graceful shutdown of the installed command on SIGTERM, which `docker stop` sends.

A raw HTTP/1.1 client reads a slow chunked stream through the proxy while it is told to stop:
the chunk framing shows whether the stream ended cleanly (the terminating zero-size chunk) or
was cut off.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pytest

from proxy.settings import SHUTDOWN_GRACE
from tests.conftest import AKID, SECRET, ProxyProcess, spawn
from tests.fake_function_url import FakeFunctionUrl

# Not in the development loop (-m "not slow"): signals and grace periods by design.
pytestmark = pytest.mark.slow

KEYS: Final = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET}
TICK: Final = b"tick\n"  # one chunk of the fake's /slow-stream


async def start_json_proxy(fake: FakeFunctionUrl, *flags: str) -> ProxyProcess:
    argv = ["lambda-url-proxy", "--port", "0", "--route", f"/fn={fake.url}"]
    argv += ["--region", "us-east-1", "--log-format", "json", *flags]
    return await asyncio.to_thread(spawn, argv, KEYS)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


@dataclass
class Stream:
    """A GET read by a raw client, every byte kept as it arrives."""

    received: bytearray
    reading: asyncio.Task[None]
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int, target: str) -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"transfer-encoding: chunked" in head.lower(), head
        received = bytearray()

        async def read() -> None:
            while chunk := await reader.read(65536):
                received.extend(chunk)

        stream = cls(received, asyncio.create_task(read()), writer)
        await wait_until(lambda: TICK in received, 10, "the first chunk")
        return stream

    def ticks(self) -> int:
        return self.received.count(TICK)

    async def until_closed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.reading, timeout)
        finally:
            self.writer.close()


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """The body of a chunked message, and whether it ended with the zero-size chunk."""
    body = bytearray()
    while True:
        size_line, found, data = data.partition(b"\r\n")
        if not found:
            return bytes(body), False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(body), data == b"\r\n"  # no trailers, nothing after
        if len(data) < size + 2:
            return bytes(body + data[:size]), False
        assert data[size : size + 2] == b"\r\n", "bad chunk framing"
        body += data[:size]
        data = data[size + 2 :]


async def refused_within(port: int, timeout: float) -> float:
    """Seconds until a new connection to `port` is refused (a connection that still gets in,
    before the listener closes, is closed again at once)."""
    started = time.monotonic()
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except (ConnectionRefusedError, ConnectionResetError):
            # Reset: the connect reached the listener's backlog just as the listener closed.
            return time.monotonic() - started
        writer.close()
        assert time.monotonic() - started < timeout, f"still accepting after {timeout} s"
        await asyncio.sleep(0.01)


def json_records(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        if line.strip():
            record = json.loads(line)  # fails the test on any line that is not JSON
            assert isinstance(record, dict), line
            assert {"time", "level", "message"} <= set(record), line
            records.append(record)
    return records


async def test_sigterm_finishes_the_in_flight_stream_then_exits_zero(
    fake: FakeFunctionUrl,
) -> None:
    chunks, delay = 20, 0.1  # 2 s: well within the grace period
    proxy = await start_json_proxy(fake)
    try:
        stream = await Stream.open(proxy.port, f"/fn/slow-stream/{chunks}/{delay}")
        proxy.process.send_signal(signal.SIGTERM)
        refused_after = await refused_within(proxy.port, 5)
        in_flight = stream.ticks()
        assert refused_after < 1 and in_flight < chunks, "refused while the stream goes on"
        await stream.until_closed(chunks * delay + 10)
        exit_code = await asyncio.to_thread(proxy.process.wait, SHUTDOWN_GRACE + 5)
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait(10)
    body, clean_end = dechunk(bytes(stream.received))
    assert body == TICK * chunks and clean_end, "every chunk, then the terminating chunk"
    assert exit_code == 0

    def logged_access() -> bool:
        return any('"event": "access"' in line for line in proxy.lines)

    await wait_until(logged_access, 5, "the access log line")  # the pipe is read by a thread
    records = json_records(proxy.lines)
    messages = [record["message"] for record in records]
    shutting_down = next(i for i, m in enumerate(messages) if m.startswith("shutting down"))
    [access] = [(i, r) for i, r in enumerate(records) if r.get("event") == "access"]
    assert access[0] > shutting_down, "the stream was still running when shutdown began"
    assert access[1]["status"] == 200 and access[1]["outcome"] is None
    assert access[1]["bytes"] == len(TICK) * chunks
    assert not [r for r in records if r["level"] in ("error", "critical")], messages
    assert "Traceback" not in "".join(proxy.lines)


async def test_a_stream_longer_than_the_grace_is_cut_when_the_grace_ends(
    fake: FakeFunctionUrl,
) -> None:
    delay, grace = 0.1, 2.0
    chunks = int((grace + 10) / delay)  # outlasts the grace by far
    proxy = await start_json_proxy(fake, "--shutdown-grace", str(grace))
    try:
        stream = await Stream.open(proxy.port, f"/fn/slow-stream/{chunks}/{delay}")
        proxy.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        limit = grace + 3  # the grace, and start-up of the shutdown
        try:
            exit_code = await asyncio.to_thread(proxy.process.wait, limit)
        except subprocess.TimeoutExpired:
            exit_code = None
        assert exit_code == 0, f"still running {limit} s after SIGTERM"
        assert time.monotonic() - started >= grace - 0.2  # not cut before the grace ended
        await stream.until_closed(5)
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait(10)
    body, clean_end = dechunk(bytes(stream.received))
    assert not clean_end, "a cut stream must not look complete to the client"
    assert 0 < len(body) < len(TICK) * chunks


async def test_the_cut_stream_is_logged_as_cut_by_shutdown(fake: FakeFunctionUrl) -> None:
    proxy = await start_json_proxy(fake, "--shutdown-grace", "0.5")
    stream = await Stream.open(proxy.port, "/fn/slow-stream/100/0.1")
    proxy.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proxy.process.wait, 5) == 0
    await stream.until_closed(5)
    records = [json.loads(line) for line in proxy.lines if line.strip()]
    cut = [r for r in records if r.get("event") == "access"]
    assert [r["outcome"] for r in cut] == ["cut_by_shutdown"]
    assert any("cutting 1 request(s) still running after 0.5 s" in r["message"] for r in records)


async def test_a_second_signal_exits_at_once(fake: FakeFunctionUrl) -> None:
    proxy = await start_json_proxy(fake, "--shutdown-grace", "30")
    stream = await Stream.open(proxy.port, "/fn/slow-stream/300/0.1")
    proxy.process.send_signal(signal.SIGTERM)
    await wait_until(
        lambda: any("shutting down" in line for line in proxy.lines), 5, "draining started"
    )
    started = time.monotonic()
    proxy.process.send_signal(signal.SIGINT)
    exit_code = await asyncio.to_thread(proxy.process.wait, 5)
    assert time.monotonic() - started < 2
    assert exit_code == 128 + signal.SIGINT
    await stream.until_closed(5)
    assert any("second signal: exiting now" in line for line in proxy.lines)

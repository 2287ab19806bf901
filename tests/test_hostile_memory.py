"""Memory held for requests has an overall bound, before auth too (issue #12, finding 2).

A request head (request line and headers) over max_head_size gets 431 while it is still
arriving; request bodies share max_buffered_bodies, beyond which a request waits its turn, then
gets 503. Through the installed command with raw bytes, as an attacker would send them; the
figures of memory itself are the bench's (`python -m bench --parts hostile`), not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from typing import Any

import pytest

from proxy import app
from proxy.lifetime import LIVE
from tests.conftest import (
    ProxyProcess,
    RunningProxy,
    route,
    running_proxy,
)
from tests.fake_function_url import FakeFunctionUrl
from tests.test_hostile_round_two import responses, send

# Not in the development loop (-m "not slow"): floods and timeouts by design.
pytestmark = pytest.mark.slow

TOKEN = "memory-token"
HOST = b"Host: 127.0.0.1\r\n"
# A head that grows a header line of 8000 bytes at a time (aiohttp's own limit is 8190 a line).
BIG_LINES = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 8000) for n in range(8))  # 64 KB


def refused_head(answer: bytes) -> str:
    [(status, headers, body)] = responses(answer)
    assert status == 431, answer[:300]
    assert headers["x-proxy-error"] == "head_too_large"
    assert headers["content-type"].startswith("application/json")
    message: str = json.loads(body)["message"]
    return message


async def access_lines(proxy: ProxyProcess, outcome: str, count: int = 1) -> list[str]:
    """The access lines with `outcome`, once `count` of them are written (lines go out in
    batches, every 50 ms)."""
    for _ in range(100):
        lines = [line for line in proxy.lines if f" {outcome}" in line]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {outcome} access line:\n" + "".join(proxy.lines[-20:]))


# --- the head: a total, while it arrives ---------------------------------------------------------


async def test_a_whole_head_over_max_head_size_gets_431_before_any_token_check(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started("--host", "0.0.0.0", "--access-token", TOKEN)
    answer = await send(proxy.port, b"GET /fn/x HTTP/1.1\r\n" + HOST + BIG_LINES + b"\r\n")
    message = refused_head(answer)  # then the proxy closed the connection: send() saw its end
    assert "max_head_size (32768 bytes)" in message
    assert fake.received == []
    [line] = await access_lines(proxy, "head_too_large")
    assert "GET" in line and "/fn/x" in line and " 431 " in line
    assert "Traceback" not in "".join(proxy.lines)


async def test_a_head_that_never_ends_is_answered_once_it_crosses_the_bound(
    started: Any, fake: FakeFunctionUrl
) -> None:
    """An unfinished head is the flood (500 of them held 1 GiB): it is refused as soon as it is
    over the bound, not at the idle timeout, and whatever else it sends is never parsed."""
    proxy = await started("--host", "0.0.0.0", "--access-token", TOKEN, "--idle-timeout", "60")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    received = bytearray()

    async def read_until_closed() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.create_task(read_until_closed())
    started_at = time.monotonic()
    with contextlib.suppress(ConnectionError):
        writer.write(b"GET /fn/x HTTP/1.1\r\n" + HOST)
        for _ in range(200):  # 1 KiB every 10 ms, never a blank line: 200 KiB if not cut off
            if received or reading.done():
                break
            writer.write(b"X-Slow: " + b"s" * 1014 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
    await asyncio.wait_for(reading, 10)
    closed_after = time.monotonic() - started_at
    writer.close()
    refused_head(bytes(received))
    assert closed_after < 5, f"answered after {closed_after:.1f} s"
    assert fake.received == []
    await access_lines(proxy, "head_too_large")


async def test_a_head_of_max_head_size_is_served_one_byte_more_is_not(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started("--max-head-size", "4KiB")
    start = b"GET /fn/x HTTP/1.1\r\n" + HOST + b"Connection: close\r\nX-Pad: "
    for size, status in ((4096, 200), (4097, 431)):
        head = start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"
        assert len(head) == size
        answer = await send(proxy.port, head)
        assert responses(answer)[0][0] == status, (size, answer[:300])
    assert len(fake.received) == 1


# --- bodies: a shared budget ---------------------------------------------------------------------

BODY = bytes(range(256)) * 2800  # 700 KiB: one fits in 1 MiB, two do not


def upload(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n".encode()
        + extra
        + b"Connection: close\r\n\r\n"
        + body
    )


async def until_received(fake: FakeFunctionUrl, count: int) -> None:
    for _ in range(200):
        if len(fake.received) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the function received {len(fake.received)} requests, not {count}")


async def timed(port: int, data: bytes, timeout: float = 15) -> tuple[bytes, float]:
    answer = await send(port, data, timeout)
    return answer, time.monotonic()


async def test_uploads_beyond_max_buffered_bodies_wait_their_turn(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started("--max-buffered-bodies", "1MiB")
    # The first holds its 700 KiB until the function answers, a second later.
    first = asyncio.create_task(timed(proxy.port, upload("/fn/slow-headers/1", BODY)))
    await until_received(fake, 1)
    second = asyncio.create_task(timed(proxy.port, upload("/fn/second", BODY)))
    (first_answer, first_done), (second_answer, second_done) = await asyncio.gather(first, second)
    assert responses(first_answer)[0][0] == 200, first_answer[:300]
    [(status, _, reply)] = responses(second_answer)
    assert status == 200, second_answer[:300]
    assert json.loads(reply)["body_sha256"] == hashlib.sha256(BODY).hexdigest()
    assert second_done >= first_done - 0.05  # it waited for the first to be done
    assert [r.raw_path for r in fake.received] == ["/slow-headers/1", "/second"]


async def test_an_upload_with_no_room_within_body_timeout_gets_503(
    started: Any, fake: FakeFunctionUrl
) -> None:
    proxy = await started("--max-buffered-bodies", "1MiB", "--body-timeout", "1")
    first = asyncio.create_task(send(proxy.port, upload("/fn/slow-headers/4", BODY), 15))
    await until_received(fake, 1)
    started_at = time.monotonic()
    answer = await send(proxy.port, upload("/fn/second", BODY))
    waited = time.monotonic() - started_at
    [(status, headers, body)] = responses(answer)
    assert status == 503 and headers["x-proxy-error"] == "body_buffer_full", answer[:300]
    message = json.loads(body)["message"]
    assert "max_buffered_bodies" in message and "body_timeout (1 s)" in message
    assert 0.9 < waited < 3.5  # body_timeout, not the first upload's end (4 s)
    assert responses(await first)[0][0] == 200
    assert [r.raw_path for r in fake.received] == ["/slow-headers/4"]


async def test_100_continue_waits_for_room(started: Any, fake: FakeFunctionUrl) -> None:
    proxy = await started("--max-buffered-bodies", "1MiB")
    first = asyncio.create_task(send(proxy.port, upload("/fn/slow-headers/2", BODY), 15))
    await until_received(fake, 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"POST /fn/second HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(BODY)
        )
        interim = asyncio.create_task(reader.readline())
        await asyncio.sleep(0.5)
        assert not interim.done(), "100 Continue before there was room for the body"
        assert await asyncio.wait_for(interim, 5) == b"HTTP/1.1 100 Continue\r\n"
        await reader.readline()
        writer.write(BODY)
        final = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert final.startswith(b"HTTP/1.1 200"), final
    assert responses(await first)[0][0] == 200


async def first_answer(port: int, data: bytes, timeout: float = 5) -> tuple[bytes, bytes]:
    """Send `data` without waiting for the proxy to take it all (a refused body is not read),
    and read the first answer: (head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
        return head, await asyncio.wait_for(reader.readexactly(length), timeout)
    finally:
        writer.transport.abort()


def chunked(path: str, size: int, piece: int = 65536) -> bytes:
    """A chunked upload of `size` bytes in pieces of `piece`."""
    pieces = [min(piece, size - start) for start in range(0, size, piece)]
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"".join(b"%x\r\n%s\r\n" % (n, b"c" * n) for n in pieces)
        + b"0\r\n\r\n"
    )


async def test_a_chunked_upload_larger_than_one_read_arrives_whole(
    started: Any, fake: FakeFunctionUrl
) -> None:
    """No request is read after a chunked one, but all of the chunked one's body is."""
    proxy = await started()
    answer = await send(proxy.port, chunked("/fn/big", 3 * 1024 * 1024), 10)
    [(status, _, reply)] = responses(answer)
    assert status == 200, answer[:300]
    assert json.loads(reply)["body_length"] == 3 * 1024 * 1024


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_larger_than_the_whole_budget_gets_413_at_once(
    started: Any, fake: FakeFunctionUrl, framing: str
) -> None:
    proxy = await started("--max-buffered-bodies", "1MiB")
    if framing == "content-length":  # declared, with Expect: refused before the body is sent
        request = (
            b"POST /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2097152\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
    else:  # of unknown length: cut off once it grows past all the budget could ever hold
        request = chunked("/fn/x", 2 * 1024 * 1024)
    started_at = time.monotonic()
    head, body = await first_answer(proxy.port, request)
    assert time.monotonic() - started_at < 2
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"X-Proxy-Error: body_too_large" in head
    assert "max_buffered_bodies" in json.loads(body)["message"]
    assert fake.received == []


# --- the budget is given back on every path -----------------------------------------------------


async def held_after(proxy: RunningProxy) -> int:
    """The bytes still held once every request in flight is done."""
    live = proxy.app[LIVE]
    for _ in range(200):
        if not live.in_flight:
            break
        await asyncio.sleep(0.01)
    return live.bodies.held


async def status_of(proxy: RunningProxy, data: bytes) -> int:
    head, _ = await first_answer(int(proxy.url.rsplit(":", 1)[1]), data)
    return int(head.split()[1])


async def hang_up(proxy: RunningProxy, data: bytes) -> None:
    """Send `data`, then hang up (RST) while the proxy reads the body or waits for room."""
    _, writer = await asyncio.open_connection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()


async def test_the_budget_is_given_back_on_every_path(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    routes = [route("/fn", fake.url), route("/down", "http://127.0.0.1:1")]
    async with running_proxy(
        routes=routes, max_buffered_bodies=1024 * 1024, max_body_size=900_000, body_timeout=1
    ) as proxy:
        half = -len(BODY) // 2
        for name, data, status in (
            ("forwarded", upload("/fn/ok", BODY), 200),
            ("chunked: what it did not need is given back", chunked("/fn/c", 5000), 200),
            ("chunked past max_body_size", chunked("/fn/c", 1024 * 1024), 413),
            ("upstream unreachable", upload("/down/x", BODY), 502),
            ("body too slow", upload("/fn/slow", BODY)[:half], 408),
        ):
            assert await status_of(proxy, data) == status, name
            assert await held_after(proxy) == 0, name
        await hang_up(proxy, upload("/fn/gone", BODY)[:half])
        assert await held_after(proxy) == 0, "client gone mid-body"
        # While the budget is full: one hangs up while it waits, one waits past body_timeout.
        holder = asyncio.create_task(status_of(proxy, upload("/fn/slow-headers/2", BODY)))
        await until_received(fake, 3)
        assert proxy.app[LIVE].bodies.held == len(BODY)
        await hang_up(proxy, upload("/fn/gone", BODY))
        assert await status_of(proxy, upload("/fn/waits", BODY)) == 503
        assert await holder == 200
        assert await held_after(proxy) == 0
        assert not proxy.app[LIVE].bodies._line  # nobody left waiting in line


async def test_a_waiting_upload_is_left_in_the_socket(
    fake: FakeFunctionUrl, aws_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a request waits for room, aiohttp stops reading its body once it has buffered
    twice read_bufsize (64 KiB) and one read of the socket (256 KiB) more at most."""
    buffered: list[int] = []
    read_body = app.read_body

    async def reading(request: Any, limit: int, hint: str) -> bytes:
        buffered.append(request.content.total_bytes)  # what arrived while it waited
        return await read_body(request, limit, hint)

    monkeypatch.setattr(app, "read_body", reading)
    body = bytes(6 * 1024 * 1024)
    async with running_proxy(routes=[route("/fn", fake.url)], max_buffered_bodies=7 << 20) as proxy:
        holder = asyncio.create_task(status_of(proxy, upload("/fn/slow-headers/1", body)))
        await until_received(fake, 1)
        assert await status_of(proxy, upload("/fn/waited", body)) == 200
        assert await holder == 200
    assert len(buffered) == 2 and max(buffered) <= 2 * 64 * 1024 + 256 * 1024, buffered

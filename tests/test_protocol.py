"""The request-head bound of proxy/_aiohttp.py, read by read: a head is counted until it ends and
refused once it is over max_head_size, before the parser takes the bytes that cross the bound;
bodies are never counted as heads. And the canary for the aiohttp internals it relies on."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web, web_protocol
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader

from proxy import _aiohttp as protocol_module
from proxy._aiohttp import JsonErrorRequestHandler, JsonErrorServer

LIMIT = 1024
GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


class Transport(asyncio.Transport):
    """A connection's socket, in memory: what the server wrote, and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for line in lines:
            self.write(line)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


@dataclasses.dataclass
class Connection:
    protocol: JsonErrorRequestHandler
    transport: Transport
    fed: list[int]  # the size of each piece aiohttp's parser was given

    async def receive(self, *reads: bytes) -> None:
        for data in reads:
            self.protocol.data_received(data)
        for _ in range(20):  # let the handler answer what is complete
            await asyncio.sleep(0)

    def statuses(self) -> list[int]:
        return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", self.transport.written)]


async def echo(request: web.BaseRequest) -> web.Response:
    body = await request.read()
    return web.Response(text=f"{request.method} {request.path} {len(body)}")


@pytest_asyncio.fixture
async def connection(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Connection]:
    fed: list[int] = []
    original = protocol_module._parse

    def spy(self: web_protocol.RequestHandler, data: bytes) -> None:
        fed.append(len(data))
        original(self, data)

    monkeypatch.setattr(protocol_module, "_parse", spy)
    server = JsonErrorServer(echo)
    server.max_connections = 10
    server.max_head_size = LIMIT
    protocol = server()
    assert isinstance(protocol, JsonErrorRequestHandler)
    transport = Transport()
    protocol.connection_made(transport)
    yield Connection(protocol, transport, fed)
    protocol.connection_lost(None)
    await server.shutdown(0.1)


def head(size: int, path: bytes = b"/x") -> bytes:
    """A GET head of exactly `size` bytes, its terminating blank line included."""
    start = b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nX-Pad: "
    return start + b"p" * (size - len(start) - 4) + b"\r\n\r\n"


async def test_a_head_of_the_limit_is_served_one_byte_more_is_431(
    connection: Connection,
) -> None:
    await connection.receive(head(LIMIT, b"/a"))
    assert connection.statuses() == [200] and b"GET /a 0" in connection.transport.written
    await connection.receive(head(LIMIT + 1, b"/b"))
    assert connection.statuses() == [200, 431]
    assert b"X-Proxy-Error: head_too_large" in connection.transport.written
    assert b'"error": "head_too_large"' in connection.transport.written
    assert connection.transport.closed
    assert connection.fed == [LIMIT]  # the refused head never reached the parser


async def test_an_unfinished_head_is_refused_once_it_crosses_the_limit(
    connection: Connection,
) -> None:
    await connection.receive(b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: ", *[b"a" * 100] * 9)
    assert connection.statuses() == []  # still under the limit, still arriving
    await connection.receive(b"a" * 100)  # over it: answered now, not at the idle timeout
    assert connection.statuses() == [431] and connection.transport.closed
    assert sum(connection.fed) <= LIMIT
    await connection.receive(b"a" * 10_000)  # read and dropped: nothing more is parsed
    assert sum(connection.fed) <= LIMIT


@pytest.mark.parametrize("split", range(1, len(GET)))
async def test_a_head_split_anywhere_across_reads_is_one_request(
    connection: Connection, split: int
) -> None:
    await connection.receive(GET[:split], GET[split:])
    await connection.receive(GET[:split], GET[split:])
    assert connection.statuses() == [200, 200]


async def test_a_head_trickled_a_byte_at_a_time_is_counted_whole(connection: Connection) -> None:
    await connection.receive(*(bytes([byte]) for byte in head(LIMIT)))
    await connection.receive(*(bytes([byte]) for byte in head(LIMIT + 1)))
    assert connection.statuses() == [200, 431]


async def test_bodies_are_not_counted_as_heads(connection: Connection) -> None:
    body = b"b" * (50 * LIMIT)
    post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    # Head, body and the next head in one read; then a body spread over many reads.
    await connection.receive(post + body + GET)
    await connection.receive(
        post + body[:10], *(body[n : n + 999] for n in range(10, len(body), 999))
    )
    assert connection.statuses() == [200, 200, 200]
    assert connection.transport.written.count(b"POST /p %d" % len(body)) == 2


async def test_a_body_held_back_by_flow_control_is_read_on(connection: Connection) -> None:
    """aiohttp pauses its parser when a body arrives faster than it is read, and resumes it by
    feeding it nothing (data_received(b"")), which must reach the parser."""
    body = b"b" * (1 << 20)
    await connection.receive(
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    await connection.receive()
    assert connection.statuses() == [200] and b"POST /p 1048576" in connection.transport.written


async def test_a_pipelined_head_is_bounded_too(connection: Connection) -> None:
    await connection.receive(GET + head(LIMIT + 1))
    assert connection.statuses() == [200, 431]
    assert sum(connection.fed) == len(GET)


@pytest.mark.parametrize("split", [0, 9])  # the body in reads of its own, or begun with the head
async def test_nothing_is_read_after_a_chunked_request(connection: Connection, split: int) -> None:
    chunked = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"5\r\nhello\r\n0\r\n\r\n"
    await connection.receive(chunked + body[:split], body[split:] + GET)
    # Its answer closes the connection (aiohttp's C parser can carry a trailer into the next
    # request's headers); where the chunked body ends is the parser's to know, not the counter's.
    assert connection.statuses() == [200] and b"POST /c 5" in connection.transport.written
    assert b"Connection: close" in connection.transport.written
    assert connection.transport.closed


async def test_a_bad_chunk_in_the_read_of_its_head_gets_one_400(connection: Connection) -> None:
    chunked = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    await connection.receive(chunked + b"zz\r\nabc\r\n0\r\n\r\n")
    assert connection.statuses() == [400]


# --- how aiohttp queues what it parsed, which the head bound reads (tests/test_aiohttp_fence.py
# checks the names) -------------------------------------------------------------------------


async def test_aiohttp_queues_each_parsed_request_with_its_payload() -> None:
    """What proxy/_aiohttp.py reads right after feeding a head: the request at the end of
    `_messages`, with EMPTY_PAYLOAD when no body follows, else its StreamReader."""
    server = JsonErrorServer(echo)
    protocol = server()
    protocol.connection_made(Transport())
    try:
        web_protocol.RequestHandler.data_received(protocol, GET)
        message, payload = protocol._messages[-1]
        assert isinstance(message, RawRequestMessage) and payload is EMPTY_PAYLOAD
        assert message._replace(should_close=True).should_close
        web_protocol.RequestHandler.data_received(
            protocol, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
        )
        message, payload = protocol._messages[-1]
        assert isinstance(payload, StreamReader) and payload is not EMPTY_PAYLOAD
        assert isinstance(message, RawRequestMessage)
        assert message.headers["Content-Length"] == "3" and not message.chunked
    finally:
        protocol.connection_lost(None)
        await server.shutdown(0.1)

"""The upstream client at the wire: what the proxy writes and how it reads what comes back.

The proxy writes its own request head and reads answers with aiohttp's client protocol from
aiohttp's connection pool (proxy/upstream.py). These tests put a scripted HTTP server on
loopback behind it, one that answers in ways the fake Function URL never does (interim 1xx,
bodies framed by the connection's end, garbage, delays between head and body), and check each
byte the proxy sent. Signatures are verified elsewhere (tests/test_forwarding.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, cast

import pytest
from aiohttp import ClientTimeout
from multidict import CIMultiDict, CIMultiDictProxy

from proxy._aiohttp import JsonErrorRequestHandler
from proxy.headers import request_header_lines
from tests.conftest import raw_response, route, running_proxy

Answer = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Received:
    head: str
    body: bytes
    connection: int  # which accepted connection it came on, counting from 1

    @property
    def request_line(self) -> str:
        return self.head.split("\r\n", 1)[0]

    def header(self, name: str) -> str | None:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass
class ScriptedUpstream:
    """Reads each request (head, and body by Content-Length), then lets `answer` write bytes."""

    answer: Answer
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request = Received(head, b"", connection)
                length = request.header("content-length")
                if length:
                    request.body = await reader.readexactly(int(length))
                self.received.append(request)
                await self.answer(writer, len(self.received))
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(answer: Answer) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(answer)
    server = await asyncio.start_server(upstream._serve, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


def ok(body: bytes = b"ok", extra: str = "") -> Answer:
    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
        )
        await writer.drain()

    return answer


def in_two_parts(first: bytes, pause: float, rest: bytes) -> Answer:
    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(first)
        await writer.drain()
        await asyncio.sleep(pause)
        writer.write(rest)
        await writer.drain()

    return answer


async def test_get_has_no_body_framing_and_post_without_body_says_zero(aws_keys: None) -> None:
    async with (
        scripted(ok()) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        async with proxy.client.get(proxy.url + "/fn/a?x=1") as response:
            assert await response.read() == b"ok"
        async with proxy.client.post(proxy.url + "/fn/b") as response:
            assert await response.read() == b"ok"
        async with proxy.client.post(proxy.url + "/fn/c", data=b"12345") as response:
            assert await response.read() == b"ok"
    get, empty_post, post = upstream.received
    assert get.request_line == "GET /a?x=1 HTTP/1.1"
    assert get.header("host") == f"127.0.0.1:{upstream.port}"
    assert get.header("content-length") is None
    assert get.header("transfer-encoding") is None
    assert empty_post.header("content-length") == "0"
    assert post.header("content-length") == "5"
    assert post.body == b"12345"
    # One kept-alive connection carried all three.
    assert {request.connection for request in upstream.received} == {1}


async def test_head_answer_declares_a_length_it_does_not_send(aws_keys: None) -> None:
    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")  # and no body
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        await writer.drain()

    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        async with proxy.client.head(proxy.url + "/fn/x", timeout=ClientTimeout(total=3)) as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == "1234"
        async with proxy.client.get(proxy.url + "/fn/y") as response:
            assert await response.read() == b"next"
    assert [request.connection for request in upstream.received] == [1, 1]


async def test_interim_1xx_answers_are_skipped(aws_keys: None) -> None:
    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()

    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
        proxy.client.put(proxy.url + "/fn/x", data=b"body") as response,
    ):
        assert response.status == 201
        assert await response.read() == b"done"


async def test_a_body_framed_by_the_connections_end_arrives_whole(aws_keys: None) -> None:
    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for part in (b"first ", b"second ", b"third"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.close()

    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        for _ in range(2):  # the closed connection is not reused
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 200
                assert await response.read() == b"first second third"
    assert upstream.connections == 2


async def test_connection_close_from_the_upstream_is_honoured(aws_keys: None) -> None:
    async with (
        scripted(ok(extra="Connection: close\r\n")) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        for _ in range(3):
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert await response.read() == b"ok"
                assert "Connection" not in response.headers or response.headers["Connection"] != (
                    "close"
                )
    assert [request.connection for request in upstream.received] == [1, 2, 3]


async def test_a_pooled_connection_the_upstream_closed_is_not_reused(aws_keys: None) -> None:
    """AWS closes idle keep-alive connections; the next request must open a fresh one."""

    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        await ok()(writer, 0)
        writer.close()  # after the answer, without saying so

    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        for _ in range(3):
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 200
                assert await response.read() == b"ok"
            await asyncio.sleep(0.05)  # the FIN arrives while the connection sits in the pool
    assert upstream.connections == 3


async def test_a_connection_whose_answer_was_not_all_read_is_not_pooled(aws_keys: None) -> None:
    """A request given up (its task cancelled: the client left, a shutdown) after its answer
    came whole but before it was read: back in the pool, the connection would hand that body
    to the next request as the start of its own answer (wrk saw it as broken connections)."""
    from proxy.aws_config import Resolved
    from proxy.credentials import Identity
    from proxy.routing import Upstream
    from proxy.settings import Route
    from proxy.upstream import UpstreamClient

    async with scripted(ok(b"the first answer")) as server:
        url = f"http://127.0.0.1:{server.port}"
        upstream = Upstream.from_route(
            Route(prefix="/fn", url=url), Resolved("us-east-1", "test"), Identity()
        )
        client = UpstreamClient(None)
        try:
            wire = await client.connect(upstream)
            wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"")
            await asyncio.wait_for(wire.head(), 5)
            for _ in range(500):  # the body came in the head's packet; at most 5 s
                if wire.done:
                    break
                await asyncio.sleep(0.01)
            assert wire.done  # and none of its body taken
            client.release(wire)  # what forward() does when its task is cancelled here
            assert client.pooled(upstream) is None
            assert wire.transport is not None and wire.transport.is_closing()
        finally:
            await client.close()


async def test_a_malformed_answer_is_a_502_that_says_so(aws_keys: None) -> None:
    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()

    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
        proxy.client.get(proxy.url + "/fn/x") as response,
    ):
        assert response.status == 502
        body = await response.json()
        assert body["error"] == "upstream_unreachable"
        assert "malformed HTTP response" in body["message"]


async def test_a_slow_function_gets_its_head_to_the_client_at_once(aws_keys: None) -> None:
    """The head is held back for the body only when the body is already there."""

    answer = in_two_parts(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0.5, b"4\r\nlate\r\n0\r\n\r\n"
    )
    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        started = time.monotonic()
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            head_after = time.monotonic() - started
            assert response.status == 200
            assert await response.read() == b"late"
        body_after = time.monotonic() - started
    assert head_after < 0.4 < body_after


class CountingTransport:
    """The proxy's side of a client connection, recording each write it is given."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._transport.write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.writes.append(b"".join(chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def client_writes(monkeypatch: pytest.MonkeyPatch) -> list[CountingTransport]:
    """Every client connection the proxy accepts from now on, its writes recorded."""
    accepted: list[CountingTransport] = []
    original = JsonErrorRequestHandler.connection_made

    def connection_made(self: JsonErrorRequestHandler, transport: asyncio.BaseTransport) -> None:
        accepted.append(counting := CountingTransport(cast(asyncio.Transport, transport)))
        original(self, cast(asyncio.Transport, counting))

    monkeypatch.setattr(JsonErrorRequestHandler, "connection_made", connection_made)
    return accepted


async def through_the_proxy(answer_bytes: bytes) -> tuple[bytes, bytes]:
    """(head, body) a client gets for a GET when the upstream answers `answer_bytes` at once."""

    async def answer(writer: asyncio.StreamWriter, _: int) -> None:
        writer.write(answer_bytes)
        await writer.drain()

    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        return await raw_response(
            int(proxy.url.rsplit(":", 1)[1]), b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )


WHOLE = (
    b"HTTP/1.1 201 Made\r\nContent-Length: 15\r\nx-amzn-RequestId: r-1\r\n"
    b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Odd-Case: kept  as\tsent\r\n"
    b"Date: Sat, 21 Nov 2026 05:40:55 GMT\r\nConnection: keep-alive, X-Hop\r\n"
    b'X-Hop: private\r\nKeep-Alive: timeout=5\r\n\r\n{"small": true}'
)


async def test_a_whole_answer_goes_out_in_one_write_as_it_came(
    aws_keys: None, client_writes: list[CountingTransport]
) -> None:
    """An answer that arrived whole leaves in one write: its header lines byte for byte as the
    upstream sent them, less the hop-by-hop ones (and those its Connection header names)."""
    head, body = await through_the_proxy(WHOLE)
    (connection,) = client_writes
    assert connection.writes == [head + body]
    assert body == b'{"small": true}'
    assert head == (
        b"HTTP/1.1 201 Made\r\nContent-Length: 15\r\nx-amzn-RequestId: r-1\r\n"
        b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Odd-Case: kept  as\tsent\r\n"
        b"Date: Sat, 21 Nov 2026 05:40:55 GMT\r\n\r\n"
    )


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Evil: a\rb\r\n\r\nok",  # bare CR
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Evil: a\x00b\r\n\r\nok",  # NUL
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Fold: a\r\n b\r\n\r\nok",  # obs-fold
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Lf: a\nX-Next: 1\r\n\r\nok",  # bare LF
    ],
)
async def test_raw_header_lines_are_never_split(aws_keys: None, answer: bytes) -> None:
    """Header lines pass byte for byte only because aiohttp's parser refuses a CR inside a
    value, unfolds folded ones and ends a line at a bare LF: a 502, or lines that are whole."""
    head, _ = await through_the_proxy(answer)
    lines = head.split(b"\r\n")[:-2]  # the head ends with an empty line
    assert all(b"\r" not in line and b"\n" not in line and b"\x00" not in line for line in lines)
    assert head.startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 502 Bad Gateway\r\n"))


async def test_a_whole_chunked_answer_gets_a_length_and_a_date(aws_keys: None) -> None:
    head, body = await through_the_proxy(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert body == b"hello world"
    lines = head.decode().split("\r\n")
    assert "Content-Length: 11" in lines
    assert not any(line.lower().startswith("transfer-encoding") for line in lines)
    (date,) = [line for line in lines if line.startswith("Date: ")]
    assert parsedate_to_datetime(date[6:]).tzinfo is not None


@pytest.mark.parametrize(
    ("request_head", "connection", "stays_open"),
    [
        (b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", None, True),
        (b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", b"close", False),
        (b"GET /fn/x HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", None, False),
        (
            b"GET /fn/x HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n",
            b"keep-alive",
            True,
        ),
    ],
)
async def test_a_whole_answer_keeps_the_clients_connection_as_asked(
    aws_keys: None, request_head: bytes, connection: bytes | None, stays_open: bool
) -> None:
    async with (
        scripted(ok(b"hello")) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.url.rsplit(":", 1)[1])
        try:
            writer.write(request_head)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert await reader.readexactly(5) == b"hello"
            if stays_open:
                writer.write(request_head)  # a second request on the same connection
                again = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert again.startswith(head.split(b" ", 1)[0] + b" 200")
            else:
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after it
        finally:
            writer.close()
    version = request_head.split(b"\r\n")[0].rsplit(b" ", 1)[1]
    assert head.startswith(version + b" 200 OK\r\n")
    said = re.findall(rb"(?i)\r\nconnection: *([^\r]*)", head)
    assert said == ([connection] if connection else [])


async def test_an_answer_still_arriving_leaves_with_its_first_part(
    aws_keys: None, client_writes: list[CountingTransport]
) -> None:
    """The head waits for a first part that has already arrived, then both leave in one write
    (aiohttp's private `_send_headers_immediately`: this fails if aiohttp changes it)."""

    answer = in_two_parts(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        0.3,
        b"4\r\nlast\r\n0\r\n\r\n",
    )
    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
    ):
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert await response.read() == b"firstlast"
    (connection,) = client_writes
    first = connection.writes[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n5\r\nfirst\r\n")


async def test_plain_http_through_an_http_proxy_uses_the_absolute_form(
    aws_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scripted(ok()) as corporate:
        monkeypatch.setenv("HTTP_PROXY", f"http://alice:s3cret@127.0.0.1:{corporate.port}")
        async with (
            running_proxy(routes=[route("/fn", "http://function.example:8000/base")]) as proxy,
            proxy.client.get(proxy.url + "/fn/x?q=1") as response,
        ):
            assert response.status == 200
    (request,) = corporate.received
    assert request.request_line == "GET http://function.example:8000/base/x?q=1 HTTP/1.1"
    assert request.header("host") == "function.example:8000"
    expected = base64.b64encode(b"alice:s3cret").decode()
    assert request.header("proxy-authorization") == f"Basic {expected}"
    assert "host;x-amz-content-sha256;x-amz-date" in (request.header("authorization") or "")


Parsed = tuple[CIMultiDictProxy[str], tuple[tuple[bytes, bytes], ...]]


def _parsed(pairs: list[tuple[str, str]]) -> Parsed:
    """Headers as aiohttp's parser gives them: decoded, and raw."""
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    return headers, tuple((name.encode(), value.encode()) for name, value in pairs)


def test_a_header_that_could_smuggle_another_is_refused() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        request_header_lines(*_parsed([("X-Ok", "fine"), ("X-Evil", "a\r\nX-Injected: 1")]))
    clean = _parsed(
        [
            ("X-Ok", "fine"),
            ("Connection", "X-Hop"),
            ("X-Hop", "1"),
            ("X-Amz-Date", "20200101T000000Z"),
            ("x-forwarded-for", "10.0.0.1"),
            ("Authorization", "Bearer abc"),
            ("X-Utf8", "caf\u00e9"),
        ]
    )
    assert request_header_lines(*clean) == "X-Ok: fine\r\nX-Utf8: caf\u00e9\r\n".encode()


async def test_after_a_timeout_the_client_connection_serves_the_next_request(
    aws_keys: None,
) -> None:
    """The route's deadline cancels the forward, not the client's connection or its task."""

    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await asyncio.sleep(2)  # past the route's timeout
        await ok()(writer, n)

    async with (
        scripted(answer) as upstream,
        running_proxy(
            routes=[route("/fn", f"http://127.0.0.1:{upstream.port}", timeout=0.3)]
        ) as proxy,
    ):
        started = time.monotonic()
        async with proxy.client.get(proxy.url + "/fn/slow") as response:
            assert response.status == 504
            assert (await response.json())["error"] == "upstream_timeout"
            assert response.headers.get("Connection", "").lower() != "close"
        assert time.monotonic() - started < 1.5
        async with proxy.client.get(proxy.url + "/fn/next") as response:
            assert response.status == 200
            assert await response.read() == b"ok"


def test_parts_are_written_unjoined_only_where_a_slow_client_still_pauses_the_writer() -> None:
    """uvloop's writelines pauses the protocol when its buffer fills; asyncio's did not before
    Python 3.12.9 (CVE-2024-12254): there, a stream's parts are joined into one write."""
    from proxy.downstream import _writev

    assert _writev("uvloop.loop")
    fixed = sys.version_info >= (3, 13, 2) or (3, 12, 9) <= sys.version_info < (3, 13)
    assert _writev("asyncio.selector_events") is fixed


@pytest.mark.interpreted  # replaces the memory's bounds
def test_a_head_seen_again_gets_its_lines_from_a_bounded_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lines depend on the head alone: a head seen again gets the same bytes without being
    filtered again; heads over 2 KiB are not kept; a full cache is emptied, not frozen."""
    from proxy import headers

    monkeypatch.setattr(headers, "_FORWARDED", {})
    monkeypatch.setattr(headers, "FORWARDED_ENTRIES", 2)
    browser = _parsed([("Accept", "*/*"), ("Connection", "X-Hop"), ("X-Hop", "1")])
    first = request_header_lines(*browser)
    assert first == b"Accept: */*\r\n"
    filtered: list[object] = []
    real = headers._dropped_raw

    def counted(*args: Any) -> frozenset[bytes]:
        filtered.append(args)
        return real(*args)

    monkeypatch.setattr(headers, "_dropped_raw", counted)
    again = _parsed([("Accept", "*/*"), ("Connection", "X-Hop"), ("X-Hop", "1")])
    assert request_header_lines(*again) is first and filtered == []
    # The same names with another Connection: another head, filtered on its own.
    other = _parsed([("Accept", "*/*"), ("Connection", "close"), ("X-Hop", "1")])
    assert request_header_lines(*other) == b"Accept: */*\r\nX-Hop: 1\r\n"
    assert len(filtered) == 1
    large = _parsed([("Cookie", "c" * 3000)])
    request_header_lines(*large)
    assert large[1] not in headers._FORWARDED
    request_header_lines(*_parsed([("X-Third", "3")]))  # the cache was full: emptied first
    assert list(headers._FORWARDED) == [(((b"X-Third", b"3"),))]
    with pytest.raises(ValueError, match="CR or LF"):
        request_header_lines(*_parsed([("X-Evil", "a\r\nX-Injected: 1")]))
    assert len(headers._FORWARDED) == 1  # a refused head is never kept

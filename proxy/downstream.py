"""The one writer to the client: every byte that reaches a client's socket from the request path
is written here, and CORS headers are added here, to every kind of answer.

- whole():    an upstream answer that has arrived whole, in one write, its header lines as they came
- stream():   an upstream answer still arriving, chunk by chunk, with back-pressure both ways
- abort():    the end of a stream that broke: never a clean end after a truncated body
- own():      the proxy's own answers: its JSON errors (error()), /_proxy/* (json()), preflights
- refuse():   a request aiohttp's parser refused; turn_away(): a connection over the cap
- interim():  100 Continue
- events():   Server-Sent Events for the inspector's page, until it goes or the proxy stops

aiohttp's server reads the requests; its response classes are not used: each answer goes to the
transport in as few writes as its bytes allow, and the handler returns a `Written`
(proxy/_aiohttp.py), which tells aiohttp there is nothing left to send, only whether the
connection stays open.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import sys
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Final, Protocol

from aiohttp import web

from proxy._aiohttp import Written, written
from proxy.cors import CorsPolicy
from proxy.errors import ERROR_HEADER, ProxyError
from proxy.exchange import Exchange
from proxy.headers import kept_names
from proxy.upstream import Head
from proxy.upstream_errors import Malformed
from proxy.wire import LAST_CHUNK, NO_BODY_STATUSES, Version, connection_line, status_line

HTTP_11: Final = (1, 1)
NO_CORS: Final = CorsPolicy(())  # for refusals made before any configuration is looked at
JSON: Final = b"Content-Type: application/json\r\n"
CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"


class HttpDate:
    """The Date header line for now, formatted once per second rather than once per answer."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._line = f"Date: {formatdate(second, usegmt=True)}\r\n".encode()
        return self._line


date_line: Final = HttpDate()


class Body(Protocol):
    """An answer's body as it arrives: an upstream's Wire, or an invoked function's stream
    (proxy/invoke.py). take(): the parts that have arrived; more(): waits for the next, []
    at the end; `done`: all of it has been taken."""

    done: bool

    def take(self) -> list[bytes]: ...

    async def more(self) -> list[bytes]: ...


def keeps_alive(request: web.BaseRequest) -> bool:
    """May the connection carry another request after this one's answer? Not if the client said
    so, and not after a chunked request: aiohttp's C parser (3.14) carries the last trailer line
    of a chunked body into the headers of the next request on the connection, where the proxy
    would sign and forward it (docs/aiohttp-trailer-report.md). Every answer to a chunked
    request says `Connection: close`, and aiohttp closes the connection once it is sent."""
    return request.keep_alive and not (
        request.body_exists and "Transfer-Encoding" in request.headers
    )


def _version(request: web.BaseRequest) -> Version:
    """The version of the answer: the request's, or 1.1 for a request line that named none, 0.9
    or 2.0 (which aiohttp's parser passes, and the proxy refuses in an answer clients read)."""
    version = request.version  # aiohttp's HttpVersion: a (major, minor) tuple
    return version if version.major == 1 else HTTP_11


def _send(request: web.BaseRequest, parts: list[bytes], exchange: Exchange) -> bool:
    """Write `parts` in one system call, without joining them where writelines is safe (uvloop's
    is a writev); False if the client has gone."""
    transport = request.transport
    if transport is None or transport.is_closing():
        exchange.outcome = "client_disconnected"
        return False
    writev = _WRITEV.get(kind := type(transport))
    if writev is None:
        writev = _WRITEV[kind] = _writev(kind.__module__)
    if writev:
        transport.writelines(parts)
    else:
        transport.write(b"".join(parts))
    return True


# _writev() by transport class: a look-up per answer rather than a cached call and the class's
# module (1 800 instructions, 700 by class).
_WRITEV: Final[dict[type, bool]] = {}


def _writev(module: str) -> bool:
    """May writelines of a transport from `module` be given an answer's parts? asyncio's own
    transports before Python 3.12.9 / 3.13.2 never pause their protocol in writelines
    (CVE-2024-12254), so a slow client would never apply back-pressure: they get one joined
    write. uvloop's transports pause as they should (the proxy runs on uvloop)."""
    fixed = sys.version_info >= (3, 13, 2) or (3, 12, 9) <= sys.version_info < (3, 13)
    return fixed or module.startswith("uvloop")


def _cors(request: web.BaseRequest, cors: CorsPolicy, head: Head) -> bytes:
    if not cors.enabled:
        return b""
    return cors.grant(request, kept_names(head.names, head.connection, cors=True))


def whole(
    request: web.BaseRequest, head: Head, body: bytes, cors: CorsPolicy, exchange: Exchange
) -> Written:
    """Write an answer that has arrived whole (as a small one does: in the packets of its head)
    in one write, head and body: its header lines byte for byte as the upstream sent them, less
    the hop-by-hop ones; a length if it came chunked; no Server or Content-Type invented."""
    version = _version(request)
    keep_alive = keeps_alive(request)
    lines = head.lines_for(cors.enabled)
    if (capture := exchange.capture) is not None:  # the inspector's: capped when recorded
        capture.response_lines, capture.response_body = lines, body
    parts = [status_line(version, head.status, head.reason), lines, _cors(request, cors, head)]
    if not head.has_length and request.method != "HEAD" and head.status not in NO_BODY_STATUSES:
        parts.append(b"Content-Length: %d\r\n" % len(body))  # it came chunked: now framed
    if not head.has_date:
        parts.append(date_line())
    parts += (connection_line(version, keep_alive), b"\r\n", body)
    if not _send(request, parts, exchange):
        return written(head.status, False)
    exchange.bytes_sent = len(body)
    return written(head.status, keep_alive)


async def stream(
    request: web.BaseRequest,
    head: Head,
    wire: Body,
    cors: CorsPolicy,
    exchange: Exchange,
) -> Written:
    """Copy an answer to the client as it arrives. The head waits for the first part of the
    body only if that part has already arrived (one write instead of two); a function still at
    work gets its head sent at once, so that a client sees the status as soon as it is given.
    While the client's socket is full, nothing more is read from the upstream (Wire's bounded
    buffer then pauses its socket). A body of unknown length goes chunked to an HTTP/1.1
    client, and to an HTTP/1.0 client as the connection's end."""
    version = _version(request)
    keep_alive = keeps_alive(request)
    bodiless = request.method == "HEAD" or head.status in NO_BODY_STATUSES
    chunked = not head.has_length and not bodiless and version >= HTTP_11
    keep_alive = keep_alive and (head.has_length or bodiless or chunked)
    lines = head.lines_for(cors.enabled)
    if (capture := exchange.capture) is not None:
        capture.response_lines = lines
    parts = [
        status_line(version, head.status, head.reason),
        lines,
        _cors(request, cors, head),
        CHUNKED if chunked else b"",
        b"" if head.has_date else date_line(),
        connection_line(version, keep_alive),
        b"\r\n",
    ]
    try:
        data = wire.take()
    except (ConnectionError, OSError, Malformed) as error:
        return abort(request, exchange, error)
    writer, protocol = request.writer, request.protocol
    while True:
        if data:
            size = sum(map(len, data))
            exchange.bytes_sent += size
            if capture is not None and capture.room > 0:
                capture.keep(data)
            if chunked:  # the parts that came together go as one chunk
                parts += (b"%x\r\n" % size, *data, b"\r\n")
            else:
                parts += data
        if wire.done:  # and all of it read: the end goes with the last part
            if chunked:
                parts.append(LAST_CHUNK)
            sent = _send(request, parts, exchange)  # always: the end goes out on a close too
            return written(head.status, keep_alive and sent)
        if parts and not _send(request, parts, exchange):
            return written(head.status, False)
        parts = []
        if protocol.writing_paused:  # the client's socket is full: wait, reading nothing
            try:
                await writer.drain()
            except ConnectionError:
                exchange.outcome = "client_disconnected"
                return written(head.status, False)
        try:
            data = await wire.more()
        except (ConnectionError, OSError, Malformed) as error:
            return abort(request, exchange, error)


def abort(request: web.BaseRequest, exchange: Exchange, error: BaseException | str) -> Written:
    """Cut the client's connection: never a clean end after a truncated upstream body."""
    why = error if isinstance(error, str) else type(error).__name__
    exchange.outcome = f"upstream_failed_mid_body: {why}"
    if request.transport is not None:
        request.transport.abort()
    return written(exchange.status, False)


def own(
    request: web.BaseRequest,
    status: int,
    lines: bytes,
    body: bytes,
    cors: CorsPolicy,
    exchange: Exchange,
    keep_alive: bool = True,
) -> Written:
    """One of the proxy's own answers, whole, in one write: with CORS headers (a preflight has
    its own, in `lines`), and `Connection: close` when the connection ends with it."""
    version = _version(request)
    keep_alive = keep_alive and keeps_alive(request) and version == request.version
    if cors.enabled and not cors.is_preflight(request):
        lines += cors.grant(request, _names(lines))
    length = b"" if status in NO_BODY_STATUSES else b"Content-Length: %d\r\n" % len(body)
    answer = [
        status_line(version, status),
        lines,
        length,
        date_line(),
        connection_line(version, keep_alive),
        b"\r\n",
        b"" if request.method == "HEAD" else body,
    ]
    exchange.status = status
    if (capture := exchange.capture) is not None:
        capture.response_lines, capture.response_body = lines, body
    if _send(request, answer, exchange):
        exchange.bytes_sent = len(body)
    return written(status, keep_alive)


def _names(lines: bytes) -> list[str]:
    return [line.partition(b":")[0].decode("latin-1") for line in lines.split(b"\r\n") if line]


def error(
    request: web.BaseRequest, error: ProxyError, cors: CorsPolicy, exchange: Exchange
) -> Written:
    """The proxy's JSON error. A body it refused is never read, so the connection cannot go on
    after it."""
    lines = JSON + f"{ERROR_HEADER}: {error.code}\r\n".encode()
    if error.status == 401:
        lines += b'WWW-Authenticate: Bearer realm="lambda-url-proxy"\r\n'
    elif error.status == 405:  # the admin listener's (RFC 9110 15.5.6: say what is allowed)
        lines += b"Allow: GET, HEAD\r\n"
    if error.retry_after is not None:
        lines += b"Retry-After: %s\r\n" % error.retry_after.encode("latin-1")
    keep_alive = request.content.is_eof()
    return own(request, error.status, lines, error.body(), cors, exchange, keep_alive)


def json(
    request: web.BaseRequest, status: int, data: object, cors: CorsPolicy, exchange: Exchange
) -> Written:
    return own(request, status, JSON, jsonlib.dumps(data).encode(), cors, exchange)


EVENT_STREAM: Final = (
    b"Content-Type: text/event-stream\r\nCache-Control: no-store\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
)


async def events(
    request: web.BaseRequest,
    next_event: Callable[[], Awaitable[bytes | None]],
    exchange: Exchange,
) -> Written:
    """Server-Sent Events, each written as `next_event` gives it, until it gives None or the
    client goes. No length and no chunks: the stream ends with the connection."""
    version = _version(request)
    head = [status_line(version, 200), EVENT_STREAM, date_line(), connection_line(version, False)]
    exchange.status = 200
    if not _send(request, [*head, b"\r\n"], exchange):
        return written(200, False)
    writer, protocol = request.writer, request.protocol
    while (data := await next_event()) is not None:
        if not _send(request, [data], exchange):
            break
        exchange.bytes_sent += len(data)
        if protocol.writing_paused:  # a page that reads nothing is not given more
            try:
                await writer.drain()
            except ConnectionError:
                break
    return written(200, False)


def local_address(request: web.BaseRequest) -> tuple[str, int] | None:
    """The address and port the client reached the proxy on (the inspector's replay goes
    there), or None once the connection is gone."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return (sockname[0], sockname[1]) if sockname else None


def interim(request: web.BaseRequest) -> None:
    """`100 Continue` (RFC 9110 10.1.1): the client may send the body it holds back."""
    transport = request.transport
    if request.version >= (1, 1) and transport is not None and not transport.is_closing():
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def refuse(
    request: web.BaseRequest, error: ProxyError, exchange: Exchange, status: int | None = None
) -> Written:
    """The answer to a request aiohttp's parser refused (`status`: the parser's): the proxy's
    JSON, and the connection's end (what follows the refused bytes cannot be trusted)."""
    lines = JSON + f"{ERROR_HEADER}: {error.code}\r\n".encode()
    return own(
        request, status or error.status, lines, error.body(), NO_CORS, exchange, keep_alive=False
    )


def turn_away(transport: asyncio.Transport, error: ProxyError) -> None:
    """Refuse a connection before reading a byte of it (beyond max_connections)."""
    transport.write(error.answer())

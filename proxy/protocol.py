"""aiohttp's connection handling, with the proxy's one JSON error shape for requests that its
HTTP parser refuses (malformed request lines, headers, bodies) instead of a plain-text page,
one access line for each, and a bound on the bytes of a request head.

The head bound needs private names of aiohttp's, all used in this module only and each guarded
by tests/test_protocol.py (which fails naming the one aiohttp changed): RequestHandler's
`_messages` (the queue of parsed requests: where a head just parsed says whether a body
follows) and `_waiter` (wakes the handler for a refusal queued there); web_protocol's
`_ErrInfo` (the queued form of a refused request, which aiohttp answers through handle_error,
in turn); and RawRequestMessage's `_replace` (a named tuple's, which aiohttp's C parser's
message mirrors), to close the connection after a chunked request.
"""

from __future__ import annotations

import ast
import asyncio
import re
from typing import Any, Final, cast
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from proxy.app import dispatcher
from proxy.errors import ERROR_HEADER, BadRequest, HeadTooLarge, ProxyError, TooManyConnections
from proxy.exchange import Exchange
from proxy.logs import log_access

# aiohttp's C parser (llhttp) shows the line it refused as a bytes repr on a line of its own:
# "Invalid char in url query:\n\n  b'GET /search?q=caf\\xc3\\xa9 HTTP/1.1'\n   ^".
_REFUSED_LINE: Final = re.compile(r"^\s*(b'.*'|b\".*\")$", re.MULTILINE)
# Where a parser's reason goes on to show the client's bytes (which may hold a header's value).
_SHOWN_BYTES: Final = re.compile(r":?\s*(?:bytearray\()?b['\"]|:?\n")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
HEAD_END: Final = b"\r\n\r\n"
# How much of a refused head's beginning is kept for its access line (method and path).
HEAD_START_KEPT: Final = 2048
# _head once nothing more is read from the connection: a head refused, or a body of unknown
# length ended (no request follows a chunked one: its answer closes the connection).
DONE: Final = -1
CURL_HINT: Final = (
    "with curl, let it encode the query: curl -G localhost:8080/search --data-urlencode "
    "'q=café' (it writes a space as '+', which the function gets as a literal '+': write a "
    "space as %20)"
)


def request_line(reason: str) -> tuple[str, bytes] | None:
    """(method, target) of the request line a parser error shows, if it shows one."""
    shown = _REFUSED_LINE.search(reason)
    if shown is None:
        return None
    try:
        line = ast.literal_eval(shown[1])  # only ever a bytes literal: safe
    except (ValueError, SyntaxError):
        return None
    parts = line.split(b" ") if isinstance(line, bytes) else []
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    return printable(parts[0][:20]), parts[1]


def printable(target: bytes) -> str:
    """A refused request-target as text for a log line or a message: UTF-8, control
    characters escaped (the parser refused it, so it may hold anything but CR LF)."""
    text = target.decode("utf-8", "replace")
    return _CONTROL.sub(lambda char: f"\\x{ord(char[0]):02x}", text)


def short_reason(reason: str) -> str:
    """A parser's reason without the bytes it quotes: "Invalid char in url query"."""
    return " ".join(_SHOWN_BYTES.split(reason, maxsplit=1)[0].split())[:200]


def non_ascii_target(target: bytes) -> BadRequest | None:
    """The proxy's answer to a request-target with raw non-ASCII bytes (RFC 9112 allows only
    ASCII), which curl sends for a query typed as `?q=café`."""
    if target.isascii():
        return None
    where = "query" if target.partition(b"?")[0].isascii() else "path"
    text = printable(target)
    first = next(char for char in text if not char.isascii())
    example = f" ({first} is {quote(first)})" if first != "\ufffd" else ""
    message = (
        f"the request target {text[:200]!r} has non-ASCII characters in its {where}; HTTP "
        f"allows only ASCII there: percent-encode them as UTF-8{example}"
    )
    return BadRequest(f"{message}; {CURL_HINT}" if where == "query" else message)


# aiohttp's own handling of a read: parse it, queue what it completes, feed bodies.
_parse: Final = RequestHandler.data_received


class OversizedHead(Exception):
    """A head the counter refused: the proxy's error, and the beginning of the head."""

    def __init__(self, error: HeadTooLarge, start: bytes) -> None:
        super().__init__(error.message)
        self.error = error
        self.start = start


class JsonErrorRequestHandler(RequestHandler):
    """Every byte a connection receives belongs to a head, to a body, or is dropped: a head is
    counted until it ends (the parser then says whether a body follows and how long it is),
    and refused with 431 once it is over `max_head_size`, before the parser takes the bytes
    that cross the bound. aiohttp's own limits bound a head's lines (8190 bytes) and their
    number (128), which still allows heads of 1 MB; 500 unfinished ones held 1 GiB."""

    __slots__ = ("_body_left", "_carry", "_head", "_head_limit", "_head_start", "_open_body")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._manager
        self._head_limit: int = getattr(server, "max_head_size", 0) or 1 << 62
        self._head = 0  # bytes of the head in progress; DONE once nothing more is read
        self._carry = b""  # the head's last 3 bytes: its end may straddle two reads
        self._head_start = b""  # the beginning of a head spread over reads, for the log
        self._body_left = 0  # bytes of a Content-Length body still to come
        self._open_body: StreamReader | None = None  # a body of unknown length (chunked)
        cap = getattr(server, "max_connections", None)
        if cap is not None and server is not None and len(server.connections) > cap:
            # Refused before reading a byte: a clear answer beats falling over.
            error = TooManyConnections(
                f"the proxy is serving its maximum of {cap} connections; retry shortly, or "
                "raise max_connections"
            )
            cast(asyncio.Transport, transport).write(error.answer())
            self.force_close()
            transport.close()

    def data_received(self, data: bytes) -> None:
        # Called for every read of every connection: the common cases come first and call
        # aiohttp's parser directly (_parse), without super()'s lookup.
        if self._body_left:
            if len(data) <= self._body_left:
                self._body_left -= len(data)
                _parse(self, data)
                return
            body, data = data[: self._body_left], data[self._body_left :]
            self._body_left = 0
            _parse(self, body)
        elif not data:  # aiohttp resuming its parser, paused by flow control: nothing new
            _parse(self, data)
            return
        elif self._open_body is not None:
            self._open_body_received(self._open_body, data)
            return
        while data and self._head != DONE:
            data = self._head_received(data)
            if data and (self._body_left or self._open_body is not None):
                self.data_received(data)  # its body follows the head in the same read
                return

    def _open_body_received(self, body: StreamReader, data: bytes) -> None:
        queued = len(self._messages)
        _parse(self, data)
        if body.is_eof():
            # Where it ended in `data` is the parser's secret, so whatever came after it is the
            # parser's too (one read at most): no head is read after it.
            self._open_body = None
            self._head = DONE
        elif len(self._messages) > queued:  # the parser refused the framing (a bad chunk size)
            self._head = DONE
            self._open_body = None
            if len(self._messages) > 1 and self._messages[-2][1] is body:
                # Its request is not being handled yet (head and body came in one read): only
                # the parser's 400 is answered, as aiohttp does when it parses them in one go.
                del self._messages[-2]

    def _head_received(self, data: bytes) -> bytes:
        """Take the part of `data` that belongs to the head in progress; return the rest."""
        if self._carry and (straddle := (self._carry + data[:3]).find(HEAD_END)) >= 0:
            end = straddle + 4 - len(self._carry)
        else:
            end = data.find(HEAD_END)
            if end < 0:
                self._partial_head(data)
                return b""
            end += 4
        if self._head + end > self._head_limit:
            self._refuse_head(data)
            return b""
        if self._carry:
            self._head = 0
            self._carry = self._head_start = b""
        messages = self._messages
        queued = len(messages)
        if end == len(data):
            _parse(self, data)
            data = b""
        else:
            _parse(self, data[:end])
            data = data[end:]
        if len(messages) > queued:
            message, payload = messages[-1]
            if payload is not EMPTY_PAYLOAD:  # no body: the next byte begins a head
                self._body_follows(message, payload)
        return data

    def _partial_head(self, data: bytes) -> None:
        """A read that does not end the head: counted, or refused if it crosses the bound."""
        size = self._head + len(data)
        if size > self._head_limit:
            self._refuse_head(data)
            return
        self._head = size
        self._carry = data[-3:] if len(data) >= 3 else (self._carry + data)[-3:]
        if len(self._head_start) < HEAD_START_KEPT:
            self._head_start += data[: HEAD_START_KEPT - len(self._head_start)]
        _parse(self, data)

    def _body_follows(self, message: RawRequestMessage | _ErrInfo, payload: StreamReader) -> None:
        if isinstance(message, _ErrInfo):
            return
        length = message.headers.get(hdrs.CONTENT_LENGTH)
        if length is not None and not message.chunked:
            self._body_left = int(length)  # the parser has checked it is digits
            return
        self._open_body = payload
        # No request follows a chunked one: aiohttp's C parser carries a chunked body's last
        # trailer line into the headers of the next request on the connection
        # (docs/aiohttp-trailer-report.md), which would then be signed and forwarded. Its
        # answer closes the connection, whatever it is, and nothing is parsed after its body.
        self._messages[-1] = (message._replace(should_close=True), payload)

    def _refuse_head(self, data: bytes) -> None:
        """Queue a 431 for the head in progress, answered in turn as aiohttp answers what its
        parser refuses; read nothing more."""
        self._head = DONE
        start = (self._head_start + data[:HEAD_START_KEPT])[:HEAD_START_KEPT]
        error = HeadTooLarge(
            f"the request head (request line and headers) is larger than max_head_size "
            f"({self._head_limit} bytes); send fewer or shorter headers (cookies, tokens), or "
            "raise max_head_size"
        )
        refused = OversizedHead(error, start)
        self._messages.append(
            (_ErrInfo(status=431, exc=refused, message=error.message), EMPTY_PAYLOAD)
        )
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            # aiohttp logs the failure, a traceback (MalformedRequestFilter makes a parser's one
            # line), and raises if a response has already begun.
            super().handle_error(request, status, exc, message)
            failed = ProxyError("the proxy failed while reading the request; see its log")
            return _json_error(status, failed)
        # The parser refused the client's bytes: not the proxy's failure, so no traceback, and
        # one access line like any other request's.
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("a response has begun: no error response can follow")
        if isinstance(exc, OversizedHead):
            return _refused_head(exc, self._head_limit)
        reason = str(message or getattr(exc, "message", "") or exc)
        method, target = request_line(reason) or ("-", b"-")
        folded = " ".join(reason.split())
        error = non_ascii_target(target) or BadRequest(f"malformed HTTP request: {folded[:300]}")
        response = _json_error(status, error)
        exchange = Exchange(method, printable(target[:2048]), status=status)
        exchange.outcome = error.code
        exchange.detail = short_reason(reason)
        exchange.bytes_sent = response.content_length or 0
        log_access(exchange, 0.0)
        return response


def _refused_head(refused: OversizedHead, limit: int) -> web.Response:
    """The 431, and its access line: the method and path the head began with, if it got that
    far."""
    error = refused.error
    response = _json_error(error.status, error)
    line = refused.start.partition(b"\r\n")[0].lstrip(b"\r\n").split(b" ")
    method, target = (printable(line[0][:20]), line[1]) if len(line) > 2 else ("-", b"-")
    exchange = Exchange(method, printable(target.partition(b"?")[0][:2048]), status=error.status)
    exchange.outcome = error.code
    exchange.detail = f"head over max_head_size ({limit} bytes)"
    exchange.bytes_sent = response.content_length or 0
    log_access(exchange, 0.0)
    return response


def _json_error(status: int, error: ProxyError) -> web.Response:
    response = web.Response(
        status=status,
        body=error.body(),
        content_type="application/json",
        headers={ERROR_HEADER: error.code},
    )
    response.force_close()
    return response


class JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """An AppRunner whose connections answer parser failures with the proxy's JSON, refuse
    heads over `max_head_size` with a 431, that refuses connections beyond `max_connections`
    with a 503, and whose requests all go to the proxy's one handler."""

    def __init__(
        self, app: web.Application, *, max_connections: int, max_head_size: int, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections
        self.max_head_size = max_head_size

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's start-up
        # Same state, one method different: a subclass that adds no attributes.
        server.__class__ = JsonErrorServer
        server.max_connections = self.max_connections  # type: ignore[attr-defined]
        server.max_head_size = self.max_head_size  # type: ignore[attr-defined]
        # Straight to the proxy's handler: no router or middleware chain to go through.
        server.request_handler = dispatcher(self.app)
        return server

"""The fence: the one module that uses aiohttp's private names, each listed in PRIVATE below.

Every one the proxy relies on is used here and nowhere else. tests/test_aiohttp_fence.py checks
every one against the installed aiohttp and fails naming the name, the aiohttp version and what
broke. pyproject.toml takes a new aiohttp minor version only after that canary passes on it.

What stays private, and why the documented API does not do:
- The server runs on aiohttp's documented low-level server, `web.Server(handler)` and
  `web.ServerRunner` (proxy/server.py): no router, no middleware. Per request it is the very
  path the AppRunner override ran (that server's request_handler was the proxy's handler too),
  so it costs nothing; it removed `_make_server` and the `server.__class__` swap.
  But its connections are aiohttp's `RequestHandler` (web_protocol, undocumented), which answers
  what its parser refuses in plain text, has no hook to refuse a connection beyond
  max_connections, and bounds a head's lines but not the head: the proxy subclasses it
  (JsonErrorRequestHandler), and web.Server's protocol factory builds the subclass
  (JsonErrorServer.__call__, from Server's `_loop` and `_kwargs`).
- Each request is aiohttp's BaseRequest, made by the server's (public) request_factory, whose
  reified properties the request path reads (method, raw_path, headers...) are filled as it is
  made, in its private `_cache`: read for the first time, each is a Python call and a store
  (4 200 instructions of a small GET, 1.6 %); filled, a look-up (FILLED).
- Answers the proxy writes to the socket itself (proxy/downstream.py) are returned to aiohttp as
  a `Written` response, whose private `_eof_sent` makes prepare() and write_eof() return at once
  and whose `_keep_alive` says whether the connection goes on: there is no public way to tell
  aiohttp "answered already".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, EmptyStreamReader, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from proxy.errors import HeadTooLarge, ProxyError, TooManyConnections
from proxy.exchange import Exchange
from proxy.logs import log_access
from proxy.refusals import refused_head, refused_request

# Each private name, where it lives, what the proxy needs of it, and the parameters it is called
# with (None: an attribute). tests/test_aiohttp_fence.py checks every entry.
PRIVATE: Final[tuple[tuple[str, str, str, tuple[str, ...] | None], ...]] = (
    ("web.StreamResponse", "_eof_sent", "Written: prepare() and write_eof() do nothing", None),
    ("web.StreamResponse", "_keep_alive", "Written: whether the connection goes on", None),
    ("web_protocol.RequestHandler", "_manager", "the Server of a connection (its cap)", None),
    ("web_protocol.RequestHandler", "_messages", "the queue of parsed requests", None),
    ("web_protocol.RequestHandler", "_waiter", "wakes the handler for a queued refusal", None),
    (
        "web_protocol.RequestHandler",
        "__init__",
        "JsonErrorServer builds the proxy's connections",
        ("self", "manager", "loop"),
    ),
    (
        "web_protocol.RequestHandler",
        "data_received",
        "aiohttp's own read (parse, queue, feed), called by the head bound",
        ("self", "data"),
    ),
    (
        "web_protocol.RequestHandler",
        "handle_error",
        "the answer to a request the parser refused",
        ("self", "request", "status", "exc", "message"),
    ),
    (
        "web_protocol",
        "_ErrInfo",
        "the queued form of a refused request",
        ("status", "exc", "message"),
    ),
    ("web_server.Server", "_loop", "JsonErrorServer builds connections with its loop", None),
    ("web_server.Server", "_kwargs", "and with the arguments web.Server was given", None),
    (
        "http_parser.RawRequestMessage",
        "_replace",
        "should_close=True after a chunked request",
        None,
    ),
    ("http_writer.StreamWriter", "output_size", "an answer has begun: no error after", None),
    ("web_request.BaseRequest", "_cache", "where reified properties keep their values", None),
)
HEAD_END: Final = b"\r\n\r\n"
# How much of a refused head's beginning is kept for its access line (method and path).
HEAD_START_KEPT: Final = 2048
# _head once nothing more is read from the connection: a head refused, or a body of unknown
# length ended (no request follows a chunked one: its answer closes the connection).
DONE: Final = -1


Handler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


class Written(web.StreamResponse):
    """An answer the proxy has already written to the client's socket: aiohttp has nothing left
    to send, only to learn whether the connection stays open."""

    def __init__(self, status: int, keep_alive: bool) -> None:
        super().__init__(status=status)
        self._keep_alive = keep_alive
        self._eof_sent = True  # prepare() and write_eof() return at once


@functools.lru_cache(maxsize=4096)
def written(status: int, keep_alive: bool) -> Written:
    """The Written for `status` and `keep_alive`, made once: aiohttp only reads it (prepare() and
    write_eof() return before touching it, keep_alive is read), and making a StreamResponse
    costs about 2 us per request."""
    return Written(status, keep_alive)


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
            from proxy import downstream  # here: downstream imports this module

            downstream.turn_away(cast(asyncio.Transport, transport), error)
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
        from proxy import downstream  # here: downstream imports this module

        if status >= 500:
            # aiohttp logs the failure, a traceback (MalformedRequestFilter makes a parser's one
            # line), and raises if a response has already begun.
            super().handle_error(request, status, exc, message)
            failed = ProxyError("the proxy failed while reading the request; see its log")
            return downstream.refuse(request, failed, Exchange("-", "-"), status)
        # The parser refused the client's bytes: not the proxy's failure, so no traceback, and
        # one access line like any other request's.
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("a response has begun: no error response can follow")
        if isinstance(exc, OversizedHead):
            error: ProxyError = exc.error
            exchange = refused_head(exc.error, exc.start, self._head_limit)
        else:
            reason = str(message or getattr(exc, "message", "") or exc)
            error, exchange = refused_request(status, reason)
        answer = downstream.refuse(request, error, exchange, exchange.status)
        log_access(exchange, 0.0)
        if isinstance(server := self._manager, JsonErrorServer) and server.on_access:
            server.on_access(exchange, 0.0)  # the metrics count it too
        return answer


# The reified properties of a request made by JsonErrorServer, filled as it is made: each as
# BaseRequest computes it from the parsed message and the payload (tests/test_aiohttp_fence.py
# compares them). Others (host, remote, content...) are left for aiohttp to compute.
FILLED: Final = ("method", "raw_path", "version", "headers", "raw_headers", "keep_alive",
                 "body_exists")  # fmt: skip


class JsonErrorServer(web.Server):
    """aiohttp's low-level server, whose connections are JsonErrorRequestHandler: refused
    requests answered with the proxy's JSON, heads over `max_head_size` with a 431, connections
    beyond `max_connections` with a 503; its requests come with their properties FILLED."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_connections: int = 0,
        max_head_size: int = 0,
        on_access: Callable[[Exchange, float], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, request_factory=self._request, **kwargs)
        self.max_connections = max_connections or None
        self.max_head_size = max_head_size
        self.on_access = on_access  # told of each refused request, as the access log is

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)

    def _request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> BaseRequest:
        """aiohttp's request (as Server's own factory makes it), with FILLED in its cache."""
        request = BaseRequest(message, payload, protocol, writer, task, self._loop)
        cache = request._cache
        cache["method"] = message.method
        cache["raw_path"] = message.path
        cache["version"] = message.version
        cache["headers"] = message.headers
        cache["raw_headers"] = message.raw_headers
        cache["keep_alive"] = not message.should_close
        cache["body_exists"] = type(payload) is not EmptyStreamReader
        return request

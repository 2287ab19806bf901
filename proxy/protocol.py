"""aiohttp's connection handling, with the proxy's one JSON error shape for requests that its
HTTP parser refuses (malformed request lines, headers, bodies) instead of a plain-text page,
and one access line for each."""

from __future__ import annotations

import ast
import asyncio
import re
from typing import Any, Final, cast
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.app import dispatcher
from proxy.errors import ERROR_HEADER, BadRequest, ProxyError, TooManyConnections
from proxy.exchange import Exchange
from proxy.logs import log_access

# aiohttp's C parser (llhttp) shows the line it refused as a bytes repr on a line of its own:
# "Invalid char in url query:\n\n  b'GET /search?q=caf\\xc3\\xa9 HTTP/1.1'\n   ^".
_REFUSED_LINE: Final = re.compile(r"^\s*(b'.*'|b\".*\")$", re.MULTILINE)
# Where a parser's reason goes on to show the client's bytes (which may hold a header's value).
_SHOWN_BYTES: Final = re.compile(r":?\s*(?:bytearray\()?b['\"]|:?\n")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
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


class JsonErrorRequestHandler(RequestHandler):
    __slots__ = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self._manager
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
    """An AppRunner whose connections answer parser failures with the proxy's JSON, that
    refuses connections beyond `max_connections` with a 503, and whose requests all go to the
    proxy's one handler."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # runs the app's start-up
        # Same state, one method different: a subclass that adds no attributes.
        server.__class__ = JsonErrorServer
        server.max_connections = self.max_connections  # type: ignore[attr-defined]
        # Straight to the proxy's handler: no router or middleware chain to go through.
        server.request_handler = dispatcher(self.app)
        return server

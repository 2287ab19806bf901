"""aiohttp's connection handling, with the proxy's one JSON error shape for requests that its
HTTP parser refuses (malformed request lines, headers, bodies) instead of a plain-text page."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.app import dispatcher
from proxy.errors import ERROR_HEADER, BadRequest, ProxyError, TooManyConnections


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
            body = error.body()
            cast(asyncio.Transport, transport).write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                + f"{ERROR_HEADER}: {error.code}\r\nContent-Length: {len(body)}\r\n".encode()
                + b"Connection: close\r\n\r\n"
                + body
            )
            self.force_close()
            transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp logs the failure (MalformedRequestFilter makes that one line) and raises if a
        # response has already begun.
        plain = super().handle_error(request, status, exc, message)
        if status >= 500:
            error = ProxyError("the proxy failed while reading the request; see its log")
        else:
            reason = " ".join(str(message or getattr(exc, "message", "") or exc).split())
            error = BadRequest(f"malformed HTTP request: {reason[:300]}")
        response = web.Response(
            status=plain.status,
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

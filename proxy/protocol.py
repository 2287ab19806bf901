"""aiohttp's connection handling, with the proxy's one JSON error shape for requests that its
HTTP parser refuses (malformed request lines, headers, bodies) instead of a plain-text page."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.errors import ERROR_HEADER, BadRequest, ProxyError


class JsonErrorRequestHandler(RequestHandler):
    __slots__ = ()

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
    """An AppRunner whose connections answer parser failures with the proxy's JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same state, one method different: a subclass that adds no attributes.
        server.__class__ = JsonErrorServer
        return server

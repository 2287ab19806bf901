"""The client's side of the connection, where aiohttp's response machinery is not used: answers
written straight to the socket, and whether the connection may carry another request."""

from __future__ import annotations

from aiohttp import hdrs, web

from proxy.errors import ProxyError


class Written(web.StreamResponse):
    """An answer the proxy has already written to the client's socket, whole: aiohttp has
    nothing left to send, only to learn whether the connection stays open."""

    def __init__(self, status: int, keep_alive: bool) -> None:
        super().__init__(status=status)
        self._keep_alive = keep_alive
        self._eof_sent = True  # prepare() and write_eof() return at once (guarded by tests)


def keeps_alive(request: web.BaseRequest) -> bool:
    """May the connection carry another request after this one's answer? Not if the client said
    so, and not after a chunked request: aiohttp's C parser (3.14) carries the last trailer line
    of a chunked body into the headers of the next request on the connection, where the proxy
    would sign and forward it (docs/aiohttp-trailer-report.md). Every answer to a chunked
    request says `Connection: close`, and aiohttp closes the connection once it is sent."""
    return request.keep_alive and not (
        request.body_exists and hdrs.TRANSFER_ENCODING in request.headers
    )


def write_error(request: web.BaseRequest, error: ProxyError) -> Written:
    """`error` as an HTTP/1.1 answer straight to the socket, and the connection's end: for a
    request that aiohttp would answer in the version its request line named (`HTTP/0.9 400`,
    `HTTP/2.0 505`), a status line no client of either version reads."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.write(error.answer())
    return Written(error.status, keep_alive=False)

"""The inspector's endpoints under /_proxy/: its page, the requests (listed, one in detail, live
as Server-Sent Events) and the replay.

They pass the access checks of every reserved path first (proxy/app.py): on a loopback bind
only loopback clients and Host names, the access token when one is set. The page's own files
hold no data and are served without the token (a browser cannot send a header when an address
is typed); everything they fetch needs it. On top, nothing here answers a page of another
origin: no CORS (no preflight is answered, no Access-Control-* header is sent), a request whose
Origin is not the proxy's own, or that Chromium, Firefox or Safari mark as sent by another site
(Sec-Fetch-Site), is refused; the replay is a POST with a header a cross-origin form cannot send.
"""

from __future__ import annotations

import asyncio
import functools
import json
from importlib import resources
from typing import Final

from aiohttp import web

from proxy import downstream
from proxy.errors import BadRequest, MethodNotAllowed, NoRoute, NotReplayable, OriginNotAllowed
from proxy.exchange import Exchange
from proxy.inspector import Entry, Inspector
from proxy.inspector_view import NOT_IN_CURL, detail, event, summary
from proxy.settings import RESERVED_PREFIX
from proxy.state import ProxyState

# The page's files: path -> (file in proxy/static, Content-Type)
PAGE: Final = {
    f"{RESERVED_PREFIX}/": ("inspector.html", "text/html; charset=utf-8"),
    f"{RESERVED_PREFIX}/inspector.js": ("inspector.js", "text/javascript; charset=utf-8"),
    f"{RESERVED_PREFIX}/inspector.css": ("inspector.css", "text/css; charset=utf-8"),
    # Named by the page, so that the browser does not ask for /favicon.ico (a route's path).
    f"{RESERVED_PREFIX}/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
REQUESTS: Final = f"{RESERVED_PREFIX}/requests"
EVENTS: Final = f"{RESERVED_PREFIX}/events"
REPLAY_HEADER: Final = "X-Proxy-Inspector"
SAME_SITE: Final = frozenset({"same-origin", "none"})  # Sec-Fetch-Site of the page, or typed
PAGE_LINES: Final = (
    b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
    b"X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
    b"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action 'none'\r\n"
)
KEEP_ALIVE_SECONDS: Final = 15.0  # a comment on an idle stream, so that a page sees it alive
REPLAY_MARGIN: Final = 10.0  # seconds beyond the longest route timeout a replay may take
# Not sent again by a replay: the proxy frames the body and the connection itself; the client's
# credentials for the proxy are replaced by the proxy's own token, when it has one.
NOT_REPLAYED: Final = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "expect", "te"}
    | {"authorization", "x-proxy-token", "proxy-connection", "upgrade", "trailer"}
)
assert NOT_REPLAYED <= NOT_IN_CURL


def owns(path: str) -> bool:
    """Is `path` one of the inspector's?"""
    return path in PAGE or path in (EVENTS, REQUESTS) or path.startswith(REQUESTS + "/")


@functools.cache
def page_file(name: str) -> bytes:
    return (resources.files("proxy") / "static" / name).read_bytes()


def check_same_origin(request: web.BaseRequest) -> None:
    """Refuse what a page of another origin made the browser send, same-site ones included (a
    dev server on localhost:5173 is the same site as the proxy on localhost:8080)."""
    headers = request.headers
    site = headers.get("Sec-Fetch-Site")
    origin = headers.get("Origin")
    if (site is not None and site not in SAME_SITE) or (
        origin is not None and origin != f"http://{headers.get('Host', '')}"
    ):
        raise OriginNotAllowed(
            f"the inspector answers only its own page (this request came from "
            f"{(origin or site or '')[:100]!r}): open {RESERVED_PREFIX}/ in the browser"
        )


def _token(state: ProxyState) -> str | None:
    token = state.settings.access_token
    return token.get_secret_value() if token is not None else None


async def serve(
    request: web.BaseRequest,
    path: str,
    inspector: Inspector,
    state: ProxyState,
    exchange: Exchange,
) -> web.StreamResponse:
    """Answer one of the inspector's paths (owns(path) is true). The page's own requests stay
    out of the log and the ring (`quiet`, as /_proxy/* answers); a refused one is logged."""
    check_same_origin(request)
    method = request.method
    if path in PAGE:
        _only(exchange, method, "GET", "HEAD")
        name, content_type = PAGE[path]
        lines = b"Content-Type: %s\r\n%s" % (content_type.encode(), PAGE_LINES)
        return downstream.own(request, 200, lines, page_file(name), downstream.NO_CORS, exchange)
    if path == EVENTS:
        _only(exchange, method, "GET")
        return await _events(request, inspector, _token(state), exchange)
    if path == REQUESTS:
        _only(exchange, method, "GET")
        rows = [summary(entry) for entry in inspector.newest_first()]
        return _json(request, {"requests": rows}, exchange)
    entry_id, _, action = path.removeprefix(REQUESTS + "/").partition("/")
    entry = _entry(inspector, entry_id)
    if not action:
        _only(exchange, method, "GET")
        return _json(request, detail(entry, _token(state)), exchange)
    if action == "replay":
        if REPLAY_HEADER not in request.headers:
            raise BadRequest(
                f"a replay needs the header {REPLAY_HEADER}: the inspector's page sends it, a "
                "form on another site cannot"
            )
        _only(exchange, method, "POST")
        return _json(request, await replay(request, entry, state), exchange)
    raise NoRoute(f"{path}: the inspector has no such endpoint")


def _only(exchange: Exchange, method: str, *allowed: str) -> None:
    """Refuse another method; else the request is the page's: unlogged."""
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here: use {' or '.join(allowed)}")
    exchange.quiet = True


def _entry(inspector: Inspector, text: str) -> Entry:
    entry = inspector.find(int(text)) if text.isdigit() and len(text) < 19 else None
    if entry is None:
        raise NoRoute(
            f"request {text[:30]!r} is not in the inspector: it keeps the last "
            f"{inspector.ring.maxlen} (--inspector-size)"
        )
    return entry


def _json(request: web.BaseRequest, data: object, exchange: Exchange) -> web.StreamResponse:
    lines = downstream.JSON + b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
    body = json.dumps(data).encode()
    return downstream.own(request, 200, lines, body, downstream.NO_CORS, exchange)


async def _events(
    request: web.BaseRequest, inspector: Inspector, token: str | None, exchange: Exchange
) -> web.StreamResponse:
    """The ring as it is (oldest first), then each request as it is recorded."""
    queue = inspector.watch()
    backlog = b"".join([event(entry, token) for entry in inspector.entries()])

    async def next_event() -> bytes | None:
        nonlocal backlog
        if backlog:
            data, backlog = backlog, b""
            return data
        try:
            entry = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
        except TimeoutError:
            return b": keep-alive\n\n"
        return None if entry is None else event(entry, token)

    try:
        return await downstream.events(request, next_event, exchange)
    finally:
        inspector.unwatch(queue)


async def replay(request: web.BaseRequest, entry: Entry, state: ProxyState) -> dict[str, object]:
    """Send the request again through the proxy, as its client did (to the address this
    request came in on, with the Host it named), with the proxy's token if it needs one.
    What the proxy answered: its status and size; the replayed request joins the ring."""
    if entry.request_size != len(entry.capture.request_body):
        raise NotReplayable(
            f"request {entry.id} had a body of {entry.request_size} bytes and the inspector "
            "keeps only the first 64 KiB: copy it as curl and send the whole body from a file"
        )
    address = downstream.local_address(request)
    if address is None:
        raise NotReplayable("the proxy's own address is not known on this connection")
    host, port = address
    lines = [f"{entry.exchange.method} {entry.target} HTTP/1.1"]
    lines += [
        f"{name}: {value}" for name, value in entry.headers if name.lower() not in NOT_REPLAYED
    ]
    if (token := _token(state)) is not None:
        lines.append(f"X-Proxy-Token: {token}")
    body = bytes(entry.capture.request_body)
    if body or entry.exchange.method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\nConnection: close\r\n\r\n").encode("utf-8", "surrogateescape")
    seconds = max((route.timeout for route in state.settings.routes), default=60.0)
    async with asyncio.timeout(seconds + REPLAY_MARGIN):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head + body)
            status_line = await reader.readline()
            received = 0
            while chunk := await reader.read(65536):
                received += len(chunk)
        finally:
            writer.close()
    parts = status_line.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return {"replayed": entry.id, "status": status, "received_bytes": received}

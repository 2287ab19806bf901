"""create_app(settings): the route table, credentials, the upstream client and the one handler.

Every request goes through `handle`, which is also the one edge where the proxy's own errors
become JSON and where the access log line is written. The app holds the state and runs the
start-up and clean-up (proxy/lifetime.py); requests bypass its router and middleware chain (one
catch-all route needs neither): proxy/server.py gives aiohttp's low-level server
`dispatcher(app)` as its handler.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from proxy import downstream, inspector, inspector_web
from proxy.budget import BodyBudget
from proxy.cors import CorsPolicy
from proxy.deadline import Deadline
from proxy.errors import (
    BadRequest,
    BodyBufferFull,
    BodyTooLarge,
    ExpectationFailed,
    HttpVersionNotSupported,
    NoRoute,
    ProxyError,
    RequestTimeout,
)
from proxy.exchange import Capture, Exchange, Steps
from proxy.forward import forward
from proxy.invoke import invoke
from proxy.lifetime import (
    CLIENT,
    LIVE,
    credentials_refreshed,
    metrics_published,
    upstream_client,
)
from proxy.logs import log_access
from proxy.metrics import CONTENT_TYPE, Metrics
from proxy.routing import Router, Upstream
from proxy.settings import RESERVED_PREFIX, Settings
from proxy.state import Live, ProxyState
from proxy.target import split_target
from proxy.upstream import UpstreamClient

# Lambda rejects request payloads over 6 MB; the default limit says so before AWS does.
LIMIT_HINT: Final = "raise max_body_size to change it (Lambda itself refuses more than 6 MB)"
BUDGET_HINT: Final = (
    "max_buffered_bodies is all the proxy holds of request bodies at once: raise it to allow more"
)
# The versions the proxy speaks. aiohttp's parser refuses HTTP/1.2 to 1.9 and 3.0 and above, but
# serves a request line without a version (as HTTP/0.9), HTTP/0.9 and HTTP/2.0.
HTTP_1: Final = ((1, 1), (1, 0))


def declared_too_large(declared: int, limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the request body is {declared} bytes, over the limit of {limit}; {LIMIT_HINT}"
    )


def body_share(request: web.BaseRequest, limit: int, budget: BodyBudget) -> int:
    """The bytes of `max_buffered_bodies` a body needs: its declared length, or, for a body of
    unknown length (chunked), all it may grow to. 413 at once for a body that could never be
    read: over `limit`, or more than the whole budget."""
    declared = request.content_length
    if declared is None:
        return min(limit, budget.limit)
    if declared > limit:
        raise declared_too_large(declared, limit)
    if declared > budget.limit:
        raise BodyTooLarge(
            f"the request body is {declared} bytes, more than the proxy holds of request "
            f"bodies at once ({budget.limit}); {BUDGET_HINT}"
        )
    return declared


async def take_share(
    budget: BodyBudget, size: int, task: asyncio.Task[Any], seconds: float
) -> None:
    """Take `size` bytes of the budget, waiting up to `seconds` for room: else 503."""
    if budget.take_now(size):
        return
    deadline = Deadline(task, seconds)
    try:
        await budget.take(size)
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        raise BodyBufferFull(
            f"the proxy is holding all the request bodies max_buffered_bodies allows "
            f"({budget.limit} bytes) for other requests, and no room for this one's {size} "
            f"bytes came free within body_timeout ({seconds:g} s); retry shortly, or raise "
            "max_buffered_bodies"
        ) from None
    finally:
        deadline.cancel()


async def read_body(request: web.BaseRequest, limit: int, hint: str) -> bytes:
    """The whole body, its size already checked against `limit` if declared; a body of unknown
    length is refused with 413 as soon as it grows past `limit` (`hint` says what to raise).
    Called once the request has passed every other check and holds its share of the budget:
    only then does a client that sent `Expect: 100-continue` (curl, for bodies over 1 MiB)
    hear that it may send the body."""
    if (expect := request.headers.get("Expect")) is not None:
        # RFC 9110 10.1.1: the one expectation there is; any other is refused with 417.
        if expect.strip().lower() != "100-continue":
            raise ExpectationFailed(
                f"Expect: {expect[:100]!r} is not supported; the proxy understands only "
                "Expect: 100-continue"
            )
        downstream.interim(request)
    declared = request.content_length
    if declared is not None:
        if declared == 0:
            return b""
        try:
            return await request.content.readexactly(declared)
        except asyncio.IncompleteReadError:
            raise BadRequest(
                f"the request body ended after fewer than the {declared} bytes declared"
            ) from None
    if not request.body_exists:
        return b""
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the request body grew past the limit of {limit} bytes; {hint}")
    return bytes(body)


def health(state: ProxyState, client: UpstreamClient) -> tuple[int, object]:
    return 200, {"status": "ok", "pid": os.getpid()}


def ready(state: ProxyState, client: UpstreamClient) -> tuple[int, object]:
    identities = [identity.status() for identity in state.identities.values()]
    unusable = [status for status in identities if not status["usable"]]
    body: dict[str, object] = {
        "ready": not unusable,
        "identities": identities,
        "clocks": client.clocks.status(),  # AWS's clock as each upstream's answers show it
    }
    if unusable:
        body["reason"] = "; ".join(str(status["error"]) for status in unusable)
    return 503 if unusable else 200, body


def routes(state: ProxyState, client: UpstreamClient) -> tuple[int, object]:
    table = [
        {
            "prefix": upstream.prefix,
            "url": upstream.url,
            "region": upstream.region,
            "region_source": upstream.region_source,
            "service": upstream.service,
            "strip_prefix": upstream.strip_prefix,
            "timeout": upstream.timeout,
            "identity": upstream.identity.name,
        }
        if isinstance(upstream, Upstream)
        else upstream.status()  # a route naming a function: its lookup too
        for upstream in state.router.routes
    ]
    return 200, {"routes": table}


HEALTH_PATH: Final = f"{RESERVED_PREFIX}/health"
METRICS_PATH: Final = f"{RESERVED_PREFIX}/metrics"  # text, not JSON: served by _scrape
RESERVED: Final[dict[str, Callable[[ProxyState, UpstreamClient], tuple[int, object]]]] = {
    HEALTH_PATH: health,
    f"{RESERVED_PREFIX}/ready": ready,
    f"{RESERVED_PREFIX}/routes": routes,
}


def _reserved(state: ProxyState, client: UpstreamClient, path: str) -> tuple[int, object]:
    endpoint = RESERVED.get(path.rstrip("/"))
    if endpoint is None:
        raise NoRoute(
            f"{path} is reserved for the proxy and never forwarded; its endpoints are "
            + ", ".join([*RESERVED, METRICS_PATH])
        )
    return endpoint(state, client)


def _check_request_line(request: web.BaseRequest, raw_target: str) -> None:
    """Only HTTP/1.x requests for a path: the proxy is no forward proxy, and no tunnel."""
    version, method = request.version, request.method
    if version not in HTTP_1:
        if version.major < 1:
            raise BadRequest(
                f"the request line {method} {raw_target[:100]!r} has no HTTP version (or "
                f"HTTP/0.9, which the proxy does not speak): send {method} {raw_target[:100]} "
                "HTTP/1.1"
            )
        raise HttpVersionNotSupported(
            f"HTTP/{version.major}.{version.minor} is not supported: the proxy speaks HTTP/1.1 "
            "(and HTTP/1.0); send the request as HTTP/1.1"
        )
    if not raw_target.startswith("/"):  # absolute-form, CONNECT host:port, OPTIONS *
        raise BadRequest(
            f"request target {raw_target[:100]!r} is not a path: send origin-form requests such "
            "as 'GET /users/42'; this proxy is not a forward proxy"
        )
    if method == "CONNECT":  # with a path, still a tunnel: never signed
        raise BadRequest("CONNECT opens a tunnel through a forward proxy; this proxy is not one")


def _match(router: Router, path: str) -> Upstream:
    upstream = router.match(path)
    if upstream is None:
        raise NoRoute(
            f"no route for {path}; the configured prefixes are {', '.join(router.prefixes)}"
        )
    return upstream


async def _body(request: web.BaseRequest, live: Live, task: asyncio.Task[Any]) -> bytes:
    """The request's body, within body_timeout, once it has its share of max_buffered_bodies.
    On return the body holds len(body) bytes of it: the caller gives them back when done."""
    settings, budget = live.state.settings, live.bodies
    limit = settings.max_body_size
    share = body_share(request, limit, budget)
    await take_share(budget, share, task, settings.body_timeout)
    deadline = Deadline(task, settings.body_timeout)
    body = b""
    try:
        body = await read_body(request, share, LIMIT_HINT if share == limit else BUDGET_HINT)
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        raise RequestTimeout(
            f"the request body did not arrive within {settings.body_timeout:g} s"
        ) from None
    finally:
        deadline.cancel()
        budget.give_back(share - len(body))  # a chunked body took all it might need
    return body


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def dispatcher(app: web.Application) -> Handler:
    """The server's request handler: every request to `handle`, with the app's state. A partial,
    not a closure that awaits handle(): one coroutine fewer per request."""
    # With the loop given, current_task() skips get_running_loop(), which on Python 3.11
    # makes a getpid() system call: a few microseconds per request in a VM.
    loop = asyncio.get_running_loop()
    return functools.partial(handle, live=app[LIVE], client=app[CLIENT], loop=loop)


async def handle(
    request: web.BaseRequest,
    live: Live,
    client: UpstreamClient,
    loop: asyncio.AbstractEventLoop,
) -> web.StreamResponse:
    """Every request: the proxy's checks in one order, then forward(); the one edge where the
    proxy's own errors become answers, and where the access line is written."""
    started = time.perf_counter()
    task = asyncio.current_task(loop)
    assert task is not None
    state = live.state  # this request keeps it, whatever a reload does
    live.in_flight.add(task)
    exchange = Exchange(request.method, request.raw_path.partition("?")[0][:2048])
    exchange.started = started  # set, not passed by keyword: a keyword call costs 1 000 more
    if (inspecting := live.inspector) is not None:  # the ring's part; the steps while watched
        exchange.capture = Capture(inspecting.body_cap)
        if inspecting.watched:
            exchange.steps = Steps(started)
    try:
        return await _serve(request, live, state, client, exchange, task)
    except ProxyError as error:
        exchange.outcome = error.code
        if error.status >= 500:
            exchange.detail = error.detail  # a function's own error message included
        # No CORS on the inspector's refusals either: no page of another origin reads them.
        cors = downstream.NO_CORS if inspector_web.owns(exchange.path) else state.cors
        return downstream.error(request, error, cors, exchange)
    except asyncio.CancelledError:
        exchange.outcome = exchange.outcome or (
            "cut_by_shutdown" if live.stopping else "client_disconnected"
        )
        raise
    finally:
        live.in_flight.discard(task)
        if not exchange.quiet:
            _record(live, request, exchange, time.perf_counter() - started)


def _record(live: Live, request: web.BaseRequest, exchange: Exchange, seconds: float) -> None:
    """The request is over: its access line, its figures, its place in the inspector's ring."""
    log_access(exchange, seconds)
    if live.metrics is not None:
        live.metrics.record(exchange, seconds)
    if live.inspector is not None:
        live.inspector.record(exchange, request, seconds)


async def _serve(
    request: web.BaseRequest,
    live: Live,
    state: ProxyState,
    client: UpstreamClient,
    exchange: Exchange,
    task: asyncio.Task[Any],
) -> web.StreamResponse:
    """The checks (`_admit`), the route's credentials, the body; then the forward. A GET with
    credentials in hand awaits nothing here but forward()."""
    admitted = _admit(request, live, state, client, exchange)
    if not isinstance(admitted, tuple):  # the proxy's own answer, or one to await (/_proxy/*)
        return admitted if isinstance(admitted, web.StreamResponse) else await admitted
    upstream, path, query = admitted
    identity = upstream.identity
    if identity.first_pending:
        await identity.credentials()  # the very first resolution is still running: wait for it
        if exchange.steps is not None:
            exchange.steps.waited = time.perf_counter()
    identity.current()  # CredentialsUnavailable now, not after reading a body for nothing
    # A function without a URL is invoked through the Lambda API (proxy/invoke.py).
    send = forward if upstream.invoke is None else invoke
    if not request.body_exists:  # no timer and no share of the budget for the majority
        return await send(request, client, upstream, path, query, b"", exchange, state.cors, task)
    body = await _body(request, live, task)
    exchange.bytes_received = len(body)
    if exchange.capture is not None:
        inspector.body_read(exchange, body)
    try:
        return await send(request, client, upstream, path, query, body, exchange, state.cors, task)
    finally:
        live.bodies.give_back(len(body))


def _admit(
    request: web.BaseRequest,
    live: Live,
    state: ProxyState,
    client: UpstreamClient,
    exchange: Exchange,
) -> tuple[Upstream, str, str] | web.StreamResponse | Awaitable[web.StreamResponse]:
    """The checks in their one order: the request line, the client's access (origin, token,
    network, Host), the route. Returns the route with the canonical path and query, or the
    proxy's own answer (a CORS preflight, /_proxy/*; the metrics' and the inspector's, to
    await); raises
    ProxyError to refuse."""
    raw_target = request.raw_path
    _check_request_line(request, raw_target)
    path, query = split_target(raw_target)
    exchange.path = path
    cors = state.cors
    origin = cors.check_origin(request)
    # The inspector's paths answer no preflight: no page of another origin may call them.
    if origin is not None and cors.is_preflight(request) and not inspector_web.owns(path):
        if cors.enabled:
            exchange.outcome = "cors_preflight"
            lines = cors.preflight(request, origin)
            return downstream.own(request, 204, lines, b"", cors, exchange)
        exchange.outcome = "preflight_forwarded"  # explained in the log: CORS is off
    if path != HEALTH_PATH and state.access.restricted:
        # The health check stays open, for orchestrators; the inspector's page without a token
        state.access.check(request, path not in inspector_web.PAGE)
    if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
        if path.rstrip("/") == METRICS_PATH:
            exchange.quiet = True
            return _scrape(request, live, state.cors, exchange)  # read off the loop: awaited
        if live.inspector is not None and inspector_web.owns(path):
            return inspector_web.serve(request, path, live.inspector, state, exchange)
        status, data = _reserved(state, client, path)
        exchange.quiet = True  # health probes every few seconds would drown the log
        return downstream.json(request, status, data, cors, exchange)
    upstream = _match(state.router, path)
    exchange.route = upstream.prefix
    return upstream, path, query


async def _scrape(
    request: web.BaseRequest, live: Live, cors: CorsPolicy, exchange: Exchange
) -> web.StreamResponse:
    """/_proxy/metrics in Prometheus's text format (proxy/metrics.py); this scrape is in flight
    too, and not counted."""
    if live.metrics is None:  # a Live built without create_app
        raise NoRoute(f"{METRICS_PATH}: this server keeps no metrics")
    text = await live.metrics.scrape(len(live.in_flight) - 1)
    return downstream.own(request, 200, CONTENT_TYPE, text, cors, exchange)


def create_app(settings: Settings) -> web.Application:
    """Build the app; ConfigError if a route cannot be compiled (for instance, no region)."""
    app = web.Application()
    app[LIVE] = live = Live(ProxyState.build(settings))
    live.metrics = Metrics()
    app.cleanup_ctx.append(credentials_refreshed)
    app.cleanup_ctx.append(upstream_client)
    if live.metrics.shared:
        app.cleanup_ctx.append(metrics_published)
    return app

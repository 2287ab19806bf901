"""create_app(settings): the route table, credentials, the upstream client and the one handler.

Every request goes through `handle`, which is also the one edge where the proxy's own errors
become JSON and where the access log line is written. The app holds the state and runs the
start-up and clean-up; requests bypass its router and middleware chain (one catch-all route
needs neither): ProxyRunner gives the server `dispatcher(app)` as its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11

from proxy.budget import BodyBudget
from proxy.deadline import Deadline
from proxy.downstream import keeps_alive, write_error
from proxy.errors import (
    ERROR_HEADER,
    BadRequest,
    BodyBufferFull,
    BodyTooLarge,
    ExpectationFailed,
    HttpVersionNotSupported,
    NoRoute,
    ProxyError,
    RequestTimeout,
)
from proxy.logs import log_access
from proxy.routing import Upstream
from proxy.settings import RESERVED_PREFIX, Settings
from proxy.state import Live, ProxyState
from proxy.target import split_target
from proxy.upstream import Exchange, UpstreamClient, forward

LIVE: Final = web.AppKey("live", Live)
CLIENT: Final = web.AppKey("client", UpstreamClient)

# How long start-up waits for credentials before listening anyway (requests then wait for them).
FIRST_RESOLUTION_WAIT: Final = 5.0
# Lambda rejects request payloads over 6 MB; the default limit says so before AWS does.
LIMIT_HINT: Final = "raise max_body_size to change it (Lambda itself refuses more than 6 MB)"
# The versions the proxy speaks. aiohttp's parser refuses HTTP/1.2 to 1.9 and 3.0 and above, but
# serves a request line without a version (as HTTP/0.9), HTTP/0.9 and HTTP/2.0.
HTTP_1: Final = (HttpVersion11, HttpVersion10)
BUDGET_HINT: Final = (
    "max_buffered_bodies is all the proxy holds of request bodies at once: raise it to allow more"
)


def json_response(status: int, data: object) -> web.Response:
    return web.Response(status=status, body=json.dumps(data), content_type="application/json")


def error_response(error: ProxyError) -> web.Response:
    headers = {ERROR_HEADER: error.code}
    if error.status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="lambda-url-proxy"'
    return web.Response(
        status=error.status, body=error.body(), content_type="application/json", headers=headers
    )


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
    if request.headers.get(hdrs.EXPECT) is not None:
        _continue(request)
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


def _continue(request: web.BaseRequest) -> None:
    """Answer `Expect: 100-continue` (RFC 9110 10.1.1); refuse any other expectation with 417."""
    if request.headers[hdrs.EXPECT].strip().lower() != "100-continue":
        raise ExpectationFailed(
            f"Expect: {request.headers[hdrs.EXPECT][:100]!r} is not supported; the proxy "
            "understands only Expect: 100-continue"
        )
    transport = request.transport
    if request.version >= (1, 1) and transport is not None:
        # An interim answer, straight to the socket: no response object is involved.
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")


def health(state: ProxyState) -> web.Response:
    return json_response(200, {"status": "ok", "pid": os.getpid()})


def ready(state: ProxyState) -> web.Response:
    identities = [identity.status() for identity in state.identities.values()]
    unusable = [status for status in identities if not status["usable"]]
    body: dict[str, object] = {"ready": not unusable, "identities": identities}
    if unusable:
        body["reason"] = "; ".join(str(status["error"]) for status in unusable)
    return json_response(503 if unusable else 200, body)


def routes(state: ProxyState) -> web.Response:
    table = [
        {
            "prefix": upstream.prefix,
            "url": upstream.url,
            "region": upstream.region,
            "region_source": upstream.region_source,
            "service": upstream.service,
            "strip_prefix": upstream.strip_prefix,
            "timeout": upstream.timeout.total,
            "identity": upstream.identity.name,
        }
        if isinstance(upstream, Upstream)
        else upstream.status()  # a route naming a function: its lookup too
        for upstream in state.router.routes
    ]
    return json_response(200, {"routes": table})


HEALTH_PATH: Final = f"{RESERVED_PREFIX}/health"
RESERVED: Final[dict[str, Callable[[ProxyState], web.Response]]] = {
    HEALTH_PATH: health,
    f"{RESERVED_PREFIX}/ready": ready,
    f"{RESERVED_PREFIX}/routes": routes,
}


def _reserved(state: ProxyState, path: str) -> web.Response:
    endpoint = RESERVED.get(path.rstrip("/"))
    if endpoint is None:
        raise NoRoute(
            f"{path} is reserved for the proxy and never forwarded; its endpoints are "
            + ", ".join(RESERVED)
        )
    return endpoint(state)


def _unsupported(version: HttpVersion, method: str, raw_target: str) -> ProxyError:
    if version.major < 1:
        return BadRequest(
            f"the request line {method} {raw_target[:100]!r} has no HTTP version (or HTTP/0.9, "
            f"which the proxy does not speak): send {method} {raw_target[:100]} HTTP/1.1"
        )
    return HttpVersionNotSupported(
        f"HTTP/{version.major}.{version.minor} is not supported: the proxy speaks HTTP/1.1 (and "
        "HTTP/1.0); send the request as HTTP/1.1"
    )


def _not_a_path(raw_target: str) -> BadRequest:
    return BadRequest(
        f"request target {raw_target[:100]!r} is not a path: send origin-form requests such "
        "as 'GET /users/42'; this proxy is not a forward proxy"
    )


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
AnyResponse = TypeVar("AnyResponse", bound=web.StreamResponse)


def dispatcher(app: web.Application) -> Handler:
    """The server's request handler: every request to `handle`, with the app's state."""
    live, client = app[LIVE], app[CLIENT]
    # With the loop given, current_task() skips get_running_loop(), which on Python 3.11
    # makes a getpid() system call: a few microseconds per request in a VM.
    loop = asyncio.get_running_loop()

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task(loop)
        assert task is not None
        return await handle(request, live, client, task)

    return dispatch


def _answered(state: ProxyState, request: web.BaseRequest, response: AnyResponse) -> AnyResponse:
    """The proxy's own answer as it leaves: with CORS headers, and saying `Connection: close` if
    the connection ends with it (after a chunked request: downstream.keeps_alive)."""
    if state.cors.enabled:
        state.cors.apply(request, response)
    if not keeps_alive(request):
        response.force_close()
    return response


async def handle(
    request: web.BaseRequest, live: Live, client: UpstreamClient, task: asyncio.Task[Any]
) -> web.StreamResponse:
    started = time.perf_counter()
    state = live.state  # this request keeps it, whatever a reload does
    live.in_flight.add(task)
    raw_target = request.raw_path
    exchange = Exchange(request.method, raw_target.partition("?")[0][:2048])
    reserved = False
    held = 0  # bytes of max_buffered_bodies this request's body holds until it is done
    try:
        if request.version not in HTTP_1:
            raise _unsupported(request.version, request.method, raw_target)
        if not raw_target.startswith("/"):  # absolute-form, CONNECT host:port, OPTIONS *
            raise _not_a_path(raw_target)
        if request.method == hdrs.METH_CONNECT:  # with a path, still a tunnel: never signed
            raise BadRequest(
                "CONNECT opens a tunnel through a forward proxy; this proxy is not one"
            )
        path, query = split_target(raw_target)
        exchange.path = path
        cors = state.cors
        origin = cors.check_origin(request)
        if origin is not None and cors.is_preflight(request):
            if cors.enabled:
                exchange.outcome = "cors_preflight"
                response = _answered(state, request, cors.preflight(request, origin))
                exchange.status = response.status
                return response
            exchange.outcome = "preflight_forwarded"  # explained in the log: CORS is off
        if path != HEALTH_PATH and state.access.restricted:
            state.access.check(request)  # the health check stays open, for orchestrators
        if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
            reserved = True
            response = _answered(state, request, _reserved(state, path))
            exchange.status = response.status
            return response
        router = state.router
        upstream = router.match(path)
        if upstream is None:
            raise NoRoute(
                f"no route for {path}; the configured prefixes are {', '.join(router.prefixes)}"
            )
        exchange.route = upstream.prefix
        credentials = await upstream.identity.credentials()  # before reading a body for nothing
        body = b""
        if request.body_exists:  # no timer and no share for the bodiless majority
            settings = state.settings
            limit = settings.max_body_size
            share = body_share(request, limit, live.bodies)
            await take_share(live.bodies, share, task, settings.body_timeout)
            held = share
            deadline = Deadline(task, settings.body_timeout)
            try:
                body = await read_body(
                    request, share, LIMIT_HINT if share == limit else BUDGET_HINT
                )
            except asyncio.CancelledError:
                if not deadline.reached():
                    raise
                raise RequestTimeout(
                    f"the request body did not arrive within {settings.body_timeout:g} s"
                ) from None
            finally:
                deadline.cancel()
            if len(body) < held:  # a chunked body took all it might need: the rest is free
                live.bodies.give_back(held - len(body))
                held = len(body)
        return await forward(
            request, client, upstream, credentials, path, query, body, exchange, cors, task
        )
    except ProxyError as error:
        exchange.status = error.status
        exchange.outcome = error.code
        if error.status >= 500:
            exchange.detail = error.message
        if request.version not in HTTP_1:  # aiohttp would answer in the request's version
            exchange.bytes_sent = len(error.body())
            return write_error(request, error)
        response = _answered(state, request, error_response(error))
        exchange.bytes_sent = response.content_length or 0
        if not request.content.is_eof():
            response.force_close()  # a refused body is never read: the connection cannot go on
        return response
    except asyncio.CancelledError:
        exchange.outcome = exchange.outcome or (
            "cut_by_shutdown" if live.stopping else "client_disconnected"
        )
        raise
    finally:
        if held:
            live.bodies.give_back(held)
        live.in_flight.discard(task)
        if not reserved:
            log_access(exchange, time.perf_counter() - started)


def create_app(settings: Settings) -> web.Application:
    """Build the app; ConfigError if a route cannot be compiled (for instance, no region)."""
    app = web.Application()
    app[LIVE] = Live(ProxyState.build(settings))
    app.cleanup_ctx.append(_credentials)
    app.cleanup_ctx.append(_upstream_client)
    return app


async def _upstream_client(app: web.Application) -> AsyncIterator[None]:
    app[CLIENT] = client = UpstreamClient(app[LIVE].state.ca_bundle)
    yield
    await client.close()


async def _credentials(app: web.Application) -> AsyncIterator[None]:
    live = app[LIVE]
    live.start_refreshing()
    identities = live.state.identities.values()
    # Resolve before listening, so the first requests need not wait; a slow source (instance
    # metadata far away) does not hold start-up hostage: requests wait for it instead. The
    # functions' URLs are looked up in the same wait, each once its identity has keys.
    first = asyncio.gather(
        *(identity.wait_first_attempt() for identity in identities),
        *(function.wait_first_attempt() for function in live.state.functions),
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first, FIRST_RESOLUTION_WAIT)
    yield
    await live.stop()

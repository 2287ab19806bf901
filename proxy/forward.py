"""Forward one request: sign it, send it upstream, hand the answer to the client's writer.

The three parts of the request path meet here and nowhere else: the signed head is built by a
pure function (proxy/wire.py), the upstream client only talks to the upstream's socket
(proxy/upstream.py), and every byte for the client is written by proxy/downstream.py. The
route's timeout covers the whole exchange, streaming included (proxy/deadline.py).

The common path is one coroutine, `forward`, from the pool to the answer's head: when the answer
arrives, the event loop resumes the request's task through every coroutine it is awaiting in, so
each layer more costs every request; the rare paths (a new connection, a stream) are their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from functools import partial
from typing import Any, Final

from aiohttp import web

from proxy import downstream
from proxy._aiohttp import Written
from proxy.cors import CorsPolicy
from proxy.deadline import Deadline
from proxy.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable
from proxy.exchange import Exchange
from proxy.headers import request_header_lines
from proxy.review import REVIEWED, review
from proxy.routing import Upstream
from proxy.signing import EMPTY_SHA256, Credentials
from proxy.skew import AwsClock
from proxy.trace import Observer, Signed, Trace
from proxy.trace_id import trace_header
from proxy.upstream import Head, UpstreamClient, Wire
from proxy.upstream_errors import ConnectFailed, Malformed
from proxy.wire import request_head

log = logging.getLogger("proxy.upstream")

# Methods that are safe to send twice (RFC 9110 section 9.2.2); only ever retried when the
# first connection could not be made at all.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_DELAY: Final = 0.2


async def forward(
    request: web.BaseRequest,
    client: UpstreamClient,
    upstream: Upstream,
    path: str,
    query: str,
    body: bytes,
    exchange: Exchange,
    cors: CorsPolicy,
    task: asyncio.Task[Any],
) -> web.StreamResponse:
    """Sign, send, hand the answer to the client's writer; one coroutine (see the top)."""
    deadline = Deadline(task, upstream.timeout)
    trace = _trace(request, upstream, path, query, exchange) if client.debug else exchange.steps
    clock = client.clocks.get(upstream.origin, upstream.host)
    exchange.trace_id, xray = trace_header(request.headers)  # forwarded, never signed
    wire: Wire | None = None
    try:
        wire = client.pooled(upstream) or await _connect(client, upstream, request.method, path)
        credentials = upstream.identity.current()
        head = _signed_head(request, upstream, path, query, body, xray, trace, clock, credentials)
        answer = await wire.ask(head, body, skip_body=request.method == "HEAD")
        if answer.status in REVIEWED:  # explained; a second signature may mend it (issue #13)
            again = partial(_send_again, request, client, upstream, path, query, body, xray, trace)
            sent = await review(wire, answer, upstream, credentials, clock, client, exchange, again)
            wire, answer = sent
        _noted(upstream, answer, exchange, trace, clock)
        if wire.done:  # the whole answer came with its head, as a small one does
            return downstream.whole(request, answer, wire.read_nowait(), cors, exchange)
        return await downstream.stream(request, answer, wire, cors, exchange)
    except (ConnectionError, OSError, Malformed) as error:  # bytes may have gone out: no retry
        return _failed(request, upstream, exchange, error)
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        return _late(request, upstream, exchange)
    finally:
        deadline.cancel()
        _done(client, wire, exchange, trace)


def _noted(
    upstream: Upstream, head: Head, exchange: Exchange, trace: Observer | None, clock: AwsClock
) -> None:
    """The answer's head in the access record (the one the client gets, after a review); its
    Date in the estimate of AWS's clock; a 404 from a function's URL host, looked into."""
    clock.observe(head.date)
    if head.status == 404 and upstream.function is not None:
        upstream.function.look_again()  # the URL deleted? (at most every AGAIN_AFTER seconds)
    exchange.first_byte = time.perf_counter()  # the metrics' time to first byte
    if trace is not None:
        trace.first_byte = exchange.first_byte
    exchange.status = head.status
    exchange.request_id = head.request_id
    exchange.error_type = head.error_type


def _done(
    client: UpstreamClient, wire: Wire | None, exchange: Exchange, trace: Observer | None
) -> None:
    if wire is not None:
        client.release(wire)  # back to the pool only if the answer was all read
    if trace is not None:
        trace.done(exchange.status, exchange.outcome)


async def _send_again(
    request: web.BaseRequest,
    client: UpstreamClient,
    upstream: Upstream,
    path: str,
    query: str,
    body: bytes,
    xray: bytes,
    trace: Observer | None,
    credentials: Credentials,
) -> tuple[Wire, Head]:
    """The second and last sending of a refused request (proxy/review.py), signed afresh with
    `credentials` and the clock as corrected; whatever it answers is the answer."""
    clock = client.clocks.get(upstream.origin, upstream.host)  # the one forward signed by
    wire = client.pooled(upstream) or await _connect(client, upstream, request.method, path)
    head = _signed_head(request, upstream, path, query, body, xray, trace, clock, credentials)
    try:
        answer = await wire.ask(head, body, skip_body=request.method == "HEAD")
    except (ConnectionError, OSError, Malformed) as error:
        wire.close()
        raise _unreachable(upstream, error) from None
    except BaseException:
        wire.close()  # cancelled (a timeout, the client gone): the answer will not be read
        raise
    clock.observe(answer.date)  # the first answer's: the second's goes through _noted
    return wire, answer


async def _connect(client: UpstreamClient, upstream: Upstream, method: str, path: str) -> Wire:
    """A new connection, tried once more after RETRY_DELAY if it could not be made at all and
    the request is idempotent: no byte of it went out, and it is signed only once connected (a
    request must reach AWS within 5 minutes of its x-amz-date), so it is never sent twice."""
    try:
        return await client.connect(upstream)
    except ConnectFailed as error:
        if error.tls or method not in IDEMPOTENT:
            raise _unreachable(upstream, error) from None
        log.warning(
            "%s %s: connecting to %s failed (%s); retrying once",
            method,
            path,
            upstream.url,
            _cause(error),
        )
    client.retried("connect")
    await asyncio.sleep(RETRY_DELAY)
    try:
        return await client.connect(upstream)
    except ConnectFailed as error:
        raise _unreachable(upstream, error) from None


def _signed_head(
    request: web.BaseRequest,
    upstream: Upstream,
    path: str,
    query: str,
    body: bytes,
    xray: bytes,
    trace: Observer | None,
    clock: AwsClock,
    credentials: Credentials,
) -> bytes:
    """The request's head as it goes upstream, signed now (with the credentials of now: the
    body may have taken a while to come), by AWS's clock when ours is known to be off.
    `xray`: the X-Amzn-Trace-Id line (X-Ray's header) the proxy made, if the client sent none."""
    if trace is not None:
        trace.connected = time.perf_counter()
    upstream_path = upstream.path_for(path)
    try:
        forwarded = request_header_lines(request.headers, request.raw_headers) + xray
    except ValueError as error:  # never from aiohttp's parser: see request_header_lines
        raise BadRequest(f"refused to forward the request: {error}") from None
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    timestamp = clock()
    head = request_head(
        request.method, upstream, upstream_path, query, forwarded, len(body), payload_hash,
        credentials, timestamp,
    )  # fmt: skip
    if trace is not None:  # after: the inspector's page shows the time signing took
        trace.signed(
            Signed(
                request.method, upstream, upstream_path, query, payload_hash, credentials, timestamp
            )
        )
    return head


def _trace(
    request: web.BaseRequest, upstream: Upstream, path: str, query: str, exchange: Exchange
) -> Trace:
    """What `--log-level debug` shows of this request (UpstreamClient.debug, decided once); it
    fills the inspector's Steps too, when a page watches (without debug, they are the trace)."""
    trace = Trace(request.method, _shown(path, query), upstream, exchange.steps)
    trace.route(upstream.path_for(path), query, upstream.identity.current())
    return trace


def _shown(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _cause(error: ConnectFailed) -> str:
    cause = error.cause
    if isinstance(cause, OSError):
        return str(cause.strerror or cause)
    return cause


def _unreachable(upstream: Upstream, error: BaseException) -> UpstreamUnreachable:
    """The 502 for an upstream that cannot be reached; a function's URL is looked up again
    meanwhile (recreated elsewhere? issue #14), at most every AGAIN_AFTER seconds."""
    if upstream.function is not None:
        upstream.function.look_again()
    if isinstance(error, ConnectFailed) and error.tls:
        cause = error.cause
        shown = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
        reason = (
            f"TLS verification failed ({shown}); if the endpoint uses a private CA, "
            "set ca_bundle or AWS_CA_BUNDLE"
        )
    elif isinstance(error, ConnectFailed):
        reason = f"cannot connect ({_cause(error)})"
    elif isinstance(error, Malformed):
        reason = f"it sent a malformed HTTP response ({' '.join(str(error).split())[:200]})"
    else:
        reason = f"{type(error).__name__}: {error}"
    return UpstreamUnreachable(
        f"route {upstream.prefix!r}: {upstream.url} is unreachable: {reason}"
    )


def _failed(
    request: web.BaseRequest, upstream: Upstream, exchange: Exchange, error: BaseException
) -> Written:
    """Sending, or reading the answer's head, failed: 502 while the client has had nothing;
    once an answer's head is in hand it may have gone out, so the connection is cut."""
    if exchange.status == 0:
        raise _unreachable(upstream, error) from None
    return downstream.abort(request, exchange, error)


def _late(request: web.BaseRequest, upstream: Upstream, exchange: Exchange) -> Written:
    """The route's timeout has passed: 504 if the answer's head has not gone to the client yet;
    after it, the only way left to say so is to cut the connection."""
    if exchange.status == 0:
        raise UpstreamTimeout(
            f"route {upstream.prefix!r}: {upstream.url} did not answer within "
            f"{upstream.timeout:g} s; raise the route's timeout if the function needs longer"
        ) from None
    return downstream.abort(request, exchange, "TimeoutError")

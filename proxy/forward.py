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
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from proxy import downstream
from proxy._aiohttp import Written
from proxy.cors import CorsPolicy
from proxy.deadline import Deadline
from proxy.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable
from proxy.exchange import Exchange
from proxy.forbidden import region_hint
from proxy.headers import request_header_lines
from proxy.routing import Upstream
from proxy.signing import EMPTY_SHA256, AmzClock
from proxy.trace import Trace
from proxy.upstream import ConnectFailed, Head, Malformed, UpstreamClient, Wire
from proxy.wire import request_head

log = logging.getLogger("proxy.upstream")

# Methods that are safe to send twice (RFC 9110 section 9.2.2); only ever retried when the
# first connection could not be made at all.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_DELAY: Final = 0.2
AMZ_CLOCK: Final = AmzClock()
Explain = Callable[[bytes], None]


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
    """Take a connection, sign, send, read the answer's head, hand the answer to the client's
    writer: in one write if it came whole, else as it arrives (one coroutine, see the top)."""
    deadline = Deadline(task, upstream.timeout)
    upstream_path = upstream.path_for(path)
    trace = _trace(request, upstream, path, upstream_path, query) if client.debug else None
    wire: Wire | None = None
    try:
        wire = client.pooled(upstream) or await _connect(client, upstream, request.method, path)
        head = _signed_head(request, upstream, upstream_path, query, body, trace)
        try:
            wire.send(head, body, skip_body=request.method == "HEAD")
            answer = await wire.head()
        except (ConnectionError, OSError, Malformed) as error:
            raise _unreachable(upstream, error) from None  # bytes may have gone out: no retry
        explain = _noted(upstream, answer, exchange, trace)
        if wire.done:  # the whole answer came with its head, as a small one does
            return downstream.whole(request, answer, _read(wire, explain), cors, exchange)
        return await downstream.stream(request, answer, wire, cors, exchange, explain)
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        return _late(request, upstream, exchange)
    finally:
        deadline.cancel()
        if wire is not None:
            client.release(wire)  # back to the pool only if the answer was all read
        if trace is not None:
            trace.done(exchange.status, exchange.outcome)


def _noted(
    upstream: Upstream, head: Head, exchange: Exchange, trace: Trace | None
) -> Explain | None:
    """The answer's head in the access record; for a 403, what reads its body for a hint (AWS's
    refusals are small: what has arrived of one is all of it)."""
    if trace is not None:
        trace.first_byte = time.perf_counter()
    exchange.status = head.status
    exchange.request_id = head.request_id
    exchange.error_type = head.error_type
    if head.status != 403:
        return None
    return lambda body: _explain_forbidden(upstream, exchange, body)


def _read(wire: Wire, explain: Explain | None) -> bytes:
    body = wire.read_nowait()
    if explain is not None:
        explain(body)
    return body


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
    await asyncio.sleep(RETRY_DELAY)
    try:
        return await client.connect(upstream)
    except ConnectFailed as error:
        raise _unreachable(upstream, error) from None


def _signed_head(
    request: web.BaseRequest,
    upstream: Upstream,
    upstream_path: str,
    query: str,
    body: bytes,
    trace: Trace | None,
) -> bytes:
    """The request's head as it goes upstream, signed now (with the credentials of now: the
    body may have taken a while to come)."""
    if trace is not None:
        trace.connected = time.perf_counter()
    credentials = upstream.identity.current()
    try:
        forwarded = request_header_lines(request.headers, request.raw_headers)
    except ValueError as error:  # never from aiohttp's parser: see request_header_lines
        raise BadRequest(f"refused to forward the request: {error}") from None
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    timestamp = AMZ_CLOCK()
    if trace is not None:
        trace.signed(upstream_path, query, payload_hash, credentials, timestamp)
    return request_head(
        request.method, upstream, upstream_path, query, forwarded, len(body), payload_hash,
        credentials, timestamp,
    )  # fmt: skip


def _trace(
    request: web.BaseRequest, upstream: Upstream, path: str, upstream_path: str, query: str
) -> Trace:
    """What `--log-level debug` shows of this request (UpstreamClient.debug, decided once)."""
    trace = Trace(request.method, _shown(path, query), upstream)
    trace.route(upstream_path, query, upstream.identity.current())
    return trace


def _shown(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _cause(error: ConnectFailed) -> str:
    cause = error.cause
    if isinstance(cause, OSError):
        return str(cause.strerror or cause)
    return cause


def _unreachable(upstream: Upstream, error: BaseException) -> UpstreamUnreachable:
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


def _late(request: web.BaseRequest, upstream: Upstream, exchange: Exchange) -> Written:
    """The route's timeout has passed: 504 if the answer's head has not gone to the client yet;
    after it, the only way left to say so is to cut the connection."""
    if exchange.status == 0:
        raise UpstreamTimeout(
            f"route {upstream.prefix!r}: {upstream.url} did not answer within "
            f"{upstream.timeout:g} s; raise the route's timeout if the function needs longer"
        ) from None
    return downstream.abort(request, exchange, "TimeoutError")


def _explain_forbidden(upstream: Upstream, exchange: Exchange, body: bytes) -> None:
    exchange.hint = region_hint(
        upstream.prefix,
        upstream.url,
        upstream.region,
        exchange.error_type,
        body,
        upstream.region_source,
    )

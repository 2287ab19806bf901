"""Forward one request: sign it, send it upstream, hand the answer to the client's writer.

The three parts of the request path meet here and nowhere else: the signed head is built by a
pure function (proxy/wire.py), the upstream client only talks to the upstream's socket
(proxy/upstream.py), and every byte for the client is written by proxy/downstream.py. The
route's timeout covers the whole exchange, streaming included (proxy/deadline.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any, Final

from aiohttp import web

from proxy import downstream
from proxy.cors import CorsPolicy
from proxy.deadline import Deadline
from proxy.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable
from proxy.exchange import Exchange
from proxy.forbidden import region_hint
from proxy.headers import request_header_lines
from proxy.routing import Upstream
from proxy.signing import EMPTY_SHA256, AmzClock, Credentials
from proxy.trace import Trace
from proxy.trace_id import trace_header
from proxy.upstream import ConnectFailed, Head, Malformed, UpstreamClient, Wire
from proxy.wire import request_head

log = logging.getLogger("proxy.upstream")

# Methods that are safe to send twice (RFC 9110 section 9.2.2); only ever retried when the
# first connection could not be made at all.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_DELAY: Final = 0.2
AMZ_CLOCK: Final = AmzClock()


async def forward(
    request: web.BaseRequest,
    client: UpstreamClient,
    upstream: Upstream,
    credentials: Credentials,
    path: str,
    query: str,
    body: bytes,
    exchange: Exchange,
    cors: CorsPolicy,
    task: asyncio.Task[Any],
) -> web.StreamResponse:
    """Sign and send the request; the answer goes back in one write if it has arrived whole,
    else part by part as it arrives."""
    deadline = Deadline(task, upstream.timeout)
    trace = Trace(request.method, _shown(path, query), upstream) if client.debug else None
    exchange.trace_id, trace_line = trace_header(request.headers)
    sent: tuple[Wire, Head] | None = None
    try:
        sent = await _send(
            request, client, upstream, credentials, path, query, body, trace, trace_line
        )
        return await _answer(request, upstream, *sent, cors, exchange)
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        if exchange.status == 0:
            raise _timed_out(upstream) from None
        return downstream.abort(request, exchange, "TimeoutError")  # the head went out
    finally:
        deadline.cancel()
        if sent is not None:
            client.release(sent[0])  # back to the pool only if the answer was all read
        if trace is not None:
            trace.done(exchange.status, exchange.outcome)


async def _answer(
    request: web.BaseRequest,
    upstream: Upstream,
    wire: Wire,
    head: Head,
    cors: CorsPolicy,
    exchange: Exchange,
) -> web.StreamResponse:
    exchange.first_byte = time.perf_counter()
    exchange.status = head.status
    exchange.request_id = head.request_id
    exchange.error_type = head.error_type
    explain = (
        (lambda body: _explain_forbidden(upstream, exchange, body)) if head.status == 403 else None
    )
    if wire.done:
        body = wire.read_nowait()
        if explain is not None:
            explain(body)
        return downstream.whole(request, head, body, cors, exchange)
    # AWS's refusals are small: what has arrived of a 403 is all of it.
    return await downstream.stream(request, head, wire, cors, exchange, explain)


async def _send(
    request: web.BaseRequest,
    client: UpstreamClient,
    upstream: Upstream,
    credentials: Credentials,
    path: str,
    query: str,
    body: bytes,
    trace: Trace | None,
    trace_line: bytes,
) -> tuple[Wire, Head]:
    """Write the signed request on a pooled connection and read the answer's head. A request
    whose connection could not be made is tried once more if it is idempotent, signed afresh
    (a request must reach AWS within 5 minutes of its x-amz-date); nothing is ever sent twice.
    `trace_line`: the X-Amzn-Trace-Id the proxy made, if the client sent none."""
    method = request.method
    try:
        forwarded = request_header_lines(request.headers, request.raw_headers) + trace_line
    except ValueError as error:  # never from aiohttp's parser: see request_header_lines
        raise BadRequest(f"refused to forward the request: {error}") from None
    upstream_path = upstream.path_for(path)
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    if trace is not None:
        trace.route(upstream_path, query, credentials)
    attempts = 2 if method in IDEMPOTENT else 1
    for attempt in range(1, attempts + 1):
        timestamp = AMZ_CLOCK()
        head = request_head(
            method, upstream, upstream_path, query, forwarded, len(body), payload_hash,
            credentials, timestamp,
        )  # fmt: skip
        if trace is not None:
            trace.signed(upstream_path, query, payload_hash, credentials, timestamp)
        try:
            wire = client.pooled(upstream) or await client.connect(upstream)
        except ConnectFailed as error:
            if attempt == attempts or error.tls:
                raise _unreachable(upstream, error) from None
            log.warning(
                "%s %s: connecting to %s failed (%s); retrying once",
                method,
                path,
                upstream.url,
                _cause(error),
            )
            await asyncio.sleep(RETRY_DELAY)
            continue
        if trace is not None:
            trace.connected = time.perf_counter()
        return await _exchange(upstream, wire, method, head, body, trace)
    raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


async def _exchange(
    upstream: Upstream, wire: Wire, method: str, head: bytes, body: bytes, trace: Trace | None
) -> tuple[Wire, Head]:
    try:
        wire.send(head, body, skip_body=method == "HEAD")
        answer = await wire.head()
    except (ConnectionError, OSError, Malformed) as error:
        wire.close()
        raise _unreachable(upstream, error) from None  # bytes may have gone out: no retry
    except BaseException:
        wire.close()  # cancelled (a timeout, the client gone): the answer will not be read
        raise
    if trace is not None:
        trace.first_byte = time.perf_counter()
    return wire, answer


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


def _timed_out(upstream: Upstream) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"route {upstream.prefix!r}: {upstream.url} did not answer within "
        f"{upstream.timeout:g} s; raise the route's timeout if the function needs longer"
    )


def _explain_forbidden(upstream: Upstream, exchange: Exchange, body: bytes) -> None:
    exchange.hint = region_hint(
        upstream.prefix,
        upstream.url,
        upstream.region,
        exchange.error_type,
        body,
        upstream.region_source,
    )

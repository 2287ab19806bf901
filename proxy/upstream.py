"""The upstream client: aiohttp's connection pool and response parser, and the streaming forward
of one signed request.

aiohttp's `ClientSession.request` costs about 70 us of CPU per request (request and response
objects, timers, cookie filtering, trace hooks: bench/README.md), more than the rest of the proxy
together. The proxy needs none of that: it writes the request head it has just signed itself and
reads the answer with aiohttp's own client protocol, from connections that aiohttp's
`TCPConnector` pools, resolves, verifies (TLS) and tunnels (HTTPS_PROXY) as it always does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from dataclasses import dataclass
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from aiohttp import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientError,
    ClientRequest,
    ClientSSLError,
    ClientTimeout,
    TCPConnector,
    hdrs,
    web,
)
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from aiohttp.http import HttpVersion, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import EofStream, StreamReader
from yarl import URL

from proxy.cors import CorsPolicy
from proxy.deadline import Deadline
from proxy.downstream import Written, keeps_alive
from proxy.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable
from proxy.forbidden import region_hint
from proxy.headers import (
    holds_control_bytes,
    request_header_lines,
    response_header_lines,
    response_headers_to_return,
)
from proxy.routing import Upstream
from proxy.signing import (
    EMPTY_SHA256,
    AmzClock,
    Credentials,
    sign_request,
)
from proxy.trace import Trace
from proxy.trace import log as trace_log

log = logging.getLogger(__name__)

# Methods that are safe to send twice (RFC 9110 section 9.2.2); only ever retried when the
# first connection could not be made at all.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Methods that announce an empty body with `Content-Length: 0`, as aiohttp's client does.
BODILESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
RETRY_DELAY: Final = 0.2
AMZ_CLOCK: Final = AmzClock()
# Large enough that a streamed MiB is a few reads, small enough to stay out of the way of RSS.
READ_BUFSIZE: Final = 1 << 16
# Above this, a body is written after the head rather than joined to it.
COPY_LIMIT: Final = 1 << 14
# Answers without a body whose framing aiohttp rewrites (RFC 9110 8.6): never written whole.
NO_BODY_STATUSES: Final = frozenset({204, 304})
NO_TIMEOUT: Final = ClientTimeout()  # the route's timeout covers connecting: forward() sets it


class UpstreamClient:
    """One for the app's life: pooled keep-alive connections, verified TLS, bytes passed through
    as they are (no decompression, no cookies, no redirects, no invented headers)."""

    def __init__(self, ca_bundle: Path | None) -> None:
        ssl_context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        # The pool's keep-alive (30 s) stays below AWS's idle timeout, so stale reuse is rare.
        self.connector = TCPConnector(ssl=ssl_context, limit=0, keepalive_timeout=30)
        # One template request per origin and proxy: all the connector reads from it is which
        # connection to give (host, port, TLS, proxy), so it is built once, not per request.
        self._templates: dict[tuple[str, str, int | None, URL | None], ClientRequest] = {}
        # Decided once: the log level belongs to the process (a reload asks for a restart), and
        # at info level no request computes anything for the debug lines.
        self.debug = trace_log.isEnabledFor(logging.DEBUG)

    async def connect(self, upstream: Upstream) -> Connection:
        key = (upstream.scheme, upstream.host, upstream.port, upstream.proxy)
        template = self._templates.get(key)
        if template is None:
            template = ClientRequest(
                "GET",
                URL(upstream.url),
                loop=asyncio.get_running_loop(),
                proxy=upstream.proxy,
                proxy_auth=upstream.proxy_auth,
            )
            self._templates[key] = template
        return await self.connector.connect(template, [], NO_TIMEOUT)

    async def close(self) -> None:
        await self.connector.close()


@dataclass(slots=True)
class Exchange:
    """What one request did, for the access log."""

    method: str
    path: str
    route: str = "-"
    status: int = 0
    bytes_sent: int = 0
    request_id: str | None = None
    error_type: str | None = None
    outcome: str | None = None  # the error code, or how a stream ended abnormally
    detail: str | None = None  # what the proxy told the client, for its own 5xx errors
    hint: str | None = None  # what an upstream failure's body says it means (a 403's region)


def _write_whole(
    request: web.BaseRequest,
    method: str,
    message: RawResponseMessage,
    lines: bytes,
    body: bytes,
    exchange: Exchange,
) -> web.StreamResponse:
    """Write an answer that has arrived whole (as a small one does: in the packets of its head)
    in one write, head and body, straight to the client's socket. aiohttp's response machinery
    would cost more than the rest of the response path (bench/README.md); the bytes are what
    it writes, except that the upstream's header `lines` pass byte for byte, and that no Server
    or Content-Type header is invented."""
    version = request.version
    keep_alive = keeps_alive(request)
    headers = message.headers
    head = [_status_line(version, message.code, message.reason), lines]
    if hdrs.CONTENT_LENGTH not in headers and method != "HEAD":
        head.append(b"Content-Length: %d\r\n" % len(body))  # it came chunked: now framed
    if hdrs.DATE not in headers:
        head.append(f"Date: {formatdate(usegmt=True)}\r\n".encode())
    if version == HttpVersion11:
        if not keep_alive:
            head.append(b"Connection: close\r\n")
    elif keep_alive:
        head.append(b"Connection: keep-alive\r\n")  # an HTTP/1.0 client asked for it
    head.append(b"\r\n")
    transport = request.transport
    if transport is None or transport.is_closing():
        exchange.outcome = "client_disconnected"
        return Written(message.code, keep_alive=False)
    head.append(body)
    transport.write(b"".join(head))
    exchange.bytes_sent = len(body)
    return Written(message.code, keep_alive)


@lru_cache(maxsize=64)
def _status_line(version: HttpVersion, code: int, reason: str) -> bytes:
    return f"HTTP/{version.major}.{version.minor} {code} {reason}\r\n".encode(
        "utf-8",
        "surrogateescape",  # the upstream's bytes, as they came
    )


@lru_cache(maxsize=64)
def _clean_reason(reason: str) -> bool:
    return not holds_control_bytes(reason.encode("utf-8", "surrogateescape"))


def _refuse_control_bytes(upstream: Upstream, message: RawResponseMessage, lines: bytes) -> None:
    """aiohttp's parser refuses a CR or NUL in the upstream's head but passes the other control
    bytes (ESC, DEL, ...), which would reach the client, its terminal and its logs as they are
    (aiohttp's writer refuses them, but only as a 500 once the answer is under way). Refused
    here, before a byte is written, as a malformed answer is: a 502."""
    if holds_control_bytes(lines) or not _clean_reason(message.reason):
        error = BadHttpMessage("a control character in its status line or a header")
        raise _unreachable(upstream, error)


class _HeadersWithFirstChunk(web.StreamResponse):
    """The response head can go out in the same write as the first part of the body (or the
    end): one syscall fewer per request, as aiohttp's own `web.Response` does (see _stream).
    Private aiohttp API, guarded by tests/test_upstream_client.py."""

    _send_headers_immediately = False


def _unreachable(
    upstream: Upstream, error: ClientError | HttpProcessingError | ConnectionError
) -> UpstreamUnreachable:
    if isinstance(error, ClientConnectorCertificateError | ClientSSLError):
        reason = (
            f"TLS verification failed ({error}); if the endpoint uses a private CA, "
            "set ca_bundle or AWS_CA_BUNDLE"
        )
    elif isinstance(error, ClientConnectorError):
        reason = f"cannot connect ({error.os_error.strerror or error.os_error})"
    elif isinstance(error, HttpProcessingError):
        reason = f"it sent a malformed HTTP response ({' '.join(error.message.split())[:200]})"
    else:
        reason = f"{type(error).__name__}: {error}"
    return UpstreamUnreachable(
        f"route {upstream.prefix!r}: {upstream.url} is unreachable: {reason}"
    )


def _timed_out(upstream: Upstream) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"route {upstream.prefix!r}: {upstream.url} did not answer within "
        f"{upstream.timeout.total:g} s; raise the route's timeout if the function needs longer"
    )


async def _send(
    client: UpstreamClient,
    upstream: Upstream,
    method: str,
    head: bytes,
    body: bytes,
    trace: Trace | None,
) -> tuple[Connection, RawResponseMessage, StreamReader]:
    """Write the request on a pooled connection and read the response head."""
    connection = await client.connect(upstream)
    if trace is not None:
        trace.connected = time.perf_counter()
    try:
        protocol = connection.protocol
        transport = connection.transport
        assert isinstance(protocol, ResponseHandler)
        assert transport is not None
        protocol.set_response_params(
            skip_payload=method == "HEAD",
            read_until_eof=True,  # a body framed by the connection's end, as HTTP/1.0 may
            auto_decompress=False,
            read_bufsize=READ_BUFSIZE,
        )
        if len(body) > COPY_LIMIT:
            transport.writelines((head, body))  # no copy of a large body
        else:
            transport.write(head + body)
        while True:
            try:
                message, payload = await protocol.read()
            except EofStream:
                raise ConnectionResetError("the upstream closed the connection") from None
            # 1xx are interim answers (101 is never asked for: no Upgrade is forwarded).
            if not 100 <= message.code < 200:
                return connection, message, payload
    except BaseException:
        connection.close()
        raise


def _request_head(
    method: str, target: str, upstream: Upstream, forwarded: bytes, framing: str, signed: str
) -> bytes:
    # The target is canonical (ASCII), the host and the signed lines are ASCII too.
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {upstream.host_header}\r\n".encode()
        + forwarded
        + f"{signed}{framing}\r\n".encode()
    )


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
    else chunk by chunk as it arrives."""
    method = request.method
    try:
        forwarded = request_header_lines(request.headers, request.raw_headers)
    except ValueError as error:  # never from aiohttp's parser: see request_header_lines
        raise BadRequest(f"refused to forward the request: {error}") from None
    upstream_path = upstream.path_for(path)
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    target = upstream.target_prefix + (f"{upstream_path}?{query}" if query else upstream_path)
    framing = f"Content-Length: {len(body)}\r\n" if body or method not in BODILESS else ""
    if upstream.proxy_authorization:
        framing += f"Proxy-Authorization: {upstream.proxy_authorization}\r\n"
    attempts = 2 if method in IDEMPOTENT else 1
    response: web.StreamResponse | None = None
    deadline = Deadline(task, upstream.timeout.total)
    trace = Trace(method, f"{path}?{query}" if query else path, upstream) if client.debug else None
    if trace is not None:
        trace.route(upstream_path, query, credentials)
    try:
        for attempt in range(1, attempts + 1):
            # Signed per attempt: a request must reach AWS within 5 minutes of its x-amz-date.
            timestamp = AMZ_CLOCK()
            signed = sign_request(
                method,
                upstream.host_header,
                upstream_path,
                query,
                payload_hash,
                credentials,
                upstream.region,
                upstream.service,
                timestamp,
            )
            if trace is not None:
                trace.signed(upstream_path, query, payload_hash, credentials, timestamp)
            head = _request_head(method, target, upstream, forwarded, framing, signed)
            try:
                connection, message, payload = await _send(
                    client, upstream, method, head, body, trace
                )
                break
            except ClientConnectorError as error:
                # The connection was never made, so no byte went out: safe to try again.
                if attempt == attempts or isinstance(error, ClientSSLError):
                    raise _unreachable(upstream, error) from None
                log.warning(
                    "%s %s: connecting to %s failed (%s); retrying once",
                    method,
                    path,
                    upstream.url,
                    error.os_error.strerror or error.os_error,
                )
                await asyncio.sleep(RETRY_DELAY)
            except (ClientError, HttpProcessingError, ConnectionError) as error:
                raise _unreachable(upstream, error) from None  # bytes may have gone out

        if trace is not None:
            trace.first_byte = time.perf_counter()
        headers = message.headers
        exchange.status = message.code
        exchange.request_id = headers.get("x-amzn-RequestId")
        exchange.error_type = headers.get("x-amzn-ErrorType")
        if (
            payload.is_eof()
            and payload.exception() is None
            and message.code not in NO_BODY_STATUSES
            and not (cors.enabled and hdrs.ORIGIN in request.headers)
        ):
            try:
                whole = payload.read_nowait()
                if message.code == 403:
                    _explain_forbidden(upstream, exchange, whole)
                # With CORS on, only a request without Origin comes this way: it gets what
                # CorsPolicy.apply() gives one (no function's Access-Control-*, Vary: Origin).
                lines = response_header_lines(headers, message.raw_headers, cors.enabled)
                _refuse_control_bytes(upstream, message, lines)
                return _write_whole(request, method, message, lines, whole, exchange)
            finally:
                connection.release()  # the answer is all read: the connection is free
        completed = False
        try:
            _refuse_control_bytes(
                upstream, message, response_header_lines(headers, message.raw_headers)
            )
            response = _HeadersWithFirstChunk(
                status=message.code,
                reason=message.reason,
                headers=response_headers_to_return(headers),
            )
            if cors.enabled:
                cors.apply(request, response)
            if not keeps_alive(request):
                response.force_close()  # "Connection: close" in the head, as _write_whole says
            await response.prepare(request)
            completed = await _stream(request, upstream, payload, response, exchange)
        finally:
            if completed:
                connection.release()  # back to the pool, unless the upstream said close
            else:
                # Client gone, upstream broken, or this task cancelled: drop the upstream
                # connection now rather than drain it back into the pool.
                connection.close()
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        if response is None:
            raise _timed_out(upstream) from None
        # Never end the client's response cleanly after a truncated upstream body.
        exchange.outcome = "upstream_failed_mid_body: TimeoutError"
        if request.transport is not None:
            request.transport.abort()
    finally:
        deadline.cancel()
        if trace is not None:
            trace.done(exchange.status, exchange.outcome)
    assert response is not None
    return response


async def _stream(
    request: web.BaseRequest,
    upstream: Upstream,
    payload: StreamReader,
    response: web.StreamResponse,
    exchange: Exchange,
) -> bool:
    """Copy the body to the client; True when all of it went through.

    The response head waits for the first part of the body only if that part has already
    arrived (one write instead of two); a function still at work gets its head sent at once, so
    that a client sees the status as soon as the function gives it."""
    try:
        chunk = payload.read_nowait()
    except (ClientError, OSError) as error:
        return _cut_mid_body(request, exchange, error)
    if exchange.status == 403:  # AWS's refusals are small: what has arrived is all of it
        _explain_forbidden(upstream, exchange, chunk)
    if not chunk and not payload.at_eof():
        request.writer.send_headers()
    while True:
        if chunk:
            try:
                await response.write(chunk)
            except ConnectionResetError:
                exchange.outcome = "client_disconnected"
                return False
            exchange.bytes_sent += len(chunk)
        try:
            chunk = await payload.readany()
        except (ClientError, OSError) as error:
            return _cut_mid_body(request, exchange, error)
        if not chunk:
            break
    await response.write_eof()
    return True


def _explain_forbidden(upstream: Upstream, exchange: Exchange, body: bytes) -> None:
    exchange.hint = region_hint(
        upstream.prefix,
        upstream.url,
        upstream.region,
        exchange.error_type,
        body,
        upstream.region_source,
    )


def _cut_mid_body(request: web.BaseRequest, exchange: Exchange, error: Exception) -> bool:
    # Never end the client's response cleanly after a truncated upstream body.
    exchange.outcome = f"upstream_failed_mid_body: {type(error).__name__}"
    if request.transport is not None:
        request.transport.abort()
    return False

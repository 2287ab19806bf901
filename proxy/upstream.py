"""The pooled upstream ClientSession and the streaming forward of one signed request."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientError,
    ClientResponse,
    ClientSession,
    ClientSSLError,
    DummyCookieJar,
    TCPConnector,
    hdrs,
    web,
)

from proxy.errors import UpstreamTimeout, UpstreamUnreachable
from proxy.headers import request_headers_to_forward, response_headers_to_return
from proxy.routing import Upstream
from proxy.signing import EMPTY_SHA256, AmzClock, Credentials, sign

log = logging.getLogger(__name__)

# Headers aiohttp would invent when the client sent none: an Accept-Encoding the client never
# asked for would make the function compress a body the client cannot read.
# Methods that are safe to send twice (RFC 9110 section 9.2.2); only ever retried when the
# first connection could not be made at all.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_DELAY: Final = 0.2
AMZ_CLOCK: Final = AmzClock()

SKIP_AUTO_HEADERS: Final = (hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE)


def create_session(ca_bundle: Path | None) -> ClientSession:
    """One session for the app's life: pooled keep-alive connections, verified TLS, no cookies
    shared between clients, bytes passed through as they are."""
    ssl_context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    connector = TCPConnector(ssl=ssl_context, limit=0, keepalive_timeout=30)
    session = ClientSession(
        connector=connector,
        trust_env=False,  # HTTPS_PROXY etc. are resolved once per route: Upstream.proxy
        auto_decompress=False,
        cookie_jar=DummyCookieJar(),
        skip_auto_headers=SKIP_AUTO_HEADERS,
    )
    # aiohttp resends an idempotent request once if the connection drops after it was sent;
    # a function could then run twice. forward() retries only connections never made. The
    # pool's keep-alive (30 s) stays below AWS's idle timeout, so stale reuse stays rare.
    session._retry_connection = False
    return session


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


def _unreachable(upstream: Upstream, error: ClientError) -> UpstreamUnreachable:
    if isinstance(error, ClientConnectorCertificateError | ClientSSLError):
        reason = (
            f"TLS verification failed ({error}); if the endpoint uses a private CA, "
            "set ca_bundle or AWS_CA_BUNDLE"
        )
    elif isinstance(error, ClientConnectorError):
        reason = f"cannot connect ({error.os_error.strerror or error.os_error})"
    else:
        reason = f"{type(error).__name__}: {error}"
    return UpstreamUnreachable(
        f"route {upstream.prefix!r}: {upstream.url} is unreachable: {reason}"
    )


async def forward(
    request: web.Request,
    session: ClientSession,
    upstream: Upstream,
    credentials: Credentials,
    path: str,
    query: str,
    body: bytes,
    exchange: Exchange,
) -> web.StreamResponse:
    """Sign and send the request, then stream the answer back chunk by chunk as it arrives."""
    forwarded = request_headers_to_forward(request.headers)
    forwarded[hdrs.HOST] = upstream.host_header
    upstream_path = upstream.path_for(path)
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    url = upstream.url_for(upstream_path, query)
    attempts = 2 if request.method in IDEMPOTENT else 1
    for attempt in range(1, attempts + 1):
        headers = forwarded.copy()
        # Signed per attempt: a request must reach AWS within 5 minutes of its x-amz-date.
        headers.extend(
            sign(
                method=request.method,
                host=upstream.host_header,
                path=upstream_path,
                query=query,
                payload_hash=payload_hash,
                credentials=credentials,
                region=upstream.region,
                service=upstream.service,
                now=AMZ_CLOCK(),
            )
        )
        try:
            answer = await session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=upstream.timeout,
                proxy=upstream.proxy,
                proxy_auth=upstream.proxy_auth,
            )
            break
        except TimeoutError:
            raise UpstreamTimeout(
                f"route {upstream.prefix!r}: {upstream.url} did not answer within "
                f"{upstream.timeout.total:g} s; raise the route's timeout if the function needs "
                "longer"
            ) from None
        except ClientConnectorError as error:
            # The connection was never made, so no byte went out: safe to try once more.
            if attempt == attempts or isinstance(error, ClientSSLError):
                raise _unreachable(upstream, error) from None
            log.warning(
                "%s %s: connecting to %s failed (%s); retrying once",
                request.method,
                path,
                upstream.url,
                error.os_error.strerror or error.os_error,
            )
            await asyncio.sleep(RETRY_DELAY)
        except ClientError as error:  # bytes may have gone out: never retried
            raise _unreachable(upstream, error) from None

    async with answer:
        exchange.status = answer.status
        exchange.request_id = answer.headers.get("x-amzn-RequestId")
        exchange.error_type = answer.headers.get("x-amzn-ErrorType")
        response = web.StreamResponse(
            status=answer.status,
            reason=answer.reason,
            headers=response_headers_to_return(answer.headers),
        )
        completed = False
        try:
            await response.prepare(request)
            await _stream(request, answer, response, exchange)
            completed = exchange.outcome is None
        finally:
            if not completed:
                # Client gone, upstream broken, or this task cancelled: drop the upstream
                # connection now rather than drain it back into the pool.
                answer.close()
    return response


async def _stream(
    request: web.Request,
    answer: ClientResponse,
    response: web.StreamResponse,
    exchange: Exchange,
) -> None:
    content = answer.content
    while True:
        try:
            chunk = await content.readany()
        except (ClientError, TimeoutError) as error:
            # Never end the client's response cleanly after a truncated upstream body.
            exchange.outcome = f"upstream_failed_mid_body: {type(error).__name__}"
            if request.transport is not None:
                request.transport.abort()
            return
        if not chunk:
            break
        try:
            await response.write(chunk)
        except ConnectionResetError:
            exchange.outcome = "client_disconnected"
            return
        exchange.bytes_sent += len(chunk)
    await response.write_eof()

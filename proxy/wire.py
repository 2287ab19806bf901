"""Pure HTTP/1.1 for the request path, bytes in and bytes out: the signed request head the proxy
sends upstream, and the pieces of the heads it sends the client. No socket, no clock, no aiohttp:
what goes on the wire is tested with plain asserts (tests/test_wire.py), as mitmproxy's
`assemble` and uvicorn's precomputed status lines are."""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus
from typing import Final

from proxy.routing import Upstream
from proxy.signing import Credentials, sign_request

# Methods that announce an empty body with `Content-Length: 0` only when they have one.
BODILESS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Answers that never have a body, whatever their headers say (RFC 9110 6.4.1).
NO_BODY_STATUSES: Final = frozenset({204, 304})
LAST_CHUNK: Final = b"0\r\n\r\n"
Version = tuple[int, int]


def request_head(
    method: str,
    upstream: Upstream,
    path: str,
    query: str,
    forwarded: bytes,
    body_length: int,
    payload_hash: str,
    credentials: Credentials,
    timestamp: str,
) -> bytes:
    """The head of the request sent upstream, signed: request line, the upstream's Host, the
    client's `forwarded` header lines as they came (proxy/headers.py chose them), the signature's
    lines, the body's framing. `path` and `query` are canonical (proxy/target.py): what is
    signed is what is sent. Through an HTTP proxy to a plain-http upstream, the target is the
    absolute URL and the proxy's credentials go along (Upstream.target_prefix)."""
    # A function's URL with AuthType NONE answers anyone: neither signature nor token goes.
    signed = (
        ""
        if upstream.unsigned
        else sign_request(
            method,
            upstream.host_header,
            path,
            query,
            payload_hash,
            credentials,
            upstream.region,
            upstream.service,
            timestamp,
        )
    )
    target = upstream.target_prefix + (f"{path}?{query}" if query else path)
    framing = f"Content-Length: {body_length}\r\n" if body_length or method not in BODILESS else ""
    if upstream.proxy_authorization:
        framing += f"Proxy-Authorization: {upstream.proxy_authorization}\r\n"
    # The target is canonical (ASCII), the host and the signed lines are ASCII too.
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {upstream.host_header}\r\n".encode()
        + forwarded
        + f"{signed}{framing}\r\n".encode()
    )


@lru_cache(maxsize=128)
def status_line(version: Version, status: int, reason: bytes | None = None) -> bytes:
    """`HTTP/1.1 200 OK`: the upstream's reason phrase as it came, or the standard one."""
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
    return b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status, reason)


def connection_line(version: Version, keep_alive: bool) -> bytes:
    """What an answer says about its connection: HTTP/1.1 keeps it unless told, 1.0 closes it
    unless told."""
    if version >= (1, 1):
        return b"" if keep_alive else b"Connection: close\r\n"
    return b"Connection: keep-alive\r\n" if keep_alive else b""

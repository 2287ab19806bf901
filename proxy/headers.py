"""Which headers cross the proxy, as named sets and pure filters."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from aiohttp import hdrs
from multidict import CIMultiDict, MultiMapping

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP: Final = frozenset(
    name.lower()
    for name in (
        hdrs.CONNECTION,
        "keep-alive",
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        "proxy-connection",
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
    )
)

# Request headers the proxy replaces or must not pass on: the upstream's Host and the body's
# length are set by the proxy, the client's own credentials and dates would confuse SigV4, and
# X-Forwarded-*/Forwarded are the Function URL's to set, not a local client's; the proxy's own
# access token stays here.
DROPPED_REQUEST: Final = HOP_BY_HOP | frozenset(
    name.lower()
    for name in (
        hdrs.HOST,
        hdrs.CONTENT_LENGTH,
        hdrs.EXPECT,
        hdrs.AUTHORIZATION,
        hdrs.DATE,
        hdrs.FORWARDED,
        "x-proxy-token",
    )
)
DROPPED_REQUEST_PREFIXES: Final = (b"x-amz-", b"x-forwarded-")

# The proxy frames the body to the client itself (chunked or the upstream's Content-Length).
DROPPED_RESPONSE: Final = HOP_BY_HOP


def _dropped(headers: MultiMapping[str], dropped: frozenset[str]) -> frozenset[str]:
    """`dropped`, plus the headers named in Connection: hop-by-hop too (RFC 9110 7.6.1)."""
    if named := headers.getall(hdrs.CONNECTION, ()):
        return _with_named(dropped, ",".join(named))
    return dropped


@lru_cache(maxsize=256)  # a handful of values in practice ("keep-alive", "close")
def _with_named(dropped: frozenset[str], connection: str) -> frozenset[str]:
    return dropped | {token.strip().lower() for token in connection.split(",")}


def _dropped_raw(headers: MultiMapping[str], dropped: frozenset[str]) -> frozenset[bytes]:
    """_dropped() as lower-case bytes, for raw header names."""
    named = headers.getall(hdrs.CONNECTION, ())
    return _raw_names(dropped, ",".join(named) if named else "")


@lru_cache(maxsize=256)
def _raw_names(dropped: frozenset[str], connection: str) -> frozenset[bytes]:
    names = _with_named(dropped, connection) if connection else dropped
    return frozenset(name.encode("utf-8", "surrogateescape") for name in names)


def request_header_lines(
    headers: MultiMapping[str], raw_headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The client's headers that may go upstream as HTTP/1.1 header lines, ready to write:
    byte for byte as they came (`raw_headers`, from aiohttp's parser), every repeated value
    kept, in order."""
    dropped = _dropped_raw(headers, DROPPED_REQUEST)
    prefixes = DROPPED_REQUEST_PREFIXES
    lines = [
        b"%s: %s\r\n" % kv
        for kv in raw_headers
        if (lower := kv[0].lower()) not in dropped and not lower.startswith(prefixes)
    ]
    block = b"".join(lines)
    # aiohttp's parser never yields a CR or LF inside a name or value; if one ever did, it
    # could smuggle a header into the signed request. One count over the block checks them all.
    if block.count(b"\n") != len(lines) or block.count(b"\r") != len(lines):
        raise ValueError("a request header holds a CR or LF")
    return block


def response_header_lines(
    headers: MultiMapping[str], raw_headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The upstream's header lines for the client, ready to write: byte for byte as they came
    (`raw_headers`, from aiohttp's parser), repeated ones such as Set-Cookie all kept."""
    dropped = _dropped_raw(headers, DROPPED_RESPONSE)
    return b"".join([b"%s: %s\r\n" % kv for kv in raw_headers if kv[0].lower() not in dropped])


def response_headers_to_return(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """The upstream's headers for the client, repeated ones such as Set-Cookie all kept."""
    dropped = _dropped(headers, DROPPED_RESPONSE)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in dropped:
            kept.add(name, value)
    return kept

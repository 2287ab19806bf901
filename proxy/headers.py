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
DROPPED_REQUEST_PREFIXES: Final = ("x-amz-", "x-forwarded-")

# The proxy frames the body to the client itself (chunked or the upstream's Content-Length).
DROPPED_RESPONSE: Final = HOP_BY_HOP
_DROPPED_RESPONSE_RAW: Final = frozenset(name.encode() for name in DROPPED_RESPONSE)


def _dropped(headers: MultiMapping[str], dropped: frozenset[str]) -> frozenset[str]:
    """`dropped`, plus the headers named in Connection: hop-by-hop too (RFC 9110 7.6.1)."""
    if named := headers.getall(hdrs.CONNECTION, ()):
        return _with_named(dropped, ",".join(named))
    return dropped


@lru_cache(maxsize=256)  # a handful of values in practice ("keep-alive", "close")
def _with_named(dropped: frozenset[str], connection: str) -> frozenset[str]:
    return dropped | {token.strip().lower() for token in connection.split(",")}


@lru_cache(maxsize=256)
def _dropped_raw(connection: str) -> frozenset[bytes]:
    names = _with_named(DROPPED_RESPONSE, connection)
    return frozenset(name.encode("utf-8", "surrogateescape") for name in names)


def request_headers_to_forward(headers: MultiMapping[str]) -> str:
    """The client's headers that may go upstream as HTTP/1.1 header lines, ready to write:
    every repeated value kept, in order."""
    dropped = _dropped(headers, DROPPED_REQUEST)
    lines = [
        f"{name}: {value}\r\n"
        for name, value in headers.items()
        if (lower := name.lower()) not in dropped and not lower.startswith(DROPPED_REQUEST_PREFIXES)
    ]
    block = "".join(lines)
    # aiohttp's parser never yields a CR or LF inside a name or value; if one ever did, it
    # could smuggle a header into the signed request. One count over the block checks them all.
    if block.count("\n") != len(lines) or block.count("\r") != len(lines):
        raise ValueError("a request header holds a CR or LF")
    return block


def response_header_lines(
    headers: MultiMapping[str], raw_headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """The upstream's header lines for the client, ready to write: byte for byte as they came
    (`raw_headers`, from aiohttp's parser), repeated ones such as Set-Cookie all kept."""
    named = headers.getall(hdrs.CONNECTION, ())
    dropped = _dropped_raw(",".join(named)) if named else _DROPPED_RESPONSE_RAW
    return b"".join([b"%s: %s\r\n" % kv for kv in raw_headers if kv[0].lower() not in dropped])


def response_headers_to_return(headers: MultiMapping[str]) -> CIMultiDict[str]:
    """The upstream's headers for the client, repeated ones such as Set-Cookie all kept."""
    dropped = _dropped(headers, DROPPED_RESPONSE)
    kept: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in dropped:
            kept.add(name, value)
    return kept

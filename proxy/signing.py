"""Pure SigV4 header signing: request parts + credentials + clock -> headers. No I/O, no aiohttp.

Built directly rather than through botocore's SigV4Auth.add_auth, which mutates an AWSRequest,
reads the clock itself, re-parses the URL and derives the signing key on every call. The
canonical request here is checked against AWS's official test suite and against awscrt.

The caller passes the path and query exactly as they will be sent, already normalised and in
canonical form (proxy.target): what is signed is what is sent. `authorization()` is the one
signer: AWS's official vectors (tests/sigv4-test-suite) run through it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Final, NamedTuple
from urllib.parse import quote

ALGORITHM: Final = "AWS4-HMAC-SHA256"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
_BARE_PATH: Final = re.compile(r"[A-Za-z0-9\-._~/]*")


class Credentials(NamedTuple):
    """Frozen credentials; never logged (see __repr__)."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key[:4]}..., secret_key=***)"


def canonical_uri(path: str) -> str:
    """SigV4 (non-S3) URI-encodes the path as sent: what is encoded on the wire is encoded twice."""
    if _BARE_PATH.fullmatch(path):
        return path
    return quote(path, safe="/")


def canonical_request(
    method: str, path: str, query: str, header_block: str, signed: str, payload_hash: str
) -> str:
    """The canonical request, for a path and query already in canonical form (proxy.target) and
    a canonical header block with its signed-header list."""
    return f"{method}\n{canonical_uri(path)}\n{query}\n{header_block}\n{signed}\n{payload_hash}"


def proxy_headers(
    host: str, payload_hash: str, timestamp: str, token: str | None
) -> tuple[str, str]:
    """(canonical header block, signed-header list) of the headers the proxy signs: `host`,
    `x-amz-content-sha256`, `x-amz-date` and, with temporary credentials, the token; nothing an
    HTTP client might add or rewrite. Built directly: the names are fixed, lower-case and sorted,
    and no value can hold white space to fold (tests/test_signing.py checks against botocore)."""
    if token:
        return (
            f"host:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{timestamp}\n"
            f"x-amz-security-token:{token}\n",
            "host;x-amz-content-sha256;x-amz-date;x-amz-security-token",
        )
    return (
        f"host:{host}\nx-amz-content-sha256:{payload_hash}\nx-amz-date:{timestamp}\n",
        "host;x-amz-content-sha256;x-amz-date",
    )


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(timestamp: str, scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


class SigningKey:
    """A derived signing key, with SHA-256 states primed by its HMAC pads (RFC 2104, section
    4): a signature then hashes the string to sign and one digest, never the two 64-byte
    pads again. A third of the cost of hmac.digest, which sets OpenSSL's HMAC up each call."""

    __slots__ = ("_inner", "_outer", "key")

    def __init__(self, key: bytes) -> None:
        self.key = key
        # A key longer than SHA-256's 64-byte block is hashed first (a derived key is 32).
        block = (key if len(key) <= 64 else hashlib.sha256(key).digest()).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in block))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in block))

    def hmac_hex(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


@lru_cache(maxsize=256)
def signing_key(secret_key: str, date: str, region: str, service: str) -> SigningKey:
    """Derived once per secret and day, region, service: four HMACs saved on every request."""
    key = hmac.digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return SigningKey(key)


def authorization(
    credentials: Credentials,
    region: str,
    service: str,
    timestamp: str,
    request: str,
    signed: str,
) -> str:
    """The Authorization header's value for a canonical request: the one SigV4 signer, which
    every forwarded request and AWS's official test vectors go through."""
    scope = credential_scope(timestamp[:8], region, service)
    key = signing_key(credentials.secret_key, timestamp[:8], region, service)
    proof = key.hmac_hex(string_to_sign(timestamp, scope, request).encode())
    return (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={proof}"
    )


def signed_header_lines(
    payload_hash: str, timestamp: str, token: str | None, authorization: str
) -> str:
    """The headers the signature adds, as HTTP/1.1 header lines ready to write."""
    token_line = f"x-amz-security-token: {token}\r\n" if token else ""
    return (
        f"x-amz-content-sha256: {payload_hash}\r\nx-amz-date: {timestamp}\r\n{token_line}"
        f"Authorization: {authorization}\r\n"
    )


def sign_request(
    method: str,
    host: str,
    path: str,
    query: str,
    payload_hash: str,
    credentials: Credentials,
    region: str,
    service: str,
    timestamp: str,
) -> str:
    """The header lines that sign a forwarded request (positional arguments: the request path
    calls it for every attempt). A signature depends on nothing else, and x-amz-date changes once
    a second: requests alike within a second (a page polling, a load test) share one, byte for
    byte what signing each again would give, at a tenth of the cost."""
    key = (method, host, path, query, payload_hash, credentials, region, service, timestamp)
    lines = _SIGNED.get(key)
    if lines is not None:
        return lines
    token = credentials.token
    block, signed = proxy_headers(host, payload_hash, timestamp, token)
    request = canonical_request(method, path, query, block, signed, payload_hash)
    proof = authorization(credentials, region, service, timestamp, request, signed)
    lines = signed_header_lines(payload_hash, timestamp, token, proof)
    if timestamp != _SIGNED_AT[0]:  # a new second: the last one's are never asked for again
        _SIGNED.clear()
        _SIGNED_AT[0] = timestamp
    if len(_SIGNED) < SIGNED_ENTRIES:
        _SIGNED[key] = lines
    return lines


# This second's signatures, by everything they depend on (the timestamp included, so a thread
# signing for the last second as the second turns never hands out the wrong one).
_SIGNED: Final[dict[tuple[str, str, str, str, str, Credentials, str, str, str], str]] = {}
_SIGNED_AT: Final = [""]
SIGNED_ENTRIES: Final = 256


class AmzClock:
    """x-amz-date for now, formatted once per second rather than once per request; `shift`
    seconds ahead of `clock` (AWS's clock, once proxy/skew.py has measured it off)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.shift = 0.0
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(self._clock() + self.shift)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        return self._text

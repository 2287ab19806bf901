"""Pure SigV4 header signing: request parts + credentials + clock -> headers. No I/O, no aiohttp.

Built directly rather than through botocore's SigV4Auth.add_auth, which mutates an AWSRequest,
reads the clock itself, re-parses the URL and derives the signing key on every call. The
canonical request here is checked against AWS's official test suite and against awscrt.

The caller passes the path and query exactly as they will be sent, already normalised and in
canonical form (proxy.target): what is signed is what is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import datetime
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


def amz_date(now: datetime) -> str:
    """`20150830T123600Z` for an aware UTC datetime."""
    return now.strftime("%Y%m%dT%H%M%SZ")


def canonical_uri(path: str) -> str:
    """SigV4 (non-S3) URI-encodes the path as sent: what is encoded on the wire is encoded twice."""
    if _BARE_PATH.fullmatch(path):
        return path
    return quote(path, safe="/")


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(canonical header block, signed header list): names lowered and sorted, values trimmed with
    inner runs of white space folded, repeated names joined with commas in the order given."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.lower(), []).append(" ".join(value.split()))
    names = sorted(merged)
    block = "".join(f"{name}:{','.join(merged[name])}\n" for name in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    payload_hash: str,
) -> tuple[str, str]:
    """(canonical request, signed header list) for a canonical path and query."""
    block, signed = canonical_headers(headers)
    return f"{method}\n{canonical_uri(path)}\n{query}\n{block}\n{signed}\n{payload_hash}", signed


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(timestamp: str, scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


@lru_cache(maxsize=256)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """Derived once per secret and day, region, service: four HMACs saved on every request."""
    key = hmac.digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
    for part in (region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def signature(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode("utf-8"), "sha256").hexdigest()


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: str,
    payload_hash: str,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime,
) -> list[tuple[str, str]]:
    """The headers to send with the request: `x-amz-date`, `x-amz-content-sha256`,
    `x-amz-security-token` (temporary credentials only) and `Authorization`.

    Only these and `host` are signed: nothing the HTTP client might add or rewrite after signing.
    """
    timestamp = amz_date(now)
    date = timestamp[:8]
    added = [("x-amz-content-sha256", payload_hash), ("x-amz-date", timestamp)]
    if credentials.token:
        added.append(("x-amz-security-token", credentials.token))
    request, signed = canonical_request(method, path, query, [("host", host), *added], payload_hash)
    scope = credential_scope(date, region, service)
    key = signing_key(credentials.secret_key, date, region, service)
    proof = signature(key, string_to_sign(timestamp, scope, request))
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={proof}"
    )
    added.append(("Authorization", authorization))
    return added

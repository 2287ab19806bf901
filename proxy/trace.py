"""What `--log-level debug` shows of each forwarded request: the route it matched, what was
signed (canonical request, string to sign, signed headers) and the upstream's timings.

Never a secret: no secret key, signing key, session token or signature; the access key masked.
A Trace exists only when debug is on (UpstreamClient.debug, decided once): at info level the
request path computes none of this.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from proxy.credentials import mask
from proxy.routing import Upstream
from proxy.signing import (
    ALGORITHM,
    Credentials,
    canonical_request,
    credential_scope,
    proxy_headers,
    string_to_sign,
)

log: Final = logging.getLogger("proxy.trace")
SESSION_TOKEN_SHOWN: Final = "<session token>"  # noqa: S105 - a placeholder, not a secret


def _indented(text: str) -> str:
    return "".join(f"\n    {line}" for line in text.split("\n"))


class Trace:
    """One request's debug lines, and the clock readings its timing line is made of."""

    __slots__ = ("connected", "first_byte", "method", "own", "path", "started", "upstream")

    def __init__(self, method: str, path: str, upstream: Upstream) -> None:
        self.method = method
        self.path = path
        self.upstream = upstream
        self.started = time.perf_counter()
        self.connected: float | None = None
        self.first_byte: float | None = None
        self.own = 0.0  # the time its own debug lines took since `started`

    def route(self, upstream_path: str, query: str, credentials: Credentials) -> None:
        upstream = self.upstream
        target = f"{upstream_path}?{query}" if query else upstream_path
        log.debug(
            "%s %s matched route %s -> %s %s://%s%s (region %s, service %s, identity %s, %s)",
            self.method,
            self.path,
            upstream.prefix,
            self.method,
            upstream.scheme,
            upstream.host_header,
            target,
            upstream.region,
            upstream.service,
            upstream.identity.name,
            mask(credentials.access_key),
            extra={
                "fields": {
                    "event": "route_matched",
                    "route": upstream.prefix,
                    "upstream_target": target,
                    "region": upstream.region,
                }
            },
        )
        # The timings count from here, when the request goes to the connection pool.
        self.started = time.perf_counter()

    def signed(
        self,
        upstream_path: str,
        query: str,
        payload_hash: str,
        credentials: Credentials,
        timestamp: str,
    ) -> None:
        begun = time.perf_counter()
        upstream = self.upstream
        token = credentials.token
        block, signed = proxy_headers(upstream.host_header, payload_hash, timestamp, token)
        request = canonical_request(self.method, upstream_path, query, block, signed, payload_hash)
        scope = credential_scope(timestamp[:8], upstream.region, upstream.service)
        to_sign = string_to_sign(timestamp, scope, request)  # it hashes the real token
        headers = [f"x-amz-content-sha256: {payload_hash}", f"x-amz-date: {timestamp}"]
        if token:
            request = request.replace(token, SESSION_TOKEN_SHOWN)
            headers.append(f"x-amz-security-token: {SESSION_TOKEN_SHOWN}")
        headers.append(
            f"Authorization: {ALGORITHM} Credential={mask(credentials.access_key)}/{scope}, "
            f"SignedHeaders={signed}, Signature=<omitted>"
        )
        log.debug(
            "%s %s signed:\n  canonical request:%s\n  string to sign:%s\n  signed headers:%s",
            self.method,
            self.path,
            _indented(request),
            _indented(to_sign),
            _indented("\n".join(headers)),
            extra={
                "fields": {
                    "event": "signed",
                    "canonical_request": request,
                    "string_to_sign": to_sign,
                    "signed_headers": headers,
                }
            },
        )
        # Signed once connected: the later timings leave out the time these lines took.
        self.own += time.perf_counter() - begun

    def done(self, status: int, outcome: str | None) -> None:
        now = time.perf_counter()
        own = self.own
        timings = {
            "connect_ms": _ms(self.started, self.connected),
            "first_byte_ms": _ms(self.started, self.first_byte and self.first_byte - own),
            "total_ms": _ms(self.started, now - own),
        }
        shown = ", ".join(
            f"{name[:-3].replace('_', ' ')} {value:.1f} ms"
            for name, value in timings.items()
            if value is not None
        )
        log.debug(
            "%s %s: upstream %s after %s",
            self.method,
            self.path,
            status or outcome or "no answer",
            shown,
            extra={"fields": {"event": "upstream_timings", "status": status, **timings}},
        )


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 3)

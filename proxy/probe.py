"""What `check` asks each route's host (issue #13): AWS's clock, from one unsigned request, and,
with `--probe PATH`, the answer to one signed GET, explained.

An AWS_IAM Function URL refuses an unsigned request with 403 before any function runs, and its
`Date` gives AWS's clock. A Function URL runs the function for every signed method it accepts:
`check` signs nothing unless asked. A function's URL with AuthType NONE would run the function
even unsigned: it is not asked at all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from proxy.diagnosis import diagnose
from proxy.errors import CredentialsUnavailable
from proxy.review import BODY_LIMIT, facts
from proxy.routing import Upstream
from proxy.signing import EMPTY_SHA256
from proxy.skew import describe
from proxy.target import split_target
from proxy.upstream import Head, UpstreamClient
from proxy.upstream_errors import ConnectFailed, Malformed
from proxy.wire import request_head

TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Asked:
    """One request's outcome: its answer's head and body, or why there is none."""

    head: Head | None
    body: bytes
    error: str | None


def unsigned_head(upstream: Upstream) -> bytes:
    """GET of the URL's own path, unsigned, on a connection used once."""
    target = upstream.target_prefix + (upstream.base_path or "/")
    proxy = (
        f"Proxy-Authorization: {upstream.proxy_authorization}\r\n"
        if upstream.proxy_authorization
        else ""
    )
    return (
        f"GET {target} HTTP/1.1\r\nHost: {upstream.host_header}\r\n{proxy}Connection: close\r\n\r\n"
    ).encode()


async def ask(client: UpstreamClient, upstream: Upstream, head: bytes) -> Asked:
    """Send `head` on a new connection; the answer, its body up to BODY_LIMIT."""
    try:
        wire = await asyncio.wait_for(client.connect(upstream), TIMEOUT)
    except (ConnectFailed, TimeoutError) as error:
        return Asked(None, b"", f"cannot connect to {upstream.url} ({error or 'timed out'})")
    try:
        wire.send(head, b"")
        answer = await asyncio.wait_for(wire.head(), TIMEOUT)
        body = await asyncio.wait_for(wire.whole(BODY_LIMIT), TIMEOUT) or b""
    except (ConnectionError, OSError, Malformed, TimeoutError) as error:
        return Asked(None, b"", f"{upstream.url} did not answer ({error or 'timed out'})")
    finally:
        wire.close()
    return Asked(answer, body, None)


async def clock_offset(client: UpstreamClient, upstream: Upstream) -> str:
    """AWS's clock at the route's host against this machine's, in words."""
    if upstream.unsigned:
        return "not measured: the function's URL has AuthType NONE (a request would run it)"
    asked = await ask(client, upstream, unsigned_head(upstream))
    if asked.head is None:
        return f"not measured: {asked.error}"
    clock = client.clocks.get(upstream.origin, upstream.host)
    clock.observe(asked.head.date)
    if clock.offset is None:
        return "not measured: the answer had no Date"
    verdict = (
        "over 60 s: the proxy signs by AWS's clock"
        if clock.shift
        else "within 60 s: signing by this machine's clock"
    )
    return f"AWS's clock is {describe(clock.offset)} this machine's ({verdict})"


async def signed_get(client: UpstreamClient, upstream: Upstream, path: str) -> str:
    """One signed GET of `path` under the route's prefix: its status, explained."""
    try:
        credentials = upstream.identity.current()
    except CredentialsUnavailable as error:
        return f"not sent: {error.message}"
    try:
        target, query = split_target(upstream.prefix.rstrip("/") + path)
    except Exception as error:  # the path's own fault: said as it is
        return f"not sent: {error}"
    clock = client.clocks.get(upstream.origin, upstream.host)
    head = request_head(
        "GET", upstream, upstream.path_for(target), query, b"Connection: close\r\n", 0,
        EMPTY_SHA256, credentials, clock(),
    )  # fmt: skip
    asked = await ask(client, upstream, head)
    if asked.head is None:
        return f"no answer: {asked.error}"
    answer = asked.head
    said = f"{answer.status} {answer.reason.decode('latin-1')}"
    if answer.error_type:
        said += f" ({answer.error_type})"
    if answer.error_type == "AccessDeniedException":
        await upstream.identity.whoami()
    found = diagnose(
        answer.status, answer.error_type, asked.body, facts(upstream, credentials, answer)
    )
    return f"{said}: {found.code}: {found.explanation}" if found else said

"""An upstream refusal, reviewed before it goes back to the client (issue #13): explained, and,
when a second signature mends it, signed again and sent once more.

AWS's answer still goes back unchanged (status, headers, body: clients may parse it), with
`X-Proxy-Diagnosis: <code>` added and the explanation on the access line. Two refusals come
from the signature check, before any function runs, so sending again is safe for every method
(the body is already buffered): a time refusal (signed again by AWS's clock, proxy/skew.py)
and rejected credentials (resolved afresh). Nothing is ever sent a third time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from proxy.credentials import mask
from proxy.diagnosis import HEADER, Cure, Diagnosis, RouteFacts, diagnose
from proxy.exchange import Exchange
from proxy.routing import Upstream
from proxy.signing import Credentials
from proxy.skew import FIXES, AwsClock
from proxy.upstream import Head, UpstreamClient, Wire

log: Final = logging.getLogger("proxy.upstream")

# The statuses whose answers are reviewed; every other answer goes back at once.
REVIEWED: Final = frozenset({403, 429, 502, 504})
# AWS's refusals are a few hundred bytes; a body past this is not one (below upstream.HIGH_WATER,
# so waiting for it never pauses the connection).
BODY_LIMIT: Final = 8 * 1024

NOT_CURED: Final = {
    Cure.CLOCK: f"; AWS's answer did not say its time, so the proxy could not sign by it: {FIXES}",
    Cure.CREDENTIALS: (
        "; resolving them afresh gave no other keys: renew them where they come from "
        "(aws sso login, a new session token, the profile's keys)"
    ),
}

Sent = tuple[Wire, Head]
Resend = Callable[[Credentials], Awaitable[Sent]]


async def review(
    wire: Wire,
    head: Head,
    upstream: Upstream,
    credentials: Credentials,
    clock: AwsClock,
    client: UpstreamClient,
    exchange: Exchange,
    resend: Resend,
) -> Sent:
    """The answer to give the client: the first (`wire`, `head`), explained, or the answer to
    the one re-signed attempt a curable refusal earns. The first wire stays the caller's to
    release if this raises."""
    diagnosis = await _diagnose(wire, head, upstream, credentials)
    if diagnosis is not None and diagnosis.cure is not None:
        cured = await _cure(diagnosis, wire, head, upstream, credentials, clock)
        if cured is None:
            diagnosis = Diagnosis(diagnosis.code, diagnosis.explanation + NOT_CURED[diagnosis.cure])
        else:
            client.retried(diagnosis.code)  # clock_skew or credentials_rejected
            second = await resend(cured)
            client.release(wire)
            wire, head = second
            diagnosis = await _diagnose(wire, head, upstream, cured)
            if diagnosis is not None:
                # The second refusal is told as it is: no third attempt, whatever it says.
                diagnosis = Diagnosis(diagnosis.code, f"{diagnosis.explanation} (after a retry)")
    if diagnosis is not None:
        head.add(HEADER, diagnosis.code.encode())
        exchange.hint = diagnosis.explanation
    return wire, head


async def _diagnose(
    wire: Wire, head: Head, upstream: Upstream, credentials: Credentials
) -> Diagnosis | None:
    if head.status not in REVIEWED:
        return None
    # AWS's own answers (x-amzn-ErrorType) are waited for; a function's own 403 or 502 may be
    # a stream, which must not be held back: only what came with its head is read.
    waits = head.error_type is not None or wire.done
    body = (await wire.whole(BODY_LIMIT) or b"") if waits else b""
    if head.error_type == "AccessDeniedException":
        await upstream.identity.whoami()  # once per identity: who lacks the permission
    return diagnose(head.status, head.error_type, body, facts(upstream, credentials, head))


async def _cure(
    diagnosis: Diagnosis,
    wire: Wire,
    head: Head,
    upstream: Upstream,
    credentials: Credentials,
    clock: AwsClock,
) -> Credentials | None:
    """The credentials to sign the second attempt with, once what it needs is done; None if
    a second attempt would fail as the first did."""
    if diagnosis.cure is Cure.CLOCK:
        clock.refused(head.date, await wire.whole(BODY_LIMIT) or b"")
        if not clock.shift:  # no time to sign by: AWS's answer told none
            return None
        return credentials
    renewed = await upstream.identity.renew()
    if renewed is None or renewed == credentials:
        return None
    log.info(
        "route %s: AWS rejected the credentials of identity %s (%s, %s): resolved afresh (%s), "
        "signing again",
        upstream.prefix,
        upstream.identity.name,
        head.error_type,
        mask(credentials.access_key),
        mask(renewed.access_key),
    )
    return renewed


def facts(upstream: Upstream, credentials: Credentials, head: Head) -> RouteFacts:
    """What the route knows, for the explanations."""
    function = upstream.function
    resolution = function.resolution if function is not None else None
    config = resolution.config if resolution is not None else None
    return RouteFacts(
        upstream.prefix,
        upstream.url,
        upstream.region,
        upstream.region_source,
        function=function.function if function is not None else None,
        function_arn=config.function_arn if config is not None else None,
        caller_arn=upstream.identity.caller_arn,
        access_key=mask(credentials.access_key),
        request_id=head.request_id,
    )

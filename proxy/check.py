"""`lambda-url-proxy check`: resolve every identity once and print the route table, then who
each route signs as (STS GetCallerIdentity) and AWS's clock at its host; with `--probe PATH`,
one signed GET per route, its answer explained (proxy/probe.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from proxy.functions import FunctionRoute
from proxy.probe import clock_offset, signed_get
from proxy.routing import Upstream
from proxy.settings import Settings
from proxy.skew import Clocks
from proxy.state import ProxyState
from proxy.upstream import UpstreamClient

RESOLVE_TIMEOUT: Final = 60.0


async def _resolve_all(
    settings: Settings, probe: str | None
) -> tuple[list[list[str]], list[str], list[str], bool]:
    """The route table, what went wrong looking up the functions routes name, what each
    route's host said, and whether every probe was answered without a refusal."""
    state = ProxyState.build(settings)
    for identity in state.identities.values():
        with contextlib.suppress(Exception):  # the failure is in identity.error
            await asyncio.wait_for(identity.refresh(), RESOLVE_TIMEOUT)
    for function in state.functions:  # each with its identity's keys, now resolved
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(function.resolve(), RESOLVE_TIMEOUT)
    rows = [["ROUTE", "URL", "REGION", "IDENTITY", "CREDENTIALS"]]
    for route in state.router.routes:
        identity = route.identity
        status = identity.status()
        if identity.usable:
            expiry = status["expires_at"] or "never"
            verdict = f"OK ({identity.source}, {status['access_key']}, expires {expiry})"
        else:
            verdict = f"FAILED: {identity.error or identity.unavailable_reason()}"
        account = f" [account {identity.account_id}]" if identity.account_id else ""
        rows.append(
            [
                route.prefix,
                # a failed lookup's reason is long: it follows the table
                f"{route.named}: FAILED (below)"
                if isinstance(route, FunctionRoute) and route.failed
                else route.target,
                f"{route.region} ({route.region_source})",
                identity.name + account,
                verdict,
            ]
        )
    failures = [
        f"route {function.prefix}: {function.error.message}"
        for function in state.functions
        if function.failed and function.error is not None
    ]
    told, probes_ok = await _ask_hosts(state, probe)
    return rows, failures, told, probes_ok


async def _ask_hosts(state: ProxyState, probe: str | None) -> tuple[list[str], bool]:
    """Per route: who it signs as, AWS's clock at its host and, if asked, a signed GET."""
    client = UpstreamClient(state.ca_bundle)
    client.clocks = Clocks(tell=False)  # printed below, not logged
    told: list[str] = []
    probes_ok = True
    width = max(len(route.prefix) for route in state.router.routes)
    for route in state.router.routes:
        prefix = route.prefix.ljust(width)
        identity = route.identity
        if identity.usable and await identity.whoami():
            told.append(f"{prefix}  signs as {identity.caller_arn}")
        upstream = _upstream(route)
        if upstream is None:
            continue
        told.append(f"{prefix}  clock: {await clock_offset(client, upstream)}")
        if probe is not None:
            if isinstance(route, FunctionRoute) and route.upstream is None:
                said = "not sent: the function has no URL, and check invokes no function"
            else:
                said = await signed_get(client, upstream, probe)
            probes_ok = probes_ok and said[:1] in "123"
            told.append(f"{prefix}  GET {route.prefix.rstrip('/')}{probe}: {said}")
    await client.close()
    return told, probes_ok


def _upstream(route: Upstream | FunctionRoute) -> Upstream | None:
    """Where a route's requests go: its URL, or the Lambda API a function without one is
    invoked through (None while unknown)."""
    if isinstance(route, Upstream):
        return route
    resolution = route.resolution
    if resolution is None:
        return None
    return resolution.upstream or (resolution.invoke.upstream if resolution.invoke else None)


def check(settings: Settings, probe: str | None = None) -> int:
    """Print the table and what the hosts said; 0 only if every route has usable credentials,
    every function named was found and every probe (if asked) was answered without a
    refusal."""
    rows, function_failures, told, probes_ok = asyncio.run(_resolve_all(settings, probe))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), end=""
        )
        print("  " + row[-1])
    failed = sum(row[-1].startswith("FAILED") for row in rows[1:])
    print(f"\n{len(rows) - 1 - failed} of {len(rows) - 1} routes have usable credentials")
    for failure in function_failures:
        print(f"FAILED: {failure}")
    if told:
        print()
        print("\n".join(told))
    return 1 if failed or function_failures or not probes_ok else 0

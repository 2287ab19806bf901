"""`lambda-url-proxy check`: resolve every identity once and print the route table."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from proxy.functions import FunctionRoute
from proxy.settings import Settings
from proxy.state import ProxyState

RESOLVE_TIMEOUT: Final = 60.0


async def _resolve_all(settings: Settings) -> tuple[list[list[str]], list[str]]:
    """The route table, and what went wrong looking up the functions routes name."""
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
    return rows, failures


def check(settings: Settings) -> int:
    """Print the table; 0 only if every route has usable credentials and every function
    named was found."""
    rows, function_failures = asyncio.run(_resolve_all(settings))
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
    return 1 if failed or function_failures else 0

"""`lambda-url-proxy check`: resolve every identity once and print the route table."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from proxy.settings import Settings
from proxy.state import ProxyState

RESOLVE_TIMEOUT: Final = 60.0


async def _resolve_all(settings: Settings) -> list[list[str]]:
    state = ProxyState.build(settings)
    for identity in state.identities.values():
        with contextlib.suppress(Exception):  # the failure is in identity.error
            await asyncio.wait_for(identity.refresh(), RESOLVE_TIMEOUT)
    rows = [["ROUTE", "URL", "REGION", "IDENTITY", "CREDENTIALS"]]
    for upstream in state.router.upstreams:
        identity = upstream.identity
        status = identity.status()
        if identity.usable:
            expiry = status["expires_at"] or "never"
            verdict = f"OK ({identity.source}, {status['access_key']}, expires {expiry})"
        else:
            verdict = f"FAILED: {identity.error or identity.unavailable_reason()}"
        account = f" [account {identity.account_id}]" if identity.account_id else ""
        rows.append(
            [
                upstream.prefix,
                upstream.url,
                f"{upstream.region} ({upstream.region_source})",
                identity.name + account,
                verdict,
            ]
        )
    return rows


def check(settings: Settings) -> int:
    """Print the table; 0 only if every route has usable credentials."""
    rows = asyncio.run(_resolve_all(settings))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), end=""
        )
        print("  " + row[-1])
    failed = sum(row[-1].startswith("FAILED") for row in rows[1:])
    print(f"\n{len(rows) - 1 - failed} of {len(rows) - 1} routes have usable credentials")
    return 1 if failed else 0

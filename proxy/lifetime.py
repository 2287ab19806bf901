"""What lives as long as the app: the keys of its state, and the cleanup contexts that start
and stop the credentials' refreshing, the upstream client and the metrics' publishing.

A module of its own so that proxy/app.py's request path can be compiled (setup.py): mypyc does
not compile async generators, which aiohttp's cleanup contexts are.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from proxy.state import Live
from proxy.upstream import UpstreamClient

LIVE: Final = web.AppKey("live", Live)
CLIENT: Final = web.AppKey("client", UpstreamClient)

# How long start-up waits for credentials before listening anyway (requests then wait for them).
FIRST_RESOLUTION_WAIT: Final = 5.0


async def metrics_published(app: web.Application) -> AsyncIterator[None]:
    """A worker's figures, for the scrapes the other workers answer."""
    live = app[LIVE]
    assert live.metrics is not None
    publishing = asyncio.create_task(live.metrics.publish_every_second(lambda: len(live.in_flight)))
    yield
    publishing.cancel()


async def upstream_client(app: web.Application) -> AsyncIterator[None]:
    app[CLIENT] = client = UpstreamClient(app[LIVE].state.ca_bundle)
    if (metrics := app[LIVE].metrics) is not None:
        metrics.upstream = client  # its retries and clocks, read at each scrape
    yield
    await client.close()


async def credentials_refreshed(app: web.Application) -> AsyncIterator[None]:
    live = app[LIVE]
    live.start_refreshing()
    identities = live.state.identities.values()
    # Resolve before listening, so the first requests need not wait; a slow source (instance
    # metadata far away) does not hold start-up hostage: requests wait for it instead. The
    # functions' URLs are looked up in the same wait, each once its identity has keys.
    first = asyncio.gather(
        *(identity.wait_first_attempt() for identity in identities),
        *(function.wait_first_attempt() for function in live.state.functions),
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first, FIRST_RESOLUTION_WAIT)
    yield
    await live.stop()

"""Run the app on a socket until SIGINT or SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from proxy import __version__
from proxy._aiohttp import JsonErrorServer
from proxy.access import is_loopback
from proxy.admin import start_admin
from proxy.app import create_app, dispatcher
from proxy.functions import FunctionRoute
from proxy.lifetime import LIVE
from proxy.reload import Reloader
from proxy.settings import Settings
from proxy.state import Live

log = logging.getLogger("proxy")

READ_BUFSIZE: Final = 64 * 1024


def _announce(app: web.Application, settings: Settings, address: str) -> None:
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    log.info(
        "lambda-url-proxy %s listening on %s (event loop: %s)",
        __version__,
        address,
        loop,
        extra={
            "fields": {"event": "listening", "url": address, "version": __version__, "loop": loop}
        },
    )
    routes = app[LIVE].state.router.routes
    width = max(len(route.prefix) for route in routes)
    for route in routes:
        function = route if isinstance(route, FunctionRoute) else None
        (log.error if function is not None and function.failed else log.info)(
            "route %s -> %s (region %s from %s, identity %s)",
            route.prefix.ljust(width),
            route.target if function is None else function.announce(),
            route.region,
            route.region_source,
            route.identity.describe(),
            extra={
                "fields": {
                    "event": "route",
                    "prefix": route.prefix,
                    "upstream": route.target if function is None else None,
                    "region": route.region,
                    "region_source": route.region_source,
                    "identity": route.identity.name,
                    "account_id": route.identity.account_id,
                    **(function.status() if function is not None else {}),
                }
            },
        )
        upstream = route.sends_to if isinstance(route, FunctionRoute) else route
        # (A function's URL with AuthType NONE is sent unsigned: no secret crosses.)
        if (
            upstream is not None
            and upstream.scheme == "http"
            and not upstream.unsigned
            and not is_loopback(upstream.host)
        ):
            log.warning(
                "route %s sends signed requests, session tokens included, over plain http to "
                "%s: use https",
                upstream.prefix,
                upstream.host,
            )
    # A route that serves now: not a function whose lookup failed (or is not over)
    serving = [r for r in routes if not isinstance(r, FunctionRoute) or r.sends_to is not None]
    example = (serving or routes)[0].prefix.rstrip("/") + "/"
    log.info("try: curl %s%s", address, example)
    if not is_loopback(settings.host) and not app[LIVE].state.access.gated:
        log.warning(
            "listening on %s, beyond this machine's loopback: anyone who can reach this port "
            "calls your functions with your AWS identity. Bind to 127.0.0.1 unless that is "
            "intended (as inside a container whose port only its own network reaches), or set "
            "access_token and/or allowed_clients to say who may",
            settings.host,
        )


def _exit_now(signum: int) -> None:
    log.warning("second signal: exiting now, in-flight requests are cut")
    logging.shutdown()
    os._exit(128 + signum)


async def drain(runner: web.BaseRunner, live: Live, grace: float) -> None:
    """Stop accepting, let in-flight requests and streams finish for up to `grace` seconds,
    then cut the rest. aiohttp's own shutdown cannot do this: it waits its timeout twice and
    never cancels a handler that streams a response without reading a request body."""
    for site in list(runner.sites):
        await site.stop()
    live.stopping = True
    if live.inspector is not None:
        live.inspector.close()  # the pages' streams end: nothing to wait for
    pending = set(live.in_flight)
    log.info(
        "shutting down: no new connections; %d in-flight request(s) may finish (up to %g s)",
        len(pending),
        grace,
    )
    if pending:
        _, pending = await asyncio.wait(pending, timeout=grace)
    if pending:
        log.warning("cutting %d request(s) still running after %g s", len(pending), grace)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)


class ProxyRunner(web.ServerRunner):
    """aiohttp's documented low-level runner, with the app's start-up and clean-up around it:
    the app holds the state (routes, credentials, the upstream client), the server only calls
    the proxy's one handler (no router, no middleware)."""

    def __init__(self, app: web.Application, server: web.Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.app = app

    async def shutdown(self) -> None:
        await self.app.shutdown()

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            await self.app.cleanup()  # the credentials' refreshes, the upstream client


async def start(
    app: web.Application, settings: Settings, reuse_port: bool = False
) -> tuple[ProxyRunner, str]:
    """Listen on the configured address; returns the runner and the URL it listens on."""
    # As AppRunner does it: the start-up (credentials resolved, the upstream client opened: the
    # handler's state) may still set the app's keys; then the app is frozen.
    app.on_startup.freeze()
    await app.startup()
    app.freeze()
    # The grace is enforced by drain(); by the time aiohttp's own shutdown runs, only idle
    # keep-alive connections remain.
    server = JsonErrorServer(
        dispatcher(app),
        max_connections=settings.max_connections,
        max_head_size=settings.max_head_size,
        on_access=metrics.record if (metrics := app[LIVE].metrics) is not None else None,
        keepalive_timeout=settings.idle_timeout,  # aiohttp closes a connection still waiting
        access_log=None,  # for a complete request at this deadline: the header timeout too
        handler_cancellation=True,
        # A proxy forwards the bytes it was given: what Content-Encoding means is the
        # function's business. Decompressing here corrupted gzip bodies (cut to the compressed
        # length) and let a small gzip bomb stall the event loop before any check ran.
        auto_decompress=False,
        # What aiohttp buffers of a body nobody reads yet (a request waiting for its share of
        # max_buffered_bodies) before it stops reading: twice this, plus one read of the socket
        # (256 KiB). aiohttp 3.14's default, 256 KiB, let each waiting upload hold 730 KiB;
        # reading a body raises it to the body's length, so uploads go as fast.
        read_bufsize=READ_BUFSIZE,
    )
    runner = ProxyRunner(app, server, shutdown_timeout=1.0)
    try:
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port).start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return runner, f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def serve(
    settings: Settings,
    load: Callable[[], Settings] | None = None,
    config_file: Path | None = None,
    reuse_port: bool = False,
    announce: bool = True,
    listening: Callable[[], object] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM. With `load`, SIGHUP and edits of `config_file` reload.
    With `reuse_port`, other processes may serve the same port (--workers)."""
    app = create_app(settings)
    runner, address = await start(app, settings, reuse_port)
    watching: asyncio.Task[None] | None = None
    admin: web.ServerRunner | None = None
    try:
        admin = await start_admin(app, settings, reuse_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if load is not None:
            reloader = Reloader(app[LIVE], load, config_file)
            loop.add_signal_handler(signal.SIGHUP, reloader.reload, "SIGHUP")
            if config_file is not None:
                watching = asyncio.create_task(reloader.watch())
        if listening is not None:  # blocking (another process's news): off the event loop
            await asyncio.to_thread(listening)
        if announce:  # after the handlers: a script may signal at once
            _announce(app, settings, address)
        await stop.wait()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _exit_now, signum)
        await drain(runner, app[LIVE], settings.shutdown_grace)
    finally:
        if watching is not None:
            watching.cancel()
        await runner.cleanup()
        if admin is not None:  # probes answered until the drain is over
            await admin.cleanup()

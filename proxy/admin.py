"""The admin listener (`admin_listen`): health, readiness and metrics on an address of their own.

The proxy binds loopback by default, and in a pod the kubelet's probes and Prometheus connect
to the pod's IP: they cannot reach a sidecar's /_proxy/*. This second listener serves those
three paths and nothing else: it never forwards a request and matches no route, so it needs
neither the access token nor the Host checks of the main listener (what it shows holds no
secret: proxy/credentials.py's status()).
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from proxy import downstream
from proxy._aiohttp import JsonErrorServer
from proxy.app import HEALTH_PATH, METRICS_PATH, RESERVED, Handler
from proxy.errors import MethodNotAllowed, NoRoute, ProxyError
from proxy.exchange import Exchange
from proxy.lifetime import CLIENT, LIVE
from proxy.metrics import CONTENT_TYPE
from proxy.settings import ConfigError, Settings
from proxy.state import Live
from proxy.upstream import UpstreamClient

log = logging.getLogger("proxy")

READY_PATH: Final = "/_proxy/ready"
SERVED: Final = (HEALTH_PATH, READY_PATH, METRICS_PATH)
READ_ONLY: Final = frozenset({"GET", "HEAD"})


def admin_handler(live: Live, client: UpstreamClient) -> Handler:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request.method, request.raw_path.partition("?")[0][:2048])
        path = exchange.path.rstrip("/") or "/"
        cors = downstream.NO_CORS
        if path not in SERVED:
            error: ProxyError = NoRoute(
                f"{exchange.path[:200]} is not served here: the admin listener serves only "
                f"{', '.join(SERVED)}; requests for the functions go to the proxy's own address"
            )
            return downstream.error(request, error, cors, exchange)
        if request.method not in READ_ONLY:
            error = MethodNotAllowed(f"{request.method} {path}: the admin listener is read-only")
            return downstream.error(request, error, cors, exchange)
        if path == METRICS_PATH and live.metrics is not None:
            text = await live.metrics.scrape(len(live.in_flight))
            return downstream.own(request, 200, CONTENT_TYPE, text, cors, exchange)
        status, data = RESERVED[path](live.state, client)
        return downstream.json(request, status, data, cors, exchange)

    return handle


def cannot_listen(settings: Settings, error: OSError) -> ConfigError:
    return ConfigError(
        f"admin_listen {settings.admin_listen!r}: cannot listen there ({error.strerror}); "
        "pick another address or port"
    )


async def start_admin(
    app: web.Application, settings: Settings, reuse_port: bool = False
) -> web.ServerRunner | None:
    """Listen on `admin_listen`, if set; ConfigError if the address cannot be bound."""
    address = settings.admin_address
    if address is None:
        return None
    host, port = address
    server = JsonErrorServer(
        admin_handler(app[LIVE], app[CLIENT]),
        max_connections=64,  # probes and scrapes: a few at a time
        keepalive_timeout=settings.idle_timeout,
        access_log=None,
        handler_cancellation=True,
    )
    runner = web.ServerRunner(server, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
    except OSError as error:
        await runner.cleanup()
        raise cannot_listen(settings, error) from None
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    log.info(
        "admin listener on http://%s:%d: %s only",
        shown,
        bound_port,
        ", ".join(SERVED),
        extra={"fields": {"event": "admin_listening", "url": f"http://{shown}:{bound_port}"}},
    )
    return runner

"""Match a request path to an upstream: longest prefix on a segment boundary, in O(depth)."""

from __future__ import annotations

import base64
import netrc
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.request import getproxies, proxy_bypass

from yarl import URL

from proxy.aws_config import Resolved
from proxy.credentials import Identity
from proxy.memo import remember
from proxy.settings import Route
from proxy.target import canonical_path

if TYPE_CHECKING:
    from proxy.functions import FunctionRoute, Invoke


@dataclass(frozen=True, slots=True)
class HttpProxy:
    """An HTTP proxy from HTTP_PROXY / HTTPS_PROXY: where to connect, and its credentials as a
    Proxy-Authorization value (from the URL, else ~/.netrc, as aiohttp's trust_env read them)."""

    host: str
    port: int
    authorization: str | None

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


def env_proxy(url: URL) -> HttpProxy | None:
    """The proxy the environment names for `url` (HTTP_PROXY for http, HTTPS_PROXY for https,
    NO_PROXY honoured), read with urllib's own functions. Only http:// proxies: a TLS
    connection to the proxy itself is not supported (aiohttp ignored those too)."""
    host = url.raw_host
    if host is None or proxy_bypass(host):
        return None
    configured = getproxies().get(url.scheme)
    if not configured:
        return None
    proxy = URL(configured if "://" in configured else f"http://{configured}")
    if proxy.scheme != "http" or not proxy.raw_host:
        return None
    user, password = proxy.user, proxy.password
    if user is None:
        user, password = _netrc_login(proxy.raw_host)
    authorization = None
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        authorization = f"Basic {token}"
    return HttpProxy(proxy.raw_host, proxy.port or 80, authorization)


def _netrc_login(host: str) -> tuple[str | None, str | None]:
    """The proxy's login from NETRC or ~/.netrc, if either names it."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        found = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None, None
    if found is None:
        return None, None
    login, _, password = found
    return login, password


# Routes to the same scheme, host, port, through the same proxy, share their connections.
Origin = tuple[str, str, int, HttpProxy | None]


@dataclass(frozen=True, slots=True)
class Upstream:
    """A route compiled once at start-up: everything the request path needs, precomputed."""

    prefix: str
    url: str
    strip_prefix: bool
    scheme: str
    host: str
    port: int | None
    host_header: str
    base_path: str  # canonical, without a trailing slash; "" for the root
    region: str
    region_source: str  # where the region came from: "AWS_REGION", "profile dev", ...
    service: str
    timeout: float  # seconds for the whole exchange, streaming included
    identity: Identity
    # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, read once: re-reading the environment and ~/.netrc
    # on every request (aiohttp's trust_env did) halved throughput.
    proxy: HttpProxy | None = None
    # The connections this upstream may share with other routes: same scheme, host, port, proxy.
    origin: Origin = ("http", "", 0, None)
    # What the request line and head need to differ by when a plain-http upstream is reached
    # through an HTTP proxy: the absolute URL as target, and the proxy's credentials.
    target_prefix: str = ""
    proxy_authorization: str | None = None
    # A function's URL with AuthType NONE answers anyone: sent unsigned (issue #14).
    unsigned: bool = False
    # The route named a function and this is its URL: the lookup that found it, which can look
    # again when the URL stops answering (proxy/functions.py).
    function: FunctionRoute | None = None
    # The route names a function without a URL: this is the Lambda API, and requests are
    # invoked through it (proxy/invoke.py) rather than forwarded.
    invoke: Invoke | None = None

    @classmethod
    def from_route(cls, route: Route, region: Resolved, identity: Identity) -> Upstream:
        assert route.url is not None, "a route naming a function is compiled by FunctionRoute"
        url = URL(route.url)
        base_path = canonical_path(url.raw_path or "/").rstrip("/")
        proxy = env_proxy(url)
        assert url.raw_host is not None  # Route validated the url
        host_header = url.host_port_subcomponent or url.raw_host
        through_http_proxy = proxy is not None and url.scheme == "http"
        return cls(
            prefix=route.prefix,
            url=route.url,
            strip_prefix=route.strip_prefix,
            scheme=url.scheme,
            host=url.raw_host,
            port=url.explicit_port,
            host_header=host_header,
            base_path=base_path,
            region=region.value,
            region_source=region.source,
            service=route.service,
            timeout=route.timeout,
            identity=identity,
            proxy=proxy,
            origin=(url.scheme, url.raw_host, url.port or 0, proxy),
            target_prefix=f"http://{host_header}" if through_http_proxy else "",
            proxy_authorization=proxy.authorization if proxy and through_http_proxy else None,
        )

    @property
    def target(self) -> str:
        """Where the route goes, for tables and logs (FunctionRoute has the same)."""
        return self.url

    def path_for(self, path: str) -> str:
        """The upstream path for a canonical request path this upstream matched."""
        if self.strip_prefix and self.prefix != "/":
            path = path[len(self.prefix) :]
        return self.base_path + path or "/"


# Router._found's bounds: paths of at most 256 characters, 1 024 of them.
FOUND_ENTRIES: Final = 1024
FOUND_PATH: Final = 256


class Router:
    """Prefixes to URL routes (Upstream) and to routes naming a function (FunctionRoute)."""

    def __init__(self, routes: Iterable[Upstream | FunctionRoute]) -> None:
        self._by_prefix = {route.prefix: route for route in routes}
        self.routes = sorted(self._by_prefix.values(), key=lambda r: r.prefix)
        # The route of each path seen, the paths asked for most being the same few: one look-up
        # where find() makes one per segment and two calls. Bounded (proxy/memo.py); a reload
        # makes a new Router.
        self._found: dict[str, Upstream | FunctionRoute] = {}

    def match(self, path: str) -> Upstream | None:
        """The upstream to forward `path` to; for a route naming a function, its URL's, or the
        ProxyError that says why it has none now (FunctionRoute.routed)."""
        route = self._found.get(path) or self.find(path)
        if route is None or isinstance(route, Upstream):
            return route
        return route.routed()

    def find(self, path: str) -> Upstream | FunctionRoute | None:
        """The route with the longest prefix that is `path` or a parent of it, segment-wise;
        one dict look-up per segment of the path, whatever the number of routes."""
        candidate = path
        while True:
            route = self._by_prefix.get(candidate)
            if route is not None:
                if len(path) <= FOUND_PATH:
                    remember(self._found, path, route, FOUND_ENTRIES)
                return route
            if candidate == "/":
                return None
            candidate = candidate[: candidate.rindex("/")] or "/"

    @property
    def prefixes(self) -> list[str]:
        return [route.prefix for route in self.routes]

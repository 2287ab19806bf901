"""Who may use the proxy: an optional shared token and an optional allow-list of networks.

Anyone who can use the proxy acts with the user's AWS identity. On loopback that is the user;
bound wider (a container's 0.0.0.0), these let the user say who else.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

from aiohttp import hdrs, web
from pydantic import IPvAnyNetwork, SecretStr

from proxy.errors import ClientNotAllowed, HostNotAllowed, Unauthorized

TOKEN_HEADER: Final = "X-Proxy-Token"  # noqa: S105 - a header name, not a secret


def is_loopback(bind: str) -> bool:
    """Is a listening address (as given to --host) this machine's loopback?"""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1024)
def is_loopback_name(host: str) -> bool:
    """Is a Host header (name or address, with or without a port) this machine's loopback?
    Cached: a client sends the same few Host values, and parsing an address costs more than the
    rest of the check (bench/README.md)."""
    if host.startswith("["):  # [::1] or [::1]:8080
        name = host[1 : host.find("]")]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AccessPolicy:
    def __init__(
        self,
        token: SecretStr | None,
        networks: Sequence[IPvAnyNetwork],
        loopback_only: bool = False,
    ) -> None:
        self._token = token.get_secret_value().encode() if token else None
        self._networks = tuple(networks)
        # Bound to loopback, every genuine request is addressed to a loopback name; any other
        # Host is a page whose name was re-pointed at 127.0.0.1 (DNS rebinding).
        self._loopback_only = loopback_only
        self.restricted = self._token is not None or bool(self._networks) or loopback_only

    def check(self, request: web.BaseRequest) -> None:
        """Raise unless the request may be forwarded."""
        if self._loopback_only:
            host = request.headers.get(hdrs.HOST)
            if host is not None and not is_loopback_name(host):
                raise HostNotAllowed(
                    f"requests addressed to {host[:100]!r} are refused: this proxy listens on "
                    "loopback and answers only localhost, 127.0.0.1 or [::1] (a web page whose "
                    "name was pointed at 127.0.0.1 must not use your AWS identity)"
                )
        if self._networks:
            remote = request.remote or ""
            try:
                address = ipaddress.ip_address(remote)
            except ValueError:
                address = None
            if address is None or not any(address in network for network in self._networks):
                raise ClientNotAllowed(
                    f"clients from {remote or 'an unknown address'} may not use this proxy: "
                    "add their network to allowed_clients"
                )
        if self._token is not None:
            offered = request.headers.get(TOKEN_HEADER)
            if offered is None:
                scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
                offered = value.strip() if scheme.lower() == "bearer" else None
            if offered is None or not hmac.compare_digest(offered.encode(), self._token):
                raise Unauthorized(
                    "this proxy needs its access token: send it as X-Proxy-Token: <token> or "
                    "Authorization: Bearer <token>"
                )

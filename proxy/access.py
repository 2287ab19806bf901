"""Who may use the proxy: an optional shared token and an optional allow-list of networks.

Anyone who can use the proxy acts with the user's AWS identity. On loopback that is the user;
bound wider (a container's 0.0.0.0), these let the user say who else.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from typing import Final

from aiohttp import hdrs, web
from pydantic import IPvAnyNetwork, SecretStr

from proxy.errors import ProxyError

TOKEN_HEADER: Final = "X-Proxy-Token"  # noqa: S105 - a header name, not a secret


class Unauthorized(ProxyError):
    code = "unauthorized"
    status = 401


class ClientNotAllowed(ProxyError):
    code = "client_not_allowed"
    status = 403


class AccessPolicy:
    def __init__(self, token: SecretStr | None, networks: Sequence[IPvAnyNetwork]) -> None:
        self._token = token.get_secret_value().encode() if token else None
        self._networks = tuple(networks)
        self.restricted = self._token is not None or bool(self._networks)

    def check(self, request: web.Request) -> None:
        """Raise unless the request may be forwarded."""
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

"""Who may use the proxy: an optional shared token and an optional allow-list of networks.

Anyone who can use the proxy acts with the user's AWS identity. On loopback that is the user;
bound wider (a container's 0.0.0.0), these let the user say who else.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from multidict import istr
from pydantic import IPvAnyNetwork, SecretStr

from proxy.errors import ClientNotAllowed, HostNotAllowed, Unauthorized

if TYPE_CHECKING:  # for the types only: `check` runs without aiohttp
    from aiohttp.web import BaseRequest

# istr: a name looked up in the request's headers without a case-folded copy of it, every request
TOKEN_HEADER: Final = istr("X-Proxy-Token")
HOST: Final = istr("Host")


def is_loopback(bind: str) -> bool:
    """Is a listening address (as given to --host) this machine's loopback?"""
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name or address in a Host header, without its port, brackets or trailing dot."""
    if host.startswith("["):  # [::1] or [::1]:8080
        name = host[1 : host.find("]")]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    return name.lower().rstrip(".")


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which names a request may address the proxy by (its Host header): the DNS-rebinding
    defence. A page whose name is re-pointed at the proxy's address reaches it with that name
    in Host, so names the proxy is not known by are refused. Known: loopback names; on a wide
    bind also IP literals and single-label names (a Compose or Kubernetes service name); and
    `allowed_hosts` (exact names, or `.suffix` / `*.suffix` for a domain; `*` for any)."""

    CACHE_SIZE: Final = 1024

    def __init__(self, allowed: Sequence[str], loopback_bind: bool) -> None:
        self.any = "*" in allowed
        self._exact = frozenset(host_name(a) for a in allowed if not a.startswith(("*", ".")))
        self._suffixes = tuple("." + a.lstrip("*.").lower() for a in allowed if a[:1] in "*.")
        self._suffixes = tuple(s for s in self._suffixes if s != ".")
        self._loopback_bind = loopback_bind
        # A client sends the same few Host values, and parsing an address costs more than the
        # rest of the check (bench/README.md).
        self._seen: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        known = self._seen.get(host)
        if known is None:
            if len(self._seen) >= self.CACHE_SIZE:
                self._seen.clear()
            known = self._seen[host] = self._allows(host_name(host))
        return known

    def _allows(self, name: str) -> bool:
        if self.any or is_loopback_name(name) or name in self._exact:
            return True
        if name.endswith(self._suffixes):
            return True
        if self._loopback_bind:
            return False
        return is_ip_literal(name) or ("." not in name and bool(name))

    def refusal(self, host: str) -> HostNotAllowed:
        name = host_name(host)
        if self._loopback_bind:
            known = "this proxy listens on loopback and answers only localhost, 127.0.0.1 or [::1]"
        else:
            known = (
                "this proxy answers loopback names, IP addresses and single-label service names "
                "(such as a Compose service's)"
            )
        return HostNotAllowed(
            f"requests addressed to {host[:100]!r} are refused: {known}, so that a web page whose "
            "name was pointed at the proxy's address (DNS rebinding) cannot use your AWS "
            f"identity. If clients really reach the proxy by this name, add it to allowed_hosts "
            f"(--allowed-host {name[:100]})"
        )


class AccessPolicy:
    def __init__(
        self,
        token: SecretStr | None,
        networks: Sequence[IPvAnyNetwork],
        hosts: HostPolicy,
    ) -> None:
        self._token = token.get_secret_value().encode() if token else None
        self._networks = tuple(networks)
        self._hosts = hosts
        # Says who may use it: without either, anyone who reaches the port may.
        self.gated = self._token is not None or bool(self._networks)
        self.restricted = self.gated or not hosts.any

    def check(self, request: BaseRequest, token: bool = True) -> None:
        """Raise unless the request may be forwarded; without `token`, the access token is not
        asked for (the inspector page's own files, which hold no data)."""
        host = request.headers.get(HOST)
        if host is not None and not self._hosts.allows(host):
            raise self._hosts.refusal(host)
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
        if self._token is not None and token:
            offered = request.headers.get(TOKEN_HEADER)
            if offered is None:
                scheme, _, value = request.headers.get("Authorization", "").partition(" ")
                offered = value.strip() if scheme.lower() == "bearer" else None
            # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way, and
            # they must compare as the bytes they were, not raise.
            if offered is None or not hmac.compare_digest(
                offered.encode("utf-8", "surrogateescape"), self._token
            ):
                raise Unauthorized(
                    "this proxy needs its access token: send it as X-Proxy-Token: <token> or "
                    "Authorization: Bearer <token>"
                )

"""The configuration in force: settings, compiled routes, identities, CORS policy.

Built once from Settings and replaced whole on reload, so a request that has started keeps the
state it started with: in-flight requests finish on the old routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import botocore.session

from proxy.access import AccessPolicy, is_loopback
from proxy.cors import CorsPolicy
from proxy.credentials import Identity, IdentitySpec
from proxy.routing import Router, Upstream
from proxy.settings import Settings

log = logging.getLogger(__name__)


def default_aws_setting(name: str) -> str | None:
    """A setting from the AWS environment and config files, as the AWS CLI would read it."""
    value = botocore.session.Session().get_config_variable(name)
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class ProxyState:
    settings: Settings
    router: Router
    cors: CorsPolicy
    access: AccessPolicy
    identities: Mapping[IdentitySpec, Identity]

    @classmethod
    def build(
        cls, settings: Settings, reuse: Mapping[IdentitySpec, Identity] | None = None
    ) -> ProxyState:
        """ConfigError if a route cannot be compiled. Identities in `reuse` are kept, with their
        cached credentials, wherever the new settings ask for the same identity."""
        default_region = settings.region or default_aws_setting("region")
        identities: dict[IdentitySpec, Identity] = {}  # routes with the same spec share one
        upstreams = []
        for route in settings.routes:
            spec = IdentitySpec.for_route(route, settings)
            if spec not in identities:
                identities[spec] = (reuse or {}).get(spec) or Identity(spec)
            upstreams.append(Upstream.from_route(route, default_region, identities[spec]))
        return cls(
            settings,
            Router(upstreams),
            CorsPolicy(settings.cors_origins),
            AccessPolicy(
                settings.access_token,
                settings.allowed_clients,
                loopback_only=is_loopback(settings.host),
            ),
            identities,
        )


class Live:
    """The state in force, and the refresh tasks of its identities."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self._refreshing: dict[Identity, asyncio.Task[None]] = {}
        self.in_flight: set[asyncio.Task[Any]] = set()  # request handlers, for the drain
        self.stopping = False

    def start_refreshing(self) -> None:
        """One refresh task per identity in use: new ones started, unused ones stopped."""
        wanted = set(self.state.identities.values())
        for identity in wanted - self._refreshing.keys():
            self._refreshing[identity] = asyncio.create_task(identity.run())
        for identity in self._refreshing.keys() - wanted:
            self._refreshing.pop(identity).cancel()

    def replace(self, state: ProxyState) -> None:
        self.state = state
        self.start_refreshing()

    async def stop(self) -> None:
        tasks = list(self._refreshing.values())
        self._refreshing.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

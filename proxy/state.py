"""The configuration in force: settings, compiled routes, identities, CORS policy.

Built once from Settings and replaced whole on reload, so a request that has started keeps the
state it started with: in-flight requests finish on the old routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.access import AccessPolicy, HostPolicy, is_loopback
from proxy.aws_config import AwsConfig, resolve_route
from proxy.budget import BodyBudget
from proxy.cors import CorsPolicy
from proxy.credentials import Identity, IdentitySpec
from proxy.functions import FunctionRoute
from proxy.inspector import Inspector
from proxy.routing import Router, Upstream
from proxy.settings import ConfigError, Settings

if TYPE_CHECKING:  # not imported by `check`: prometheus-client is the server's
    from proxy.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProxyState:
    settings: Settings
    router: Router
    cors: CorsPolicy
    access: AccessPolicy
    identities: Mapping[IdentitySpec, Identity]
    ca_bundle: Path | None = None
    # The routes naming a function, each looking up its URL (Live runs the lookups).
    functions: tuple[FunctionRoute, ...] = ()

    @classmethod
    def build(
        cls,
        settings: Settings,
        reuse: Mapping[IdentitySpec, Identity] | None = None,
        aws: AwsConfig | None = None,
    ) -> ProxyState:
        """ConfigError naming every route that cannot be compiled. Identities in `reuse` are
        kept, with their cached credentials, wherever the new settings ask for the same one."""
        aws = aws or AwsConfig()
        for why in aws.unreadable:
            log.warning("%s", why)
        ca_bundle = _ca_bundle(settings, aws)
        identities: dict[IdentitySpec, Identity] = {}  # routes with the same spec share one
        routes: list[Upstream | FunctionRoute] = []
        warned: set[str] = set()
        problems: dict[str, list[str]] = {}  # the same problem, once, with every route it hits
        for route in settings.routes:
            try:
                resolved = resolve_route(route, settings, aws)
            except ConfigError as error:
                problems.setdefault(str(error), []).append(repr(route.prefix))
                continue
            if resolved.warning and resolved.warning not in warned:
                warned.add(resolved.warning)
                log.warning("%s", resolved.warning)
            sts_region = aws.region(resolved.profile)
            spec = replace(
                IdentitySpec.for_route(route, settings),
                environment_keys_only=resolved.environment_keys_only,
                sts_region=sts_region.value if sts_region else None,
            )
            if spec not in identities:
                identities[spec] = (reuse or {}).get(spec) or Identity(spec)
            identity = identities[spec]
            if route.function is not None:
                routes.append(FunctionRoute(route, resolved.region, identity, ca_bundle))
            else:
                routes.append(Upstream.from_route(route, resolved.region, identity))
        if problems:
            raise ConfigError(
                "\n".join(
                    f"route{'s' if len(prefixes) > 1 else ''} {', '.join(prefixes)}: {problem}"
                    for problem, prefixes in problems.items()
                )
            )
        return cls(
            settings,
            Router(routes),
            CorsPolicy(settings.cors_origins),
            AccessPolicy(
                settings.access_token,
                settings.allowed_clients,
                HostPolicy(settings.allowed_hosts, loopback_bind=is_loopback(settings.host)),
            ),
            identities,
            ca_bundle,
            tuple(route for route in routes if isinstance(route, FunctionRoute)),
        )


def _ca_bundle(settings: Settings, aws: AwsConfig) -> Path | None:
    """`ca_bundle` > AWS_CA_BUNDLE > the top-level profile's `ca_bundle`: one for the process."""
    if settings.ca_bundle is not None:
        return settings.ca_bundle
    profile = aws.profile(settings.profile, settings.origin("profile"))
    configured = aws.ca_bundle(profile)
    return Path(configured.value) if configured else None


class Live:
    """The state in force, the refresh tasks of its identities and the lookups of its
    functions' URLs."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self._refreshing: dict[Identity, asyncio.Task[None]] = {}
        self._resolving: dict[FunctionRoute, asyncio.Task[None]] = {}
        self.in_flight: set[asyncio.Task[Any]] = set()  # request handlers, for the drain
        self.stopping = False
        # The process's, not the configuration's: a reload keeps it (max_buffered_bodies asks
        # for a restart).
        self.bodies = BodyBudget(state.settings.max_buffered_bodies)
        # The process's too: the ring outlives reloads (inspector and its size need a restart).
        settings = state.settings
        self.inspector = Inspector(settings.inspector_size) if settings.inspector else None
        self.metrics: Metrics | None = None  # the server's (proxy/app.py)

    def start_refreshing(self) -> None:
        """One refresh task per identity in use, one lookup per route naming a function: new
        ones started, those no longer in use stopped."""
        wanted = set(self.state.identities.values())
        for identity in wanted - self._refreshing.keys():
            if self.metrics is not None:
                identity.on_refresh = self.metrics.identity_refreshed
            self._refreshing[identity] = asyncio.create_task(identity.run())
        for identity in self._refreshing.keys() - wanted:
            self._refreshing.pop(identity).cancel()
            if self.metrics is not None:  # no expiry left behind to alert on
                self.metrics.figures.expiry.pop(identity.name, None)
        functions = set(self.state.functions)
        for function in functions - self._resolving.keys():
            self._resolving[function] = asyncio.create_task(function.run())
        for function in self._resolving.keys() - functions:
            self._resolving.pop(function).cancel()

    def replace(self, state: ProxyState) -> None:
        self.state = state
        self.start_refreshing()

    async def stop(self) -> None:
        tasks = [*self._refreshing.values(), *self._resolving.values()]
        self._refreshing.clear()
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

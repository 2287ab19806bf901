"""Pick up configuration edits without a restart: on SIGHUP, and when the config file changes.

The new route table replaces the old one whole; a broken edit is refused with the reason and
the table in force stays. Settings that belong to the listening socket need a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from proxy.settings import ConfigError, Settings
from proxy.state import Live, ProxyState

log = logging.getLogger("proxy.reload")

POLL_SECONDS: Final = 1.0
NEEDS_RESTART: Final = (
    "host",
    "port",
    "log_format",
    "log_level",
    "ca_bundle",
    "idle_timeout",
    "max_connections",
    "max_head_size",
    "max_buffered_bodies",
    "shutdown_grace",
    "workers",
    "inspector",
    "inspector_size",
)


class Reloader:
    def __init__(self, live: Live, load: Callable[[], Settings], config_file: Path | None) -> None:
        self.live = live
        self.load = load
        self.config_file = config_file
        self._seen = self._fingerprint()
        self._announcing: asyncio.Future[None] | None = None

    def _fingerprint(self) -> tuple[int, int] | None:
        if self.config_file is None:
            return None
        try:
            stat = self.config_file.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self, why: str) -> bool:
        """Load and apply the configuration; False (and the old table kept) if it is broken."""
        current = self.live.state
        try:
            settings = self.load()
            state = ProxyState.build(settings, reuse=current.identities)
        except ConfigError as error:
            log.error("configuration not reloaded (%s), the routes in force stay: %s", why, error)
            return False
        if changed := [
            n for n in NEEDS_RESTART if getattr(settings, n) != getattr(current.settings, n)
        ]:
            log.warning("%s changed: restart the proxy to apply", ", ".join(changed))
        self.live.replace(state)
        log.info(
            "configuration reloaded (%s): routes %s",
            why,
            ", ".join(f"{r.prefix} -> {r.target}" for r in state.router.routes),
        )
        if state.functions:  # looked up again (Live runs the lookups): say what was found
            self._announcing = asyncio.ensure_future(_announce(state))
        return True

    async def watch(self) -> None:
        """Poll the config file (mtime and size): no dependency, and editors that replace the
        file instead of writing it in place are seen too."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            seen = self._fingerprint()
            if seen != self._seen:
                self._seen = seen
                if seen is None:
                    log.error("config file %s is gone; the routes in force stay", self.config_file)
                else:
                    self.reload(f"{self.config_file} changed")


async def _announce(state: ProxyState) -> None:
    """Each route naming a function, once its first lookup is over."""
    for function in state.functions:
        await function.wait_first_attempt()
        level = logging.ERROR if function.failed else logging.INFO
        log.log(level, "route %s -> %s", function.prefix, function.announce())

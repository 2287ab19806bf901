"""/_proxy/metrics: the figures (proxy/figures.py) in Prometheus' text format, written by
prometheus-client from metric families made at each scrape.

The request path only counts (`record()`, where the access line is written); everything here
runs when a scrape arrives, or once a second in a worker. With `--workers N` each worker
writes its totals to a file in a directory the parent made (`use_directory()`), once a second
and when it answers a scrape, and the worker that answers reads them all: the figures are the
whole server's, the other workers' at most a second old. (prometheus-client's own multiprocess
mode was measured first: its metric objects cost 15 us a request in one process, 25 us in a
worker, against 1.5 us here.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from proxy.figures import BUCKETS, Figures, Totals

if TYPE_CHECKING:
    from proxy.credentials import Identity
    from proxy.upstream import UpstreamClient

log = logging.getLogger("proxy")

CONTENT_TYPE: Final = b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
PREFIX: Final = "lambda_url_proxy"
PUBLISH_INTERVAL: Final = 1.0  # seconds: how old another worker's figures may be
BOUNDS: Final = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]  # type: ignore[no-untyped-call]

_directory: Path | None = None  # the workers' shared directory, in a worker


def use_directory(path: str) -> None:
    """In a worker: publish this process's figures to `path`, and read the others' there."""
    global _directory
    _directory = Path(path)


class Metrics:
    """The process's figures, kept across reloads (a reload replaces the routes, not them)."""

    def __init__(self) -> None:
        self.figures = Figures()
        self.record = self.figures.record  # the request path's one call: no layer in between
        self.directory = _directory
        self._file = None if _directory is None else _directory / f"{os.getpid()}.json"
        # The app's (proxy/app.py): its retries and its estimates of AWS's clock, read when
        # the figures are totalled, never on the request path.
        self.upstream: UpstreamClient | None = None

    @property
    def shared(self) -> bool:
        """Are the figures the workers', together?"""
        return self.directory is not None

    def identity_refreshed(
        self, identity: Identity, failed: bool, expires_at: float | None
    ) -> None:
        self.figures.identity_refreshed(identity.name, failed, expires_at)

    def totals(self, in_flight: int) -> Totals:
        totals = self.figures.totals(in_flight)
        if self.upstream is not None:
            totals.retries = dict(self.upstream.retries)
            totals.clock_offsets = self.upstream.clocks.offsets()
        return totals

    def _publish(self, totals: Totals) -> None:
        """Write this process's totals for the other workers: whole, for a reader in another
        process, from a file of this thread's own (a scrape and the timer may write at once)."""
        assert self._file is not None
        written = self._file.with_suffix(f".{threading.get_ident()}.tmp")
        written.write_text(json.dumps(totals.to_json()))
        written.replace(self._file)

    async def publish_every_second(self, in_flight: Callable[[], int]) -> None:
        while True:
            # Counted on the event loop, where record() runs; written off it.
            await asyncio.to_thread(self._publish, self.totals(in_flight()))
            await asyncio.sleep(PUBLISH_INTERVAL)

    async def scrape(self, in_flight: int) -> bytes:
        """The exposition: this process's figures, or with workers the whole server's (files
        read off the event loop)."""
        totals = self.totals(in_flight)
        if self.directory is None:
            return render(totals)
        return await asyncio.to_thread(self._whole_server, totals)

    def _whole_server(self, mine: Totals) -> bytes:
        assert self.directory is not None
        self._publish(mine)
        totals = Totals()
        for path in self.directory.glob("*.json"):
            try:
                totals.add(Totals.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("metrics of another worker unreadable (%s): %s", path, error)
        return render(totals)


def render(totals: Totals) -> bytes:
    return generate_latest(_Families(families(totals, time.time())))


def families(totals: Totals, now: float) -> list[Metric]:
    """Every metric of README's table, from `totals`."""
    requests = _counter("requests", "Requests answered", ("route", "method", "status"))
    for labels, count in totals.requests.items():
        requests.add_metric(labels, count)
    errors = _counter(
        "errors",
        "Requests the proxy answered with its own error (X-Proxy-Error), or cut mid-body",
        ("route", "code"),
    )
    for error, count in totals.errors.items():
        errors.add_metric(error, count)
    received = _counter("request_body_bytes", "Request body bytes forwarded", ("route",))
    sent = _counter("response_body_bytes", "Response body bytes written to clients", ("route",))
    for family, table in ((received, totals.received), (sent, totals.sent)):
        for route, count in table.items():
            family.add_metric((route,), count)
    in_flight = GaugeMetricFamily(f"{PREFIX}_requests_in_flight", "Requests being served")
    in_flight.add_metric((), totals.in_flight)
    expiry = GaugeMetricFamily(
        f"{PREFIX}_credentials_expiry_timestamp_seconds",
        "When each identity's credentials expire (Unix time); none for keys that never do",
        labels=("identity",),
    )
    left = GaugeMetricFamily(
        f"{PREFIX}_credentials_expire_in_seconds",
        "Seconds until each identity's credentials expire (negative: expired)",
        labels=("identity",),
    )
    for name, expires_at in totals.expiry.items():
        expiry.add_metric((name,), expires_at)
        left.add_metric((name,), round(expires_at - now, 3))
    failures = _counter(
        "credential_refresh_failures",
        "Failed resolutions or refreshes of an identity's credentials",
        ("identity",),
    )
    for name, count in totals.refresh_failures.items():
        failures.add_metric((name,), count)
    offset = GaugeMetricFamily(
        f"{PREFIX}_clock_offset_seconds",
        "AWS's clock minus this machine's, as estimated from each upstream host's answers",
        labels=("host",),
    )
    for host, seconds in totals.clock_offsets.items():  # proxy/skew.py's estimates
        offset.add_metric((host,), round(seconds, 3))
    retries = _counter("upstream_retries", "Requests sent upstream again", ("reason",))
    for reason, count in totals.retries.items():
        retries.add_metric((reason,), count)
    duration = _histogram(
        "request_duration_seconds",
        "Seconds from a request's arrival until its answer was written",
        totals.duration,
    )
    first_byte = _histogram(
        "upstream_first_byte_seconds",
        "Seconds from a request's arrival until the upstream's answer began",
        totals.first_byte,
    )
    families: list[Metric] = [requests, duration, first_byte, errors, received, sent]
    return [*families, in_flight, expiry, left, failures, offset, retries]


def _counter(name: str, documentation: str, labels: Iterable[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


def _histogram(
    name: str, documentation: str, table: dict[str, tuple[list[int], float]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"{PREFIX}_{name}", documentation, labels=("route",))
    for route, (counts, total) in table.items():
        cumulative, buckets = 0, []
        for bound, count in zip(BOUNDS, counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        family.add_metric((route,), buckets, total)
    return family


class _Families(CollectorRegistry):
    """Families already made, for generate_latest()."""

    def __init__(self, made: list[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._made = made

    def collect(self) -> Iterable[Metric]:
        return self._made

"""What /_proxy/metrics shows, in Prometheus' text format, made by prometheus-client.

Every figure comes from the access record (proxy/exchange.py) when it is logged: `record()` is
called where `log_access()` is, with no await and no look-up that start-up could have done.
Credentials report their own refreshes (`identity_refreshed`, off the request path).

With `--workers N` each worker writes its figures to files in one directory the parent made
(prometheus-client's multiprocess mode, `use_directory()`), and whichever worker answers a
scrape reads them all: the figures are the whole server's.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.exchange import Exchange

if TYPE_CHECKING:
    from proxy.credentials import Identity

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus-client writes its files
CONTENT_TYPE: Final = b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
PREFIX: Final = "lambda_url_proxy"
# Labels take bounded values only: a client may send any method, routes come from the settings.
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}
# Lambda functions run up to 900 s; most answers take well under a second.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
EXPIRY: Final = f"{PREFIX}_credentials_expiry_timestamp_seconds"
# Outcomes that are no error of the proxy's (the others are its error codes, proxy/errors.py).
NOT_ERRORS: Final = frozenset(
    {"cors_preflight", "preflight_forwarded", "client_disconnected", "cut_by_shutdown"}
)

SAMPLE_INTERVAL: Final = 1.0  # seconds: how old a worker's in-flight figure may be

_directory: str | None = None  # the workers' shared directory, in a worker


def use_directory(path: str) -> None:
    """This process's figures go to files in `path`, shared with the other workers. Called
    once in each worker, before any metric is made. The process never forks, so its id is
    read once: prometheus-client's default asks the kernel for it at every increment."""
    global _directory
    _directory = os.environ[MULTIPROC_ENV] = path
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]


class Metrics:
    """The process's metrics, kept across reloads (a reload replaces the routes, not them)."""

    def __init__(self) -> None:
        directory = _directory
        if directory is None:
            # One process: in memory, whatever PROMETHEUS_MULTIPROC_DIR may say.
            values.ValueClass = values.MutexValue
        # Multiprocess: the metrics are registered nowhere, the files are what is read.
        own = None if directory else CollectorRegistry(auto_describe=False)
        self._own = own
        counter, gauge, histogram = self._counter, self._gauge, self._histogram
        self.requests = counter(
            "requests", "Requests answered, by route, method and status class", "method", "status"
        )
        self.duration = histogram(
            "request_duration_seconds",
            "Seconds from a request's arrival until its answer was written, by route",
        )
        self.first_byte = histogram(
            "upstream_first_byte_seconds",
            "Seconds from a request's arrival until the upstream's answer began, by route",
        )
        self.errors = counter(
            "errors",
            "Requests the proxy answered with its own error (X-Proxy-Error) or cut mid-body, "
            "by route and error code",
            "code",
        )
        self.received = counter("request_body_bytes", "Request body bytes forwarded, by route")
        self.sent = counter("response_body_bytes", "Response body bytes written, by route")
        self.in_flight = gauge("requests_in_flight", "Requests being served now", "livesum")
        self.expiry = gauge(
            EXPIRY.removeprefix(f"{PREFIX}_"),
            "When each identity's credentials expire (Unix time); absent for keys that never do",
            "livemin",
            "identity",
        )
        self.refresh_failures = Counter(
            f"{PREFIX}_credential_refresh_failures",
            "Failed resolutions or refreshes of an identity's credentials",
            ("identity",),
            registry=own,
        )
        # Fed by the clock-skew correction (issue #13).
        self.clock_offset = gauge(
            "clock_offset_seconds",
            "AWS's clock minus this machine's, as last measured from an answer's Date",
            "livemax",
        )
        self.retries = Counter(
            f"{PREFIX}_upstream_retries",
            "Requests sent upstream again, by reason",
            ("reason",),
            registry=own,
        )
        self._source: CollectorRegistry
        if directory:
            self._source = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(self._source, directory)  # type: ignore[no-untyped-call]
        else:
            assert own is not None
            self._source = own
        # The label children, looked up once per key rather than by labels() per request.
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._routes: dict[str, tuple[Histogram, Histogram, Counter, Counter]] = {}

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter by route, and by `labels`."""
        return Counter(f"{PREFIX}_{name}", documentation, ("route", *labels), registry=self._own)

    def _histogram(self, name: str, documentation: str) -> Histogram:
        return Histogram(
            f"{PREFIX}_{name}", documentation, ("route",), registry=self._own, buckets=BUCKETS
        )

    def _gauge(self, name: str, documentation: str, mode: str, *labels: str) -> Gauge:
        """`mode`: how the workers' values add up (prometheus-client's multiprocess_mode)."""
        return Gauge(
            f"{PREFIX}_{name}",
            documentation,
            labels,
            registry=self._own,
            multiprocess_mode=mode,  # type: ignore[arg-type]
        )

    @property
    def shared(self) -> bool:
        """Written to files that other workers read?"""
        return self._own is None

    async def sample_in_flight(self, count: Callable[[], int]) -> None:
        """A worker's in-flight figure, kept for the scrapes the other workers answer: sampled
        once a second, so that the request path itself does nothing for it."""
        while True:
            self.in_flight.set(count())
            await asyncio.sleep(SAMPLE_INTERVAL)

    def record(self, exchange: Exchange, seconds: float) -> None:
        """Count one request, from its access record."""
        route, status = exchange.route, exchange.status
        key = (route, exchange.method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(
                route,
                exchange.method if exchange.method in METHODS else "other",
                STATUS_CLASSES.get(status // 100, "none"),  # none: no answer was written
            )
        counter.inc()
        per_route = self._routes.get(route)
        if per_route is None:
            per_route = self._routes[route] = (
                self.duration.labels(route),
                self.first_byte.labels(route),
                self.received.labels(route),
                self.sent.labels(route),
            )
        duration, first_byte, received, sent = per_route
        duration.observe(seconds)
        if exchange.first_byte:
            first_byte.observe(exchange.first_byte - exchange.started)
        if exchange.bytes_received:
            received.inc(exchange.bytes_received)
        if exchange.bytes_sent:
            sent.inc(exchange.bytes_sent)
        if (outcome := exchange.outcome) is not None and outcome not in NOT_ERRORS:
            # upstream_failed_mid_body: <why> is counted without its why
            self.errors.labels(route, outcome.partition(":")[0]).inc()

    def identity_refreshed(
        self, identity: Identity, failed: bool, expires_at: float | None
    ) -> None:
        if failed:
            self.refresh_failures.labels(identity.name).inc()
        elif expires_at is not None:
            self.expiry.labels(identity.name).set(expires_at)

    def render(self, in_flight: int) -> bytes:
        """The exposition: every family, and the seconds left of each identity's credentials
        (from the earliest expiry any worker holds)."""
        self.in_flight.set(in_flight)
        families = list(self._source.collect())
        families.append(_expires_in(families, time.time()))
        return generate_latest(_Families(families))


def _expires_in(families: Iterable[Metric], now: float) -> GaugeMetricFamily:
    left = GaugeMetricFamily(
        f"{PREFIX}_credentials_expire_in_seconds",
        "Seconds until each identity's credentials expire (negative: expired)",
        labels=("identity",),
    )
    for family in families:
        if family.name == EXPIRY:
            for sample in family.samples:
                left.add_metric((sample.labels["identity"],), round(sample.value - now, 3))
    return left


class _Families(CollectorRegistry):
    """Families already collected, for generate_latest()."""

    def __init__(self, families: list[Metric]) -> None:
        super().__init__(auto_describe=False)
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families

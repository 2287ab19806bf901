"""The figures /_proxy/metrics shows, counted in plain Python: what the request path pays for them.

`record()` runs once per request, when its access line is written: a few dictionary and list
updates (prometheus-client's metric objects cost 2 to 7 us per call, 15 us a request; these, a
tenth of it). `Totals` is what the figures add up to, and what the workers exchange
(proxy/metrics.py): JSON-able, and summed across processes with `add()`.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from proxy.exchange import Exchange

# Labels take bounded values only: a client may send any method, routes come from the settings.
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES: Final = {n: f"{n}xx" for n in range(1, 6)}
# Lambda functions run up to 900 s; most answers take well under a second.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Outcomes that are no error of the proxy's (the others are its error codes, proxy/errors.py).
NOT_ERRORS: Final = frozenset(
    {"cors_preflight", "preflight_forwarded", "client_disconnected", "cut_by_shutdown"}
)


class Histogram:
    """Observations by bucket (the last: above every bound), not cumulative, and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(BUCKETS, value)] += 1  # a bound is "less or equal"
        self.sum += value


class Route:
    """One route's figures."""

    __slots__ = ("duration", "first_byte", "received", "requests", "sent")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # by (method, status) as they came
        self.duration = Histogram()
        self.first_byte = Histogram()
        self.received = 0
        self.sent = 0


class Figures:
    """One process's figures since it started."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.expiry: dict[str, float] = {}  # by identity: when its credentials expire
        self.refresh_failures: dict[str, int] = {}

    def record(self, exchange: Exchange, seconds: float) -> None:
        """Count one request, from its access record."""
        route = self.routes.get(exchange.route)
        if route is None:
            route = self.routes[exchange.route] = Route()
        key = (exchange.method, exchange.status)
        requests = route.requests
        requests[key] = requests.get(key, 0) + 1
        route.duration.observe(seconds)
        if exchange.first_byte:
            route.first_byte.observe(exchange.first_byte - exchange.started)
        route.received += exchange.bytes_received
        route.sent += exchange.bytes_sent
        if (outcome := exchange.outcome) is not None and outcome not in NOT_ERRORS:
            # upstream_failed_mid_body: <why> is counted without its why
            error = (exchange.route, outcome.partition(":")[0])
            self.errors[error] = self.errors.get(error, 0) + 1

    def identity_refreshed(self, name: str, failed: bool, expires_at: float | None) -> None:
        if failed:
            self.refresh_failures[name] = self.refresh_failures.get(name, 0) + 1
        elif expires_at is not None:
            self.expiry[name] = expires_at
        else:  # keys that never expire, now
            self.expiry.pop(name, None)

    def totals(self, in_flight: int) -> Totals:
        totals = Totals(in_flight=in_flight)
        for prefix, route in self.routes.items():
            for (method, status), count in route.requests.items():
                label = (
                    prefix,
                    method if method in METHODS else "other",
                    STATUS_CLASSES.get(status // 100, "none"),  # none: no answer was written
                )
                totals.requests[label] = totals.requests.get(label, 0) + count
            totals.duration[prefix] = (list(route.duration.counts), route.duration.sum)
            totals.first_byte[prefix] = (list(route.first_byte.counts), route.first_byte.sum)
            totals.received[prefix] = route.received
            totals.sent[prefix] = route.sent
        totals.errors = dict(self.errors)
        totals.expiry = dict(self.expiry)
        totals.refresh_failures = dict(self.refresh_failures)
        return totals  # retries and clock offsets: the upstream client's (proxy/metrics.py)


@dataclass
class Totals:
    """Figures ready to show: labels as shown, histograms by bucket with their sums."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)
    duration: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    first_byte: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    expiry: dict[str, float] = field(default_factory=dict)
    refresh_failures: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)  # by reason
    clock_offsets: dict[str, float] = field(default_factory=dict)  # by upstream host

    def add(self, other: Totals) -> None:
        """Another process's figures: counts summed, the earliest expiry, the largest offset."""
        _sum_into(self.requests, other.requests)
        _sum_into(self.errors, other.errors)
        _sum_into(self.received, other.received)
        _sum_into(self.sent, other.sent)
        _sum_into(self.refresh_failures, other.refresh_failures)
        _sum_into(self.retries, other.retries)
        for mine, theirs in ((self.duration, other.duration), (self.first_byte, other.first_byte)):
            for route, (counts, total) in theirs.items():
                had, had_sum = mine.get(route, ([0] * len(counts), 0.0))
                mine[route] = ([a + b for a, b in zip(had, counts, strict=True)], had_sum + total)
        self.in_flight += other.in_flight
        for name, expires_at in other.expiry.items():
            self.expiry[name] = min(expires_at, self.expiry.get(name, expires_at))
        for host, offset in other.clock_offsets.items():
            self.clock_offsets[host] = max(offset, self.clock_offsets.get(host, offset), key=abs)

    def to_json(self) -> dict[str, Any]:
        """For another process (json.dumps): tuple keys as lists."""
        return {
            "requests": [[*key, count] for key, count in self.requests.items()],
            "errors": [[*key, count] for key, count in self.errors.items()],
            "duration": [[route, *histogram] for route, histogram in self.duration.items()],
            "first_byte": [[route, *histogram] for route, histogram in self.first_byte.items()],
            "received": self.received,
            "sent": self.sent,
            "in_flight": self.in_flight,
            "expiry": self.expiry,
            "refresh_failures": self.refresh_failures,
            "retries": self.retries,
            "clock_offsets": self.clock_offsets,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Totals:
        return cls(
            requests={(r, m, s): n for r, m, s, n in data["requests"]},
            errors={(r, c): n for r, c, n in data["errors"]},
            duration={r: (counts, total) for r, counts, total in data["duration"]},
            first_byte={r: (counts, total) for r, counts, total in data["first_byte"]},
            received=data["received"],
            sent=data["sent"],
            in_flight=data["in_flight"],
            expiry=data["expiry"],
            refresh_failures=data["refresh_failures"],
            retries=data["retries"],
            clock_offsets=data["clock_offsets"],
        )


K = TypeVar("K")


def _sum_into(mine: dict[K, int], theirs: dict[K, int]) -> None:
    for key, count in theirs.items():
        mine[key] = mine.get(key, 0) + count

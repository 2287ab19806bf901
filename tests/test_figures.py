"""The figures as plain counts: what the workers' totals add up to is what one process counts."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.exchange import Exchange
from proxy.figures import BUCKETS, Figures, Totals

exchanges = st.builds(
    Exchange,
    method=st.sampled_from(["GET", "POST", "BREW", "DELETE"]),
    path=st.just("/x"),
    route=st.sampled_from(["/a", "/b", "-"]),
    status=st.sampled_from([0, 200, 204, 302, 404, 502, 503]),
    bytes_sent=st.integers(0, 10**9),
    outcome=st.sampled_from(
        [None, "no_route", "client_disconnected", "upstream_failed_mid_body: X"]
    ),
    bytes_received=st.integers(0, 10**6),
    started=st.just(100.0),
    first_byte=st.sampled_from([0.0, 100.001, 100.3, 1100.0]),
)
recorded = st.lists(st.tuples(exchanges, st.sampled_from([0.001, 0.005, 0.7, 1000.0])))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(first=recorded, second=recorded, in_flight=st.tuples(st.integers(0, 9), st.integers(0, 9)))
def test_two_workers_totals_are_one_process_totals(
    first: list[tuple[Exchange, float]],
    second: list[tuple[Exchange, float]],
    in_flight: tuple[int, int],
) -> None:
    one, a, b = Figures(), Figures(), Figures()
    for figures, records in ((a, first), (b, second), (one, first + second)):
        for exchange, seconds in records:
            figures.record(exchange, seconds)
    # As the workers exchange them: through JSON.
    merged = Totals.from_json(json.loads(json.dumps(a.totals(in_flight[0]).to_json())))
    merged.add(Totals.from_json(json.loads(json.dumps(b.totals(in_flight[1]).to_json()))))
    expected = one.totals(sum(in_flight))
    assert merged.requests == expected.requests
    assert merged.errors == expected.errors
    assert merged.received == expected.received
    assert merged.sent == expected.sent
    assert merged.in_flight == expected.in_flight
    for histograms, wanted in (
        (merged.duration, expected.duration),
        (merged.first_byte, expected.first_byte),
    ):
        assert {r: counts for r, (counts, _) in histograms.items()} == {
            r: counts for r, (counts, _) in wanted.items()
        }
        for route, (_, total) in histograms.items():  # sums added in another order
            assert abs(total - wanted[route][1]) <= 1e-9 * max(1.0, abs(total))


def test_labels_are_bounded_and_buckets_are_less_or_equal() -> None:
    figures = Figures()
    figures.record(Exchange("BREW", "/x", "/a", 0, started=1.0), BUCKETS[0])
    figures.record(Exchange("GET", "/x", "/a", 599, started=1.0, first_byte=1.5), 901.0)
    totals = figures.totals(0)
    assert totals.requests == {("/a", "other", "none"): 1, ("/a", "GET", "5xx"): 1}
    counts, total = totals.duration["/a"]
    assert counts[0] == 1 and counts[-1] == 1 and sum(counts) == 2 and total == BUCKETS[0] + 901
    assert totals.first_byte["/a"][0][BUCKETS.index(0.5)] == 1


def test_the_earliest_expiry_and_every_failure_count() -> None:
    a, b = Figures(), Figures()
    a.identity_refreshed("default", failed=False, expires_at=2000.0)
    b.identity_refreshed("default", failed=False, expires_at=1000.0)
    b.identity_refreshed("default", failed=True, expires_at=1000.0)
    a.identity_refreshed("dev", failed=True, expires_at=None)
    b.identity_refreshed("dev", failed=True, expires_at=None)
    totals = a.totals(0)
    totals.add(b.totals(0))
    assert totals.expiry == {"default": 1000.0}
    assert totals.refresh_failures == {"default": 1, "dev": 2}
    a.identity_refreshed("default", failed=False, expires_at=None)  # now keys that never expire
    assert a.totals(0).expiry == {}


def test_workers_retries_are_summed_and_each_hosts_farthest_offset_kept() -> None:
    """What each worker's upstream client gave (proxy/metrics.py), through JSON as they go."""
    a = Totals(retries={"connect": 1, "clock_skew": 2}, clock_offsets={"h": 3.0, "i": -0.5})
    b = Totals(retries={"clock_skew": 1}, clock_offsets={"h": -600.0})
    merged = Totals.from_json(json.loads(json.dumps(a.to_json())))
    merged.add(Totals.from_json(json.loads(json.dumps(b.to_json()))))
    assert merged.retries == {"connect": 1, "clock_skew": 3}
    assert merged.clock_offsets == {"h": -600.0, "i": -0.5}

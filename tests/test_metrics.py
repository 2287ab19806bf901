"""/_proxy/metrics, read with prometheus-client's own parser after a known mix of requests."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector
from prometheus_client.parser import text_string_to_metric_families

from proxy import workers
from proxy.figures import BUCKETS
from proxy.lifetime import LIVE
from proxy.metrics import PUBLISH_INTERVAL
from proxy.settings import ConfigError, load_settings
from proxy.state import ProxyState
from tests.conftest import (
    AKID,
    KEYS,
    ROOT,
    SECRET,
    RunningProxy,
    raw_exchange,
    refusing_port,
    route,
    running_proxy,
)
from tests.fake_credential_sources import FakeContainerCredentials
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

P = "lambda_url_proxy"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(session: ClientSession, url: str) -> Samples:
    async with session.get(url + "/_proxy/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


async def known_mix(session: ClientSession, url: str) -> None:
    """Three GETs of 100 bytes, a POST of 50, an upstream 503, a stream cut mid-body, a
    PROPFIND, a path with no route, and health, ready and metrics (never counted)."""
    for _ in range(3):
        async with session.get(url + "/fn/bytes/100") as response:
            assert len(await response.read()) == 100
    async with session.post(url + "/fn/echo", data=b"x" * 50) as response:
        assert response.status == 200
        await response.read()
    async with session.get(url + "/fn/status/503") as response:
        assert response.status == 503
    async with session.request("PROPFIND", url + "/fn/props") as response:
        await response.read()
    async with session.get(url + "/nowhere") as response:
        assert response.status == 404
    for path in ("/_proxy/health", "/_proxy/ready", "/_proxy/metrics"):
        async with session.get(url + path) as response:
            await response.read()
    port = int(url.rsplit(":", 1)[1])
    cut = await raw_exchange(port, b"GET /fn/truncate/1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert cut.startswith(b"HTTP/1.1 200") and len(cut.partition(b"\r\n\r\n")[2]) < 1000


def assert_known_mix(samples: Samples, times: int = 1) -> None:
    """The figures of `times` known mixes, exactly."""
    requests = f"{P}_requests_total"
    assert value(samples, requests, route="/fn", method="GET", status="2xx") == 4 * times
    assert value(samples, requests, route="/fn", method="POST", status="2xx") == 1 * times
    assert value(samples, requests, route="/fn", method="GET", status="5xx") == 1 * times
    assert value(samples, requests, route="/fn", method="other", status="2xx") == 1 * times
    assert value(samples, requests, route="-", method="GET", status="4xx") == 1 * times
    counted = sum(v for (name, _), v in samples.items() if name == requests)
    assert counted == 8 * times  # health, ready and metrics are not requests of the functions
    assert value(samples, f"{P}_errors_total", route="-", code="no_route") == times
    cut = value(samples, f"{P}_errors_total", route="/fn", code="upstream_failed_mid_body")
    assert cut == times
    assert value(samples, f"{P}_request_body_bytes_total", route="/fn") == 50 * times
    sent = value(samples, f"{P}_response_body_bytes_total", route="/fn")
    assert sent >= 300 * times + 50 * times  # and the 503's body, the PROPFIND's, the cut part
    duration = f"{P}_request_duration_seconds"
    assert value(samples, f"{duration}_count", route="/fn") == 7 * times
    assert value(samples, f"{duration}_count", route="-") == 1 * times
    assert value(samples, f"{duration}_bucket", route="/fn", le="+Inf") == 7 * times
    first = f"{P}_upstream_first_byte_seconds"
    assert value(samples, f"{first}_count", route="/fn") == 7 * times  # every answer began
    assert value(samples, f"{first}_count", route="-") == 0  # nothing went upstream
    assert value(samples, f"{first}_sum", route="/fn") <= value(
        samples, f"{duration}_sum", route="/fn"
    )
    assert value(samples, f"{P}_requests_in_flight") == 0  # the scrape itself is not counted


@pytest.fixture
def fn(fake: FakeFunctionUrl) -> dict[str, Any]:
    return route("/fn", fake.url)


async def test_exact_counts_after_a_known_mix(proxy: RunningProxy) -> None:
    await known_mix(proxy.client, proxy.url)
    assert_known_mix(await scrape(proxy.client, proxy.url))
    await known_mix(proxy.client, proxy.url)
    assert_known_mix(await scrape(proxy.client, proxy.url), times=2)


async def test_every_listed_metric_is_exposed_before_any_request(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/_proxy/metrics") as response:
        families = {family.name for family in text_string_to_metric_families(await response.text())}
    expected = {
        "requests", "request_duration_seconds", "upstream_first_byte_seconds", "errors",
        "request_body_bytes", "response_body_bytes", "requests_in_flight",
        "credentials_expiry_timestamp_seconds", "credentials_expire_in_seconds",
        "credential_refresh_failures", "clock_offset_seconds", "upstream_retries",
    }  # fmt: skip
    assert {f"{P}_{name}" for name in expected} <= families


@pytest.mark.slow
async def test_in_flight_counts_requests_being_served(proxy: RunningProxy) -> None:
    slow = asyncio.create_task(raw_exchange(
        int(proxy.url.rsplit(":", 1)[1]),
        b"GET /fn/slow-headers/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ))  # fmt: skip
    try:
        for _ in range(100):  # until the slow request has arrived
            samples = await scrape(proxy.client, proxy.url)
            if value(samples, f"{P}_requests_in_flight") == 1:
                break
            await asyncio.sleep(0.02)
        assert value(samples, f"{P}_requests_in_flight") == 1
    finally:
        assert (await slow).startswith(b"HTTP/1.1 200")
    assert value(await scrape(proxy.client, proxy.url), f"{P}_requests_in_flight") == 0


@pytest.mark.slow
async def test_credentials_expiry_and_refresh_failures(
    fake: FakeFunctionUrl, fn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeContainerCredentials(fake, lifetime=3600) as endpoint:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", endpoint.TOKEN)
        async with running_proxy(routes=[fn]) as proxy:
            samples = await scrape(proxy.client, proxy.url)
            expires_at = endpoint.issued[-1].expires_at
    identity = {"identity": "default"}
    assert value(samples, f"{P}_credentials_expiry_timestamp_seconds", **identity) == pytest.approx(
        expires_at, abs=1
    )
    left = value(samples, f"{P}_credentials_expire_in_seconds", **identity)
    assert 3500 < left <= 3600
    assert value(samples, f"{P}_credential_refresh_failures_total", **identity) == 0

    async with FakeContainerCredentials(fake) as endpoint:
        endpoint.down = True  # the source fails: the first resolution, then each retry
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
        async with running_proxy(routes=[fn]) as proxy:
            failures = 0.0
            for _ in range(100):
                samples = await scrape(proxy.client, proxy.url)
                failures = value(samples, f"{P}_credential_refresh_failures_total", **identity)
                if failures:
                    break
                await asyncio.sleep(0.05)
    assert failures >= 1
    assert (f"{P}_credentials_expire_in_seconds", frozenset(identity.items())) not in samples


async def test_static_keys_have_no_expiry(proxy: RunningProxy) -> None:
    samples = await scrape(proxy.client, proxy.url)
    assert not [name for name, _ in samples if name.startswith(f"{P}_credentials_exp")]


async def test_metrics_are_a_reserved_path_like_the_others(
    fake: FakeFunctionUrl, fn: dict[str, Any], aws_keys: None
) -> None:
    """With access_token, a scrape needs the token, as /_proxy/ready does; the refusal is
    counted like any refused request."""
    async with running_proxy(routes=[fn], access_token="s3cret-token") as proxy:
        async with proxy.client.get(proxy.url + "/_proxy/metrics") as response:
            assert response.status == 401
            assert "lambda_url_proxy" not in await response.text()
        headers = {"X-Proxy-Token": "s3cret-token"}
        async with proxy.client.get(proxy.url + "/_proxy/metrics", headers=headers) as response:
            assert response.status == 200
            samples = parse(await response.text())
    assert value(samples, f"{P}_errors_total", route="-", code="unauthorized") == 1


@pytest.mark.slow
async def test_with_two_workers_the_figures_are_the_whole_servers(
    fake: FakeFunctionUrl, spawn_proxy: Any, tmp_path: Path
) -> None:
    """Through the installed command: each request on a new connection, so the kernel spreads
    them over both workers; every scrape, whichever worker answers it, shows all of them."""
    proxy = await asyncio.to_thread(
        spawn_proxy,
        "--route", f"/fn={fake.url}", "--region", "us-east-1",
        "--workers", "2", "--admin-listen", "127.0.0.1:0",
        env={**KEYS, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    (made,) = await asyncio.to_thread(os.listdir, tmp_path)  # the workers' files are there
    metrics_dir = tmp_path / made
    admin = next(
        int(match[1])
        for line in proxy.lines
        if (match := re.search(r"admin listener on http://127\.0\.0\.1:(\d+)", line))
    )
    async with ClientSession(connector=TCPConnector(force_close=True)) as session:
        pids = set()
        for _ in range(20):
            async with session.get(proxy.url + "/_proxy/health") as response:
                pids.add((await response.json())["pid"])
        assert len(pids) == 2  # both workers answer
        await known_mix(session, proxy.url)
        for _ in range(100):  # until each worker has published its figures since (each second)
            counted = await scrape(session, proxy.url)
            if sum(v for (name, _), v in counted.items() if name == f"{P}_requests_total") == 8:
                break
            await asyncio.sleep(PUBLISH_INTERVAL / 10)
        for url in [proxy.url] * 10 + [f"http://127.0.0.1:{admin}"] * 4:
            assert_known_mix(await scrape(session, url))
    assert await asyncio.to_thread(proxy.stop) == 0
    assert not await asyncio.to_thread(metrics_dir.exists)  # removed at exit


async def test_the_readmes_table_is_every_metric_with_its_type_and_labels(
    proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(lambda_url_proxy_\w+)` \| (\w+) \|\s*([\w, ]*?)\s*\|", readme, re.M)
    table = {
        name: (kind, frozenset(filter(None, labels.split(", ")))) for name, kind, labels in rows
    }
    await known_mix(proxy.client, proxy.url)
    async with proxy.client.get(proxy.url + "/_proxy/metrics") as response:
        families = list(text_string_to_metric_families(await response.text()))
    exposed = {}
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        exposed[name] = (family.type, frozenset(labels))
    # The credentials' expiry has no sample for static keys: its labels are the table's word.
    for name in (f"{P}_credentials_expiry_timestamp_seconds", f"{P}_credentials_expire_in_seconds"):
        assert exposed[name] == ("gauge", frozenset())
        exposed[name] = ("gauge", frozenset({"identity"}))
    for name in (f"{P}_credential_refresh_failures_total", f"{P}_upstream_retries_total"):
        exposed[name] = (exposed[name][0], table[name][1])  # no sample until the first one
    assert table == exposed


async def test_an_identity_a_reload_let_go_leaves_no_expiry_behind(
    fake: FakeFunctionUrl, fn: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "aws-config").write_text(
        "[profile dev]\naws_access_key_id = AKIADEV0000000000001\n"
        "aws_secret_access_key = dev/secret\nregion = us-east-1\n"
    )
    expiring = f"{P}_credentials_expire_in_seconds"
    async with FakeContainerCredentials(fake, lifetime=3600) as endpoint:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", endpoint.TOKEN)
        async with running_proxy(routes=[fn]) as proxy:
            assert value(await scrape(proxy.client, proxy.url), expiring, identity="default") > 0
            live = proxy.app[LIVE]
            live.replace(ProxyState.build(load_settings({"routes": [fn], "profile": "dev"})))
            samples = await scrape(proxy.client, proxy.url)
    assert not [name for name, _ in samples if name == expiring]


def test_without_a_temporary_directory_workers_say_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only root filesystem (a pod's) and no TMPDIR: a message, not a traceback."""

    def read_only(*args: Any, **kwargs: Any) -> str:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)  # as proxy/workers.py calls it
    settings = load_settings(
        {"routes": [route("/fn", "http://127.0.0.1:9")], "workers": 2, "port": 0}
    )
    with pytest.raises(ConfigError) as raised:
        workers.supervise(settings, {}, None)
    message = str(raised.value)
    assert message.startswith("workers = 2: the workers share their metrics through a temporary")
    assert "set TMPDIR to a writable folder (in Kubernetes, an emptyDir volume" in message


def test_the_buckets_are_the_readmes() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "buckets run from 5 ms to 900 s (Lambda's longest timeout)" in readme
    assert (BUCKETS[0], BUCKETS[-1]) == (0.005, 900)
    assert list(BUCKETS) == sorted(BUCKETS)


# --- Fed by the request path's neighbours, read at each scrape ---------------------------------


async def test_the_clock_offset_by_host_and_a_clock_skew_retry(aws_keys: None) -> None:
    """AWS's clock 10 minutes ahead (proxy/skew.py's estimate): the first request is refused
    for its time and sent once more, the second is signed by AWS's clock from the start."""
    async with FakeFunctionUrl(clock=lambda: time.time() + 600) as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
            before = await scrape(proxy.client, proxy.url)
            for _ in range(2):
                async with proxy.client.get(proxy.url + "/fn/x") as response:
                    assert response.status == 200
            samples = await scrape(proxy.client, proxy.url)
    offset = f"{P}_clock_offset_seconds"
    assert not [name for name, _ in before if name == offset]  # nothing measured yet
    assert abs(value(samples, offset, host="127.0.0.1") - 600) < 2
    assert value(samples, f"{P}_upstream_retries_total", reason="clock_skew") == 1
    assert [r.verified for r in fake.received] == [False, True, True]


async def test_a_credentials_rejected_retry_is_counted(
    fake: FakeFunctionUrl, tmp_path: Path
) -> None:
    """The profile's keys replaced while the proxy runs: AWS rejects the old ones, the chain is
    resolved afresh and the request sent once more (proxy/review.py)."""
    old, new = ("AKIAOLDKEY0000000001", "old/secret"), ("AKIANEWKEY0000000001", "new/secret")
    credentials = tmp_path / "aws-credentials"  # conftest's AWS_SHARED_CREDENTIALS_FILE
    profile = "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n"
    credentials.write_text(profile.format(*old))
    fake.keys[old[0]] = KeyRecord(old[1], expires_at=time.time() - 1)
    fake.keys[new[0]] = KeyRecord(new[1])
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        credentials.write_text(profile.format(*new))
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 200
        samples = await scrape(proxy.client, proxy.url)
    retries = f"{P}_upstream_retries_total"
    assert value(samples, retries, reason="credentials_rejected") == 1
    assert sum(v for (name, _), v in samples.items() if name == retries) == 1


async def test_a_connect_retry_is_counted_for_an_idempotent_request_only(aws_keys: None) -> None:
    """A connection that could not be made is tried once more for a GET, never for a POST."""
    with refusing_port() as port:
        async with running_proxy(routes=[route("/fn", f"http://127.0.0.1:{port}")]) as proxy:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 502
            async with proxy.client.post(proxy.url + "/fn/x", data=b"once") as response:
                assert response.status == 502
            samples = await scrape(proxy.client, proxy.url)
    assert value(samples, f"{P}_upstream_retries_total", reason="connect") == 1

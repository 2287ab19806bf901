"""Identities per route: profiles, assumed roles, container credentials; rotation, failure and
recovery; errors that say what to do."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from proxy.cli import build_parser
from proxy.credentials import Identity, default_session_name
from proxy.lifetime import LIVE
from proxy.settings import ConfigError, load_settings
from proxy.state import ProxyState
from tests.conftest import AKID, SECRET, RunningProxy, route, running_proxy, spawn
from tests.fake_credential_sources import CALLER_ARN, FakeContainerCredentials, FakeSts
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

BILLING = "arn:aws:iam::210987654321:role/invoke-billing"
ORDERS = "arn:aws:iam::345678901234:role/invoke-orders"


def identities(proxy: RunningProxy) -> list[Identity]:
    return list(proxy.app[LIVE].state.identities.values())


def access_key_of(headers: list[tuple[str, str]]) -> str:
    authorization = next(v for k, v in headers if k.lower() == "authorization")
    match = re.search(r"Credential=([^/]+)/", authorization)
    assert match
    return match.group(1)


async def get(proxy: RunningProxy, path: str) -> tuple[int, dict[str, Any]]:
    async with proxy.client.get(proxy.url + path) as response:
        return response.status, await response.json()


@pytest_asyncio.fixture
async def sts(
    fake: FakeFunctionUrl, aws_keys: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeSts]:
    async with FakeSts(fake) as service:
        service.keys[AKID] = KeyRecord(SECRET)  # the base identity may call STS
        service.trust = {BILLING: {AKID}, ORDERS: {AKID}}
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", service.url)
        yield service


@pytest_asyncio.fixture
async def container(
    fake: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FakeContainerCredentials]:
    async with FakeContainerCredentials(fake, lifetime=3600) as endpoint:
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url)
        monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", endpoint.TOKEN)
        yield endpoint


# --- who signs ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_each_route_reaches_its_function_as_its_own_role(
    fake: FakeFunctionUrl, sts: FakeSts
) -> None:
    routes = [
        route("/billing", fake.url, role_arn=BILLING),
        route("/orders", fake.url, role_arn=ORDERS),
        route("/billing-reports", fake.url, role_arn=BILLING),
    ]
    async with running_proxy(routes=routes) as proxy:
        assert len(identities(proxy)) == 2  # equal identities share one provider
        role_of = {issued.access_key: issued.role_arn for issued in sts.issued}
        for prefix, role in [
            ("/billing", BILLING),
            ("/orders", ORDERS),
            ("/billing-reports", BILLING),
        ]:
            status, _ = await get(proxy, prefix + "/x")
            assert status == 200
            assert role_of[access_key_of(fake.received[-1].headers)] == role
    assert len(sts.issued) == 2  # one AssumeRole per identity, not per route or request
    assert all(issued.caller == AKID for issued in sts.issued)


async def test_assume_role_options_reach_sts(fake: FakeFunctionUrl, sts: FakeSts) -> None:
    routes = [
        route(
            "/a",
            fake.url,
            role_arn=BILLING,
            external_id="ext-123",
            role_session_name="my-session",
            duration_seconds=1800,
        ),
        route("/b", fake.url, role_arn=ORDERS),
    ]
    async with running_proxy(routes=routes):
        pass
    by_role = {issued.role_arn: issued for issued in sts.issued}
    assert by_role[BILLING].external_id == "ext-123"
    assert by_role[BILLING].session_name == "my-session"
    assert by_role[ORDERS].session_name == default_session_name()
    assert default_session_name().startswith("lambda-url-proxy-")
    assert len(default_session_name()) <= 64


async def test_top_level_identity_is_the_default_for_routes_naming_none(
    fake: FakeFunctionUrl, sts: FakeSts
) -> None:
    routes = [route("/default", fake.url), route("/orders", fake.url, role_arn=ORDERS)]
    async with running_proxy(routes=routes, role_arn=BILLING) as proxy:
        names = sorted(identity.name for identity in identities(proxy))
        await get(proxy, "/default/x")
        key = access_key_of(fake.received[-1].headers)
    assert names == [f"default -> role {BILLING}", f"default -> role {ORDERS}"]
    assert {i.access_key: i.role_arn for i in sts.issued}[key] == BILLING


async def test_a_named_profile(
    fake: FakeFunctionUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "aws-credentials").write_text(
        f"[billing-dev]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
    )
    async with running_proxy(routes=[route("/b", fake.url, profile="billing-dev")]) as proxy:
        status, _ = await get(proxy, "/b/x")
        identity = identities(proxy)[0]
    assert status == 200
    assert identity.name == "profile billing-dev"
    assert identity.source == "shared-credentials-file"


@pytest.mark.slow
async def test_a_source_profile_role_chain_from_the_config_file(
    fake: FakeFunctionUrl, sts: FakeSts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route names only a profile; the AWS config file makes it a role assumed from another.
    (tmp_path / "aws-credentials").write_text(
        f"[base]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
    )
    (tmp_path / "aws-config").write_text(
        f"[profile billing-dev]\nrole_arn = {BILLING}\nsource_profile = base\nregion = us-east-1\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with running_proxy(routes=[route("/b", fake.url, profile="billing-dev")]) as proxy:
        status, _ = await get(proxy, "/b/x")
        (identity,) = identities(proxy)
    assert status == 200
    assert identity.source == "assume-role"
    assert [(i.role_arn, i.caller) for i in sts.issued] == [(BILLING, AKID)]
    assert access_key_of(fake.received[-1].headers) == sts.issued[0].access_key


async def test_container_credentials(
    fake: FakeFunctionUrl, container: FakeContainerCredentials
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        status, _ = await get(proxy, "/fn/x")
        async with proxy.client.get(proxy.url + "/_proxy/ready") as response:
            ready = await response.json()
    assert status == 200
    assert access_key_of(fake.received[-1].headers) == container.issued[-1].access_key
    assert ready["identities"][0]["source"] == "container-role"
    assert str(ready["identities"][0]["expires_at"]).startswith(time.strftime("%Y-"))


# --- rotation, the event loop, failure and recovery -------------------------------------------


@pytest.mark.slow
async def test_rotation_across_many_assumed_role_keys(fake: FakeFunctionUrl, sts: FakeSts) -> None:
    # Keys that live 4 s are usable for 3 (EXPIRY_MARGIN): a refresh (botocore's AssumeRole in a
    # thread) has that long to land even on a loaded CI machine; 2.5 s once left it too little.
    sts.issuer.lifetime = 4.0
    async with running_proxy(routes=[route("/fn", fake.url, role_arn=BILLING)]) as proxy:
        statuses = []
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            async with proxy.client.get(proxy.url + "/fn/tick") as response:
                statuses.append(response.status)
            await asyncio.sleep(0.02)
    assert set(statuses) == {200}
    used = {access_key_of(r.headers) for r in fake.received}
    assert len(used) >= 4
    assert all(r.verified for r in fake.received)  # the fake refuses an expired key


@pytest.mark.slow
async def test_a_slow_credentials_endpoint_never_stalls_a_stream(
    fake: FakeFunctionUrl, container: FakeContainerCredentials
) -> None:
    # botocore gives the container endpoint 2 s; 1.8 s keeps every refresh just inside it.
    container.issuer.lifetime = 4.0
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        container.delay = 1.8
        calls_before = container.calls
        arrivals: list[float] = []
        async with proxy.client.get(proxy.url + "/fn/slow-stream/175/0.02") as response:
            async for _ in response.content.iter_any():
                arrivals.append(time.monotonic())
    assert container.calls - calls_before >= 1  # a refresh ran while the stream flowed
    worst = max(b - a for a, b in itertools.pairwise(arrivals))
    print(f"longest gap between chunks: {worst * 1000:.1f} ms over {len(arrivals)} chunks")
    assert worst < 0.1, f"the stream stalled for {worst:.3f} s"


@pytest.mark.slow
async def test_source_goes_away_and_comes_back(
    fake: FakeFunctionUrl,
    container: FakeContainerCredentials,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="proxy.credentials")
    container.issuer.lifetime = 4.0
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        container.down = True
        expiry = container.issued[-1].expires_at
        outcomes: list[tuple[float, int, str]] = []
        deadline = time.monotonic() + 20.0
        recovered = False
        while time.monotonic() < deadline and not recovered:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                body = await response.text()
                outcomes.append((time.time(), response.status, body))
            if response.status == 503 and "the last refresh failed" in body:
                container.down = False  # the source comes back once the failure is reported
            recovered = response.status == 200 and not container.down
            await asyncio.sleep(0.05)
    before = [status for at, status, _ in outcomes if at < expiry - 1.5]
    assert before and set(before) == {200}  # cached keys kept working while they were valid
    failed = [(at, body) for at, status, body in outcomes if status == 503]
    assert failed, "never failed although the keys expired"
    assert all(at >= expiry - 1.0 - 0.05 for at, _ in failed)  # only once truly (nearly) expired
    messages = [json.loads(body)["message"] for _, body in failed]
    assert all("have expired" in message for message in messages)
    # While the failing refresh is still retrying it says so; once it fails, it says why.
    assert any("the last refresh failed" in m and "500" in m for m in messages), messages[-1]
    assert recovered, "did not recover by itself"
    warnings = [
        r
        for r in caplog.records
        if r.name == "proxy.credentials" and "unavailable" in r.getMessage()
    ]
    assert len(warnings) == 1  # logged once per failure streak, not per retry


# --- errors that tell the user what to do ------------------------------------------------------


async def test_assume_role_denied_names_the_role_and_the_caller(
    fake: FakeFunctionUrl, sts: FakeSts
) -> None:
    sts.trust = {}
    async with running_proxy(routes=[route("/fn", fake.url, role_arn=BILLING)]) as proxy:
        status, body = await get(proxy, "/fn/x")
        ready_status, ready = await get(proxy, "/_proxy/ready")
    assert status == 503 and body["error"] == "credentials_unavailable"
    message = body["message"]
    assert f"AssumeRole into {BILLING} failed" in message
    assert "default (env, AKIA...0001)" in message  # the caller, masked
    assert CALLER_ARN in message and "AccessDenied" in message
    assert "trust policy" in message
    assert ready_status == 503
    assert ready["identities"][0]["role_arn"] == BILLING
    assert "AssumeRole" in ready["identities"][0]["last_refresh_error"]
    assert SECRET not in json.dumps(ready) + json.dumps(body)


def test_unknown_route_profile_stops_start_up_listing_the_profiles(
    fake: FakeFunctionUrl, tmp_path: Path
) -> None:
    (tmp_path / "aws-config").write_text("[profile dev]\nregion = us-east-1\n[profile prod]\n")
    with pytest.raises(ConfigError) as refused:
        ProxyState.build(load_settings({"routes": [route("/fn", fake.url, profile="staging")]}))
    assert "route '/fn': profile 'staging' (from route /fn) is not in the AWS config files" in str(
        refused.value
    )
    assert "profiles there: dev, prod" in str(refused.value)


async def test_expired_sso_session_says_how_to_log_in(
    fake: FakeFunctionUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_url = "https://example.awsapps.com/start"
    (tmp_path / "aws-config").write_text(
        f"[profile sso-dev]\nsso_start_url = {start_url}\nsso_region = us-east-1\n"
        "sso_account_id = 123456789012\nsso_role_name = Developer\n"
    )
    cache = tmp_path / ".aws" / "sso" / "cache"
    cache.mkdir(parents=True)
    # botocore names the token cache file after the SHA-1 of the start URL (not a security use).
    token_file = hashlib.sha1(start_url.encode(), usedforsecurity=False).hexdigest()
    (cache / f"{token_file}.json").write_text(
        json.dumps(
            {
                "startUrl": start_url,
                "region": "us-east-1",
                "accessToken": "stale",
                "expiresAt": "2020-01-01T00:00:00Z",
            }
        )
    )
    monkeypatch.setenv("HOME", str(tmp_path))

    async def unauthorized(request: web.Request) -> web.Response:  # the SSO portal's answer
        return web.json_response(
            {"message": "Session token not found or invalid"},
            status=401,
            headers={"x-amzn-ErrorType": "UnauthorizedException"},
        )

    portal = web.Application()
    portal.router.add_route("*", "/{tail:.*}", unauthorized)
    runner = web.AppRunner(portal)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSO", f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        async with running_proxy(routes=[route("/fn", fake.url, profile="sso-dev")]) as proxy:
            status, body = await get(proxy, "/fn/x")
    finally:
        await runner.cleanup()
    assert status == 503
    assert "run `aws sso login --profile sso-dev`" in body["message"]


# --- the command line --------------------------------------------------------------------------


def test_route_flag_carries_route_options() -> None:
    args = build_parser().parse_args(
        [
            "--route",
            f"/b=https://x.example/v1,profile=dev,role_arn={BILLING},timeout=30,strip_prefix=false",
        ]
    )
    settings = load_settings({"routes": args.routes, "region": "us-east-1"})
    (billing,) = settings.routes
    assert (billing.url, billing.profile, billing.role_arn) == (
        "https://x.example/v1",
        "dev",
        BILLING,
    )
    assert (billing.timeout, billing.strip_prefix) == (30.0, False)


@pytest.mark.slow
async def test_check_prints_the_table_and_exits_0_when_all_are_usable(
    fake: FakeFunctionUrl, sts: FakeSts
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "lambda-url-proxy",
            "check",
            "--region",
            "us-east-1",
            "--route",
            f"/billing={fake.url},role_arn={BILLING}",
            "--route",
            f"/plain={fake.url}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ROUTE", "URL", "REGION", "IDENTITY", "CREDENTIALS"]
    billing = next(line for line in lines if line.startswith("/billing"))
    assert f"role {BILLING} [account 210987654321]" in billing and "OK (assume-role" in billing
    assert "2 of 2 routes have usable credentials" in result.stdout
    everything = result.stdout + result.stderr
    assert SECRET not in everything and AKID not in everything
    assert not any(
        issued.secret_key in everything or issued.token in everything for issued in sts.issued
    )


@pytest.mark.slow
async def test_check_exits_1_and_says_why(fake: FakeFunctionUrl, sts: FakeSts) -> None:
    sts.trust = {}
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "lambda-url-proxy",
            "--check",
            "--region",
            "us-east-1",
            "--route",
            f"/billing={fake.url},role_arn={BILLING}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "FAILED: AssumeRole into" in result.stdout
    assert "0 of 1 routes have usable credentials" in result.stdout


@pytest.mark.slow
async def test_start_up_shows_each_routes_identity_and_account(
    fake: FakeFunctionUrl, sts: FakeSts
) -> None:
    proxy = await asyncio.to_thread(
        spawn,
        [
            "lambda-url-proxy",
            "--port",
            "0",
            "--region",
            "us-east-1",
            "--route",
            f"/billing={fake.url},role_arn={BILLING}",
        ],
    )
    proxy.stop()
    text = "".join(proxy.lines)
    assert (
        f"route /billing -> {fake.url} (region us-east-1 from --region, identity default -> "
        f"role {BILLING}, "
        "account 210987654321, assume-role, ASIA...0001)"
    ) in text

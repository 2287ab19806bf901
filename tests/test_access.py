"""Who may use the proxy: a shared token, an allow-list of client networks."""

from __future__ import annotations

import asyncio

import pytest
from yarl import URL

from proxy.settings import ConfigError, load_settings
from tests.conftest import AKID, SECRET, RunningProxy, route, running_proxy, spawn
from tests.fake_function_url import FakeFunctionUrl

TOKEN = "s3cr3t-proxy-token"


async def test_a_token_is_required_when_set(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], access_token=TOKEN) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 401
            assert response.headers["X-Proxy-Error"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "X-Proxy-Token" in (await response.json())["message"]
        async with proxy.client.get(
            proxy.url + "/fn/x", headers={"X-Proxy-Token": "wrong"}
        ) as response:
            assert response.status == 401
        assert fake.received == []
        async with proxy.client.get(
            proxy.url + "/fn/a", headers={"X-Proxy-Token": TOKEN}
        ) as response:
            assert response.status == 200
        async with proxy.client.get(
            proxy.url + "/fn/b", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200
        async with proxy.client.get(proxy.url + "/_proxy/health") as response:
            assert response.status == 200  # orchestrators' health checks carry no token
        async with proxy.client.get(proxy.url + "/_proxy/routes") as response:
            assert response.status == 401
    for received in fake.received:  # the token never travels upstream
        names = {name.lower() for name, _ in received.headers}
        assert "x-proxy-token" not in names
        assert TOKEN not in str(received.headers)
    assert TOKEN not in caplog.text


async def test_only_allowed_networks(fake: FakeFunctionUrl, aws_keys: None) -> None:
    async with running_proxy(
        routes=[route("/fn", fake.url)], allowed_clients=["10.0.0.0/8", "192.168.0.0/16"]
    ) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 403
            assert response.headers["X-Proxy-Error"] == "client_not_allowed"
            assert "127.0.0.1" in (await response.json())["message"]
    async with running_proxy(
        routes=[route("/fn", fake.url)], allowed_clients=["127.0.0.0/8"]
    ) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 200
    assert len(fake.received) == 1


def test_bad_network_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"allowed_clients\[0\]"):
        load_settings({"routes": [route("/a", "https://x.example")], "allowed_clients": ["lan"]})


def test_the_token_never_shows_in_settings() -> None:
    settings = load_settings({"routes": [route("/a", "https://x.example")], "access_token": TOKEN})
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


@pytest.mark.slow
async def test_a_restricted_wide_bind_does_not_raise_the_alarm(fake: FakeFunctionUrl) -> None:
    proxy = await asyncio.to_thread(
        spawn,
        [
            "lambda-url-proxy",
            "--port",
            "0",
            "--host",
            "0.0.0.0",
            "--route",
            f"/fn={fake.url}",
            "--region",
            "us-east-1",
            "--allowed-client",
            "127.0.0.0/8",
        ],
        {
            "AWS_ACCESS_KEY_ID": AKID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "LAMBDA_URL_PROXY_ACCESS_TOKEN": TOKEN,
        },
    )
    proxy.stop()
    text = "".join(proxy.lines)
    assert "listening on http://0.0.0.0:" in text
    assert "anyone who can reach this port" not in text
    assert TOKEN not in text


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("127.0.0.1", True),
        ("127.0.0.2:9", True),
        ("[::1]:8080", True),
        ("app.localhost:5173", True),
        ("evil.example:8080", False),  # a name re-pointed at 127.0.0.1: DNS rebinding
        ("evil.example", False),
        ("192.168.1.20:8080", False),
        ("localhost.evil.example", False),
    ],
)
async def test_on_loopback_only_loopback_names_are_answered(
    proxy: RunningProxy, fake: FakeFunctionUrl, host: str, allowed: bool
) -> None:
    # Same-origin GETs after DNS rebinding carry no Origin: the Host is what tells them apart.
    async with proxy.client.get(proxy.url + "/fn/x", headers={"Host": host}) as response:
        if allowed:
            assert response.status == 200
        else:
            assert response.status == 403
            assert response.headers["X-Proxy-Error"] == "host_not_allowed"
    assert len(fake.received) == (1 if allowed else 0)


async def test_a_wide_bind_does_not_check_the_host(fake: FakeFunctionUrl, aws_keys: None) -> None:
    # In a container the proxy is called by a service name; token and networks guard it there.
    async with running_proxy(routes=[route("/fn", fake.url)], host="0.0.0.0") as proxy:
        port = URL(proxy.url).port
        async with proxy.client.get(
            f"http://127.0.0.1:{port}/fn/x", headers={"Host": "lambda-url-proxy:8080"}
        ) as response:
            assert response.status == 200

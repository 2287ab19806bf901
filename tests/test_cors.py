"""CORS for pages calling the proxy directly, and refusal of pages from remote websites."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from proxy.settings import ConfigError, load_settings
from tests.conftest import RunningProxy, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl

PAGE = "http://localhost:5173"


@pytest_asyncio.fixture
async def cors_proxy(fake: FakeFunctionUrl, aws_keys: None) -> AsyncIterator[RunningProxy]:
    async with running_proxy(routes=[route("/fn", fake.url)], cors_origins=[PAGE]) as proxy:
        yield proxy


def preflight_headers(origin: str = PAGE) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type, x-custom",
    }


async def test_preflight_is_answered_by_the_proxy(
    cors_proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with cors_proxy.client.options(
        cors_proxy.url + "/fn/items", headers=preflight_headers()
    ) as response:
        assert response.status == 204
        headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == PAGE
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "PUT" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "content-type, x-custom"
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in headers["Vary"]
    assert fake.received == []  # an unsigned preflight would never pass AWS_IAM auth anyway


async def test_proxied_answer_gets_the_proxys_cors_headers_only(
    cors_proxy: RunningProxy,
) -> None:
    async with cors_proxy.client.get(
        cors_proxy.url + "/fn/cors", headers={"Origin": PAGE}
    ) as response:
        assert response.status == 200
        assert response.headers.getall("Access-Control-Allow-Origin") == [PAGE]
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        exposed = response.headers["Access-Control-Expose-Headers"].lower()
        assert response.headers["x-from-function"] == "yes"
    assert "x-amzn-requestid" in exposed and "x-from-function" in exposed
    assert "Origin" in response.headers.getall("Vary")


async def test_the_proxys_own_errors_are_readable_by_the_page(cors_proxy: RunningProxy) -> None:
    async with cors_proxy.client.get(
        cors_proxy.url + "/nowhere", headers={"Origin": PAGE}
    ) as response:
        assert response.status == 404
        assert response.headers["Access-Control-Allow-Origin"] == PAGE
        assert "X-Proxy-Error" in response.headers["Access-Control-Expose-Headers"]


async def test_preflight_from_an_origin_not_listed_is_refused(
    cors_proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with cors_proxy.client.options(
        cors_proxy.url + "/fn/x", headers=preflight_headers("http://localhost:3000")
    ) as response:
        assert response.status == 403
        assert response.headers["X-Proxy-Error"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in response.headers
        assert "cors_origins" in (await response.json())["message"]
    assert fake.received == []


async def test_star_allows_any_origin_on_this_machine_only(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], cors_origins=["*"]) as proxy:
        for origin in ("http://localhost:3000", "http://127.0.0.1:8000", "http://[::1]:5173"):
            async with proxy.client.options(
                proxy.url + "/fn/x", headers=preflight_headers(origin)
            ) as response:
                assert response.status == 204, origin
                assert response.headers["Access-Control-Allow-Origin"] == origin
        async with proxy.client.options(
            proxy.url + "/fn/x", headers=preflight_headers("https://localhost.evil.example")
        ) as response:
            assert response.status == 403


async def test_cors_is_off_by_default(proxy: RunningProxy, fake: FakeFunctionUrl) -> None:
    async with proxy.client.options(proxy.url + "/fn/x", headers=preflight_headers()) as response:
        assert response.status == 200  # forwarded: the function answers its own OPTIONS
    assert fake.received[-1].method == "OPTIONS"
    async with proxy.client.get(proxy.url + "/fn/cors", headers={"Origin": PAGE}) as response:
        # The function's own CORS headers pass through untouched.
        assert response.headers.getall("Access-Control-Allow-Origin") == ["*"]


@pytest.mark.parametrize("origin", ["https://evil.example", "http://192.168.1.20:5173", "null"])
async def test_pages_from_remote_websites_are_refused(
    proxy: RunningProxy, fake: FakeFunctionUrl, origin: str
) -> None:
    # A simple form POST needs no preflight: without this check any website could make the
    # developer's browser send signed requests through the proxy.
    async with proxy.client.post(
        proxy.url + "/fn/delete-everything", data=b"x=1", headers={"Origin": origin}
    ) as response:
        assert response.status == 403
        assert response.headers["X-Proxy-Error"] == "origin_not_allowed"
    assert fake.received == []


async def test_a_remote_origin_can_be_allowed_explicitly(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    origin = "http://192.168.1.20:5173"
    async with running_proxy(routes=[route("/fn", fake.url)], cors_origins=[origin]) as proxy:
        async with proxy.client.post(
            proxy.url + "/fn/x", data=b"x=1", headers={"Origin": origin}
        ) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("origin", ["localhost:5173", "http://localhost:5173/app", "ftp://x"])
def test_bad_origins_are_configuration_errors(origin: str) -> None:
    with pytest.raises(ConfigError, match="cors origin"):
        load_settings({"routes": [route("/a", "https://x.example")], "cors_origins": [origin]})


async def test_a_preflight_is_logged_as_routine_with_its_status(
    cors_proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with cors_proxy.client.options(cors_proxy.url + "/fn/x", headers=preflight_headers()):
        pass
    record = [r for r in caplog.records if r.name == "proxy.access"][-1]
    assert record.levelname == "INFO"
    assert record.fields["status"] == 204  # type: ignore[attr-defined]
    assert record.fields["outcome"] == "cors_preflight"  # type: ignore[attr-defined]


async def test_a_forwarded_preflight_says_how_to_turn_cors_on(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with proxy.client.options(proxy.url + "/fn/x", headers=preflight_headers()):
        pass
    record = [r for r in caplog.records if r.name == "proxy.access"][-1]
    assert record.levelname == "WARNING"
    assert "--cors-origin" in record.getMessage()


async def test_refusals_log_the_bytes_they_sent(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with proxy.client.get(
        proxy.url + "/fn/x", headers={"Origin": "https://evil.example"}
    ) as response:
        size = len(await response.read())
    record = [r for r in caplog.records if r.name == "proxy.access"][-1]
    assert record.fields["bytes"] == size > 0  # type: ignore[attr-defined]

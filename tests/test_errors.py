"""The proxy's own answers: JSON errors with X-Proxy-Error, limits, reserved endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest
from yarl import URL

from proxy import errors
from proxy.settings import MiB
from tests.conftest import (
    ROOT,
    RunningProxy,
    raw_response,
    refusing_port,
    route,
    running_proxy,
)
from tests.fake_function_url import FakeFunctionUrl


async def proxy_error(response: Any, status: int, code: str) -> str:
    assert response.status == status
    assert response.headers["X-Proxy-Error"] == code
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert body["error"] == code
    assert set(body) == {"error", "message"}
    message: str = body["message"]
    return message


def port_of(proxy: RunningProxy) -> int:
    port = URL(proxy.url).port
    assert port is not None
    return port


async def test_no_route_lists_the_prefixes(proxy: RunningProxy, fake: FakeFunctionUrl) -> None:
    async with proxy.client.get(proxy.url + "/nowhere/1") as response:
        message = await proxy_error(response, 404, "no_route")
    assert "/fn" in message
    async with proxy.client.get(proxy.url + "/fnx") as response:
        await proxy_error(response, 404, "no_route")
    assert fake.received == []


async def test_bad_percent_encoding_is_a_bad_request(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with proxy.client.get(URL(proxy.url + "/fn/a%zz", encoded=True)) as response:
        message = await proxy_error(response, 400, "bad_request")
    assert "%zz" in message
    assert fake.received == []


async def test_declared_body_over_the_limit_is_refused_before_reading(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], max_body_size=1000) as proxy:
        # Declares 10 MB but sends none of it: an answer proves the body was never awaited.
        head, body = await raw_response(
            port_of(proxy),
            b"POST /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n",
        )
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"Connection: close" in head
    assert json.loads(body)["error"] == "body_too_large"
    assert fake.received == []


async def test_expect_100_continue_over_the_limit_gets_413_not_100(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], max_body_size=1000) as proxy:
        head, _ = await raw_response(
            port_of(proxy),
            b"PUT /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n",
        )
    assert head.startswith(b"HTTP/1.1 413"), head


async def test_expect_100_continue_within_the_limit(proxy: RunningProxy) -> None:
    async with proxy.client.put(proxy.url + "/fn/x", data=b"y" * 5000, expect100=True) as response:
        assert response.status == 200
        assert (await response.json())["body_length"] == 5000


async def test_chunked_upload_growing_past_the_limit_is_cut_off(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b"z" * 1000

    async with running_proxy(routes=[route("/fn", fake.url)], max_body_size=20_000) as proxy:
        async with proxy.client.post(proxy.url + "/fn/x", data=chunks()) as response:
            message = await proxy_error(response, 413, "body_too_large")
    assert "20000" in message
    assert fake.received == []


async def test_body_at_the_limit_is_forwarded(fake: FakeFunctionUrl, aws_keys: None) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], max_body_size=20_000) as proxy:
        async with proxy.client.post(proxy.url + "/fn/x", data=b"a" * 20_000) as response:
            assert response.status == 200
        async with proxy.client.post(proxy.url + "/fn/x", data=b"a" * 20_001) as response:
            await proxy_error(response, 413, "body_too_large")
    assert [len(r.body) for r in fake.received] == [20_000]


async def test_default_limit_is_six_mib(proxy: RunningProxy, fake: FakeFunctionUrl) -> None:
    async with proxy.client.post(proxy.url + "/fn/x", data=b"a" * (6 * MiB + 1)) as response:
        await proxy_error(response, 413, "body_too_large")
    assert fake.received == []


async def test_upstream_timeout(fake: FakeFunctionUrl, aws_keys: None) -> None:
    async with running_proxy(routes=[route("/fn", fake.url, timeout=0.3)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/slow-headers/3") as response:
            message = await proxy_error(response, 504, "upstream_timeout")
    assert "0.3 s" in message


async def test_upstream_unreachable(aws_keys: None) -> None:
    with refusing_port() as port:
        dead = f"http://127.0.0.1:{port}"
        async with running_proxy(routes=[route("/fn", dead)]) as proxy:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                message = await proxy_error(response, 502, "upstream_unreachable")
    assert dead in message and "cannot connect" in message


async def test_no_credentials_still_starts_and_says_how_to_fix_it(
    fake: FakeFunctionUrl,
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        async with proxy.client.get(proxy.url + "/_proxy/health") as response:
            assert response.status == 200
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            message = await proxy_error(response, 503, "credentials_unavailable")
        async with proxy.client.get(proxy.url + "/_proxy/ready") as response:
            assert response.status == 503
            ready = await response.json()
    assert "no AWS credentials found" in message
    assert "AWS_ACCESS_KEY_ID" in message and "aws sso login" in message
    assert ready["ready"] is False and "no AWS credentials found" in ready["reason"]
    assert fake.received == []


async def test_reserved_endpoints(proxy: RunningProxy, fake: FakeFunctionUrl) -> None:
    from tests.conftest import AKID, SECRET

    async with proxy.client.get(proxy.url + "/_proxy/health") as response:
        assert response.status == 200
    async with proxy.client.get(proxy.url + "/_proxy/ready") as response:
        assert response.status == 200
        ready = await response.text()
    assert json.loads(ready)["ready"] is True
    async with proxy.client.get(proxy.url + "/_proxy/routes") as response:
        table = await response.text()
    assert json.loads(table)["routes"] == [
        {
            "prefix": "/fn",
            "url": fake.url,
            "region": "us-east-1",
            "region_source": "route /fn",
            "service": "lambda",
            "strip_prefix": True,
            "timeout": 60.0,
            "identity": "default",
        }
    ]
    for text in (ready, table):
        assert SECRET not in text and AKID not in text
    async with proxy.client.get(proxy.url + "/_proxy/anything") as response:
        await proxy_error(response, 404, "no_route")
    assert fake.received == []


async def test_reserved_paths_are_never_forwarded_even_with_a_root_route(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/", fake.url)]) as proxy:
        for target in ("/_proxy/x", "/_proxy", "/a/../_proxy/x", "/%5Fproxy/x"):
            async with proxy.client.get(URL(proxy.url + target, encoded=True)) as response:
                assert response.status == 404, target
        async with proxy.client.get(proxy.url + "/anything") as response:
            assert response.status == 200
    assert [r.raw_path for r in fake.received] == ["/anything"]


# --- one order of checks for every request: access, route, credentials, then 413 or 100 ---------

TOKEN = "t0ken-for-the-expect-tests"


def upload_head(path: str, length: int, token: str | None = None) -> bytes:
    """What curl sends before a body over 1 MiB: the head, then it waits for 100 Continue."""
    auth = f"X-Proxy-Token: {token}\r\n" if token else ""
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n{auth}"
        "Expect: 100-continue\r\n\r\n"
    ).encode()


async def first_answer(port: int, head: bytes) -> bytes:
    """The first status line the proxy writes after a head whose body is never sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "length", "token", "status"),
    [
        ("/fn/x", 7 * MiB, None, b"401"),  # over the limit, but unauthorized first
        ("/fn/x", 2 * MiB, None, b"401"),  # within it: 401 before any 100 Continue
        ("/elsewhere", 2 * MiB, TOKEN, b"404"),  # routing before the body
        ("/elsewhere", 7 * MiB, TOKEN, b"404"),
        ("/fn/x", 7 * MiB, TOKEN, b"413"),
        ("/fn/x", 2 * MiB, TOKEN, b"100"),  # every check passed: now the body may come
    ],
)
async def test_expect_100_continue_waits_for_every_check(
    fake: FakeFunctionUrl,
    aws_keys: None,
    caplog: pytest.LogCaptureFixture,
    path: str,
    length: int,
    token: str | None,
    status: bytes,
) -> None:
    caplog.set_level(logging.INFO, "proxy.access")
    async with running_proxy(routes=[route("/fn", fake.url)], access_token=TOKEN) as proxy:
        line = await first_answer(port_of(proxy), upload_head(path, length, token))
        await asyncio.sleep(0.05)
    assert line.startswith(b"HTTP/1.1 " + status), line
    access = [r for r in caplog.records if r.name == "proxy.access"]
    if status != b"100":  # refused early: one access line all the same
        assert len(access) == 1 and f" {status.decode()} " in access[0].getMessage()
    assert fake.received == []


async def test_expect_100_continue_then_the_body_reaches_the_function(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], access_token=TOKEN) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(proxy))
        try:
            writer.write(upload_head("/fn/x", 3000, TOKEN))
            assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
            assert await reader.readline() == b"\r\n"
            writer.write(b"b" * 3000)
            final = await asyncio.wait_for(reader.readline(), 5)
        finally:
            writer.close()
    assert final.startswith(b"HTTP/1.1 200"), final
    assert [len(r.body) for r in fake.received] == [3000]


async def test_an_unknown_expectation_gets_417(proxy: RunningProxy, fake: FakeFunctionUrl) -> None:
    head, body = await raw_response(
        port_of(proxy),
        b"PUT /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Expect: something-else\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 417"), head
    assert json.loads(body)["error"] == "expectation_failed"
    assert fake.received == []


def test_readmes_error_table_lists_every_error_with_its_status() -> None:
    table = dict(
        re.findall(r"^\| `(\w+)` \| (\d{3}) \|", (ROOT / "README.md").read_text(), re.MULTILINE)
    )
    codes = {
        cls.code: str(cls.status)
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.ProxyError)
        and cls is not errors.ProxyError
    }
    assert table == codes

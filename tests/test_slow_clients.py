"""Slow and idle clients: they are cut off in time, and never stop others from being served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from yarl import URL

from tests.conftest import RunningProxy, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl


@pytest_asyncio.fixture
async def strict(fake: FakeFunctionUrl, aws_keys: None) -> AsyncIterator[RunningProxy]:
    async with running_proxy(
        routes=[route("/fn", fake.url)], idle_timeout=1.0, body_timeout=1.0, max_connections=40
    ) as proxy:
        yield proxy


def port_of(proxy: RunningProxy) -> int:
    port = URL(proxy.url).port
    assert port is not None
    return port


@pytest.mark.slow
async def test_a_trickled_request_head_is_cut_off(strict: RunningProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict))

    async def trickle() -> None:  # a byte every 0.1 s: a head that would take 15 s
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 5)  # returns when the proxy closes
    closed_after = time.monotonic() - started
    sender.cancel()
    writer.close()
    assert closed_after < 2.5, f"a slow head held the connection for {closed_after:.1f} s"


@pytest.mark.slow
async def test_a_trickled_body_gets_408(strict: RunningProxy, fake: FakeFunctionUrl) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict))
    writer.write(b"POST /fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nab")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"X-Proxy-Error: request_timeout" in head
    assert fake.received == []


async def test_idle_connections_do_not_delay_a_normal_client(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        idle = [await asyncio.open_connection("127.0.0.1", port_of(proxy)) for _ in range(500)]
        for _, writer in idle[:250]:  # half of them trickle a partial request head
            writer.write(b"GET /fn/x HTTP/1.1\r\nHo")
        started = time.monotonic()
        async with proxy.client.get(proxy.url + "/fn/normal") as response:
            assert response.status == 200
        elapsed = time.monotonic() - started
        for _, writer in idle:
            writer.close()
    assert elapsed < 1.0, f"a normal request took {elapsed:.2f} s beside 500 idle connections"


async def test_connections_beyond_the_cap_get_503(strict: RunningProxy) -> None:
    held = [await asyncio.open_connection("127.0.0.1", port_of(strict)) for _ in range(40)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict))
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer[:200]
    assert json.loads(body)["error"] == "too_many_connections"
    for _, held_writer in held:
        held_writer.close()
    await asyncio.sleep(0.2)
    async with strict.client.get(strict.url + "/fn/after") as response:
        assert response.status == 200  # room again once they are gone

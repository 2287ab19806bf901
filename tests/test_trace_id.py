"""X-Amzn-Trace-Id: the client's passed on, or one made; never signed; in the access log with
the upstream's x-amzn-RequestId."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp import ClientSession

from proxy.trace_id import new_trace_id, trace_ids
from tests.conftest import ProxyProcess
from tests.fake_function_url import FakeFunctionUrl, ReceivedRequest

TRACE_ID = re.compile(r"Root=1-([0-9a-f]{8})-[0-9a-f]{24}")
Started = Callable[..., Coroutine[Any, Any, ProxyProcess]]


def header(received: ReceivedRequest, name: str) -> list[str]:
    return [value for key, value in received.headers if key.lower() == name.lower()]


async def access_record(proxy: ProxyProcess, path: str) -> dict[str, Any]:
    for _ in range(200):  # access lines go out in batches
        for line in list(proxy.lines):
            record: dict[str, Any] = json.loads(line) if line.startswith("{") else {}
            if record.get("path") == path:
                return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"no access line for {path}:\n{''.join(proxy.lines)}")


def test_a_made_id_has_x_rays_format_and_is_unique() -> None:
    now = 1_800_000_000.7
    made = [trace_ids(lambda: now)() for _ in range(3)]  # as three processes make them
    made += [new_trace_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for trace_id in made[:3]:
        match = TRACE_ID.fullmatch(trace_id)
        assert match and int(match[1], 16) == int(now)
    for trace_id in made[3:]:
        match = TRACE_ID.fullmatch(trace_id)
        assert match and abs(int(match[1], 16) - time.time()) < 60


@pytest.mark.slow
async def test_the_clients_trace_id_is_passed_on_unsigned(
    fake: FakeFunctionUrl, started: Started
) -> None:
    proxy = await started("--log-format", "json")
    given = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    async with (
        ClientSession() as session,
        session.get(proxy.url + "/fn/given", headers={"X-Amzn-Trace-Id": given}) as response,
    ):
        assert response.status == 200
        request_id = response.headers["x-amzn-RequestId"]
    received = fake.received[-1]
    assert received.verified
    assert header(received, "X-Amzn-Trace-Id") == [given]  # as it came, once
    (authorization,) = header(received, "Authorization")
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in authorization
    assert "trace" not in authorization.lower()
    record = await access_record(proxy, "/fn/given")
    assert record["trace_id"] == given
    assert record["upstream_request_id"] == request_id


@pytest.mark.slow
async def test_a_trace_id_is_made_when_the_client_sends_none(
    fake: FakeFunctionUrl, started: Started
) -> None:
    proxy = await started("--log-format", "json")
    async with ClientSession() as session:
        for path in ("/fn/first", "/fn/second"):
            async with session.get(proxy.url + path) as response:
                assert response.status == 200
    first, second = fake.received[-2:]
    assert first.verified and second.verified
    made = [header(first, "X-Amzn-Trace-Id")[0], header(second, "X-Amzn-Trace-Id")[0]]
    for trace_id in made:
        match = TRACE_ID.fullmatch(trace_id)
        assert match and abs(int(match[1], 16) - time.time()) < 60
    assert made[0] != made[1]
    assert "trace" not in header(first, "Authorization")[0].lower()
    assert (await access_record(proxy, "/fn/first"))["trace_id"] == made[0]
    assert (await access_record(proxy, "/fn/second"))["trace_id"] == made[1]


@pytest.mark.slow
async def test_the_text_log_shows_the_trace_id(fake: FakeFunctionUrl, started: Started) -> None:
    proxy = await started()
    given = "Root=1-5759e988-bd862e3fe1be46a994272793"
    async with (
        ClientSession() as session,
        session.get(proxy.url + "/fn/text", headers={"X-Amzn-Trace-Id": given}) as response,
    ):
        request_id = response.headers["x-amzn-RequestId"]
    for _ in range(200):
        lines = [line for line in list(proxy.lines) if " /fn/text id=" in line]
        if lines:
            break
        await asyncio.sleep(0.02)
    assert lines and lines[0].rstrip().endswith(f"/fn/text id={request_id} trace={given}")

"""Configuration edits are picked up without a restart; a broken edit changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from proxy.lifetime import LIVE
from proxy.reload import Reloader
from proxy.settings import load_settings
from tests.conftest import AKID, SECRET, ProxyProcess, route, running_proxy, spawn
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

KEYS = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET}


@pytest_asyncio.fixture
async def other() -> AsyncIterator[FakeFunctionUrl]:
    async with FakeFunctionUrl() as function_url:
        function_url.keys[AKID] = KeyRecord(SECRET)
        yield function_url


def write_config(path: Path, *routes: tuple[str, str]) -> None:
    text = 'region = "us-east-1"\n' + "".join(
        f'[[routes]]\nprefix = "{prefix}"\nurl = "{url}"\n' for prefix, url in routes
    )
    path.write_text(text)
    # Editors save within the same second; make every edit visible to the watcher.
    os.utime(path, ns=(time.time_ns(), time.time_ns()))


async def status_of(client: aiohttp.ClientSession, url: str) -> int:
    async with client.get(url) as response:
        await response.read()
        return response.status


async def wait_for_line(proxy: ProxyProcess, text: str, after: int = 0, timeout: float = 8) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proxy.lines[after:]:
            if text in line:
                return line
        await asyncio.sleep(0.05)
    raise AssertionError(f"no line with {text!r}:\n" + "".join(proxy.lines[after:]))


@pytest.mark.slow
async def test_edits_apply_to_new_requests_while_in_flight_ones_finish(
    fake: FakeFunctionUrl, other: FakeFunctionUrl, tmp_path: Path
) -> None:
    config = tmp_path / "proxy.toml"
    write_config(config, ("/a", fake.url))
    proxy = await asyncio.to_thread(
        spawn, ["lambda-url-proxy", "--port", "0", "--config", str(config)], KEYS
    )
    try:
        async with aiohttp.ClientSession() as client:
            assert await status_of(client, proxy.url + "/a/before") == 200
            stream = await client.get(proxy.url + "/a/slow-stream/30/0.1")  # 3 s, in flight
            first = await stream.content.readany()

            mark = len(proxy.lines)
            write_config(config, ("/a", other.url), ("/b", other.url))
            await wait_for_line(proxy, "configuration reloaded", after=mark)

            assert await status_of(client, proxy.url + "/b/new") == 200
            assert await status_of(client, proxy.url + "/a/after") == 200
            rest = await stream.read()  # the old upstream finishes the stream it started
            stream.release()
        assert (first + rest).count(b"tick") == 30
        assert [r.raw_path for r in fake.received] == ["/before", "/slow-stream/30/0.1"]
        assert [r.raw_path for r in other.received] == ["/new", "/after"]
    finally:
        proxy.stop()


@pytest.mark.slow
async def test_a_broken_edit_is_refused_and_the_routes_stay(
    fake: FakeFunctionUrl, tmp_path: Path
) -> None:
    config = tmp_path / "proxy.toml"
    write_config(config, ("/a", fake.url))
    proxy = await asyncio.to_thread(
        spawn, ["lambda-url-proxy", "--port", "0", "--config", str(config)], KEYS
    )
    try:
        async with aiohttp.ClientSession() as client:
            for broken, reason in [
                ("[[routes]\nprefix = \n", "is not valid TOML"),
                (
                    '[[routes]]\nprefix = "/a"\nurl = "ftp://x.example"\n',
                    "must start with https://",
                ),
                (
                    '[server]\nprot = 1\n[[routes]]\nprefix = "/a"\nurl = "http://127.0.0.1:9"\n',
                    "prot: unknown setting",
                ),
            ]:
                mark = len(proxy.lines)
                config.write_text(broken)
                os.utime(config, ns=(time.time_ns(), time.time_ns()))
                line = await wait_for_line(proxy, "configuration not reloaded", after=mark)
                assert reason in "".join(proxy.lines[mark:]), line
                assert "the routes in force stay" in line
                assert await status_of(client, proxy.url + "/a/still") == 200
    finally:
        assert proxy.stop() == 0
    assert "Traceback" not in "".join(proxy.lines)


@pytest.mark.slow
async def test_sighup_reloads(
    fake: FakeFunctionUrl, other: FakeFunctionUrl, tmp_path: Path
) -> None:
    config = tmp_path / "proxy.toml"
    write_config(config, ("/a", fake.url))
    proxy = await asyncio.to_thread(
        spawn,
        ["lambda-url-proxy", "--port", "0", "--config", str(config), "--log-format", "json"],
        KEYS,
    )
    try:
        mark = len(proxy.lines)
        write_config(config, ("/c", other.url))
        proxy.process.send_signal(signal.SIGHUP)
        line = await wait_for_line(proxy, "configuration reloaded (SIGHUP)", after=mark)
        assert json.loads(line)["message"].startswith("configuration reloaded (SIGHUP)")
        async with aiohttp.ClientSession() as client:
            assert await status_of(client, proxy.url + "/c/x") == 200
            assert await status_of(client, proxy.url + "/a/x") == 404
    finally:
        proxy.stop()


async def test_unchanged_identities_keep_their_credentials(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/a", fake.url)]) as proxy:
        live = proxy.app[LIVE]
        before = list(live.state.identities.values())
        settings = load_settings(
            {"port": 0, "routes": [route("/a", fake.url), route("/b", fake.url)]}
        )
        assert Reloader(live, lambda: settings, None).reload("test")
        after = list(live.state.identities.values())
        assert after == before  # same object: no new resolution, cached keys kept
        assert after[0].usable
        async with proxy.client.get(proxy.url + "/b/x") as response:
            assert response.status == 200

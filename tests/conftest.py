"""Shared fixtures: a clean AWS environment, the fake Function URL, and the proxy in front of it."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientSession, ClientTimeout, DummyCookieJar, web
from yarl import URL

from proxy.app import create_app
from proxy.server import start
from proxy.settings import load_settings
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

# The Docker engine's session fixtures (engine, image, bridge), for every module that needs them.
pytest_plugins = ("tests.engine",)

# tests/test_compiled.py runs these tests against the compiled build: refuse to run them against
# anything else then, so that its run cannot pass on the sources by mistake.
_APP_FILE = str(sys.modules["proxy.app"].__file__)
if os.environ.get("TESTS_EXPECT_COMPILED") == "1" and not _APP_FILE.endswith(".so"):
    raise pytest.UsageError(f"the tests expected the compiled build, not {_APP_FILE}")

ROOT = Path(__file__).resolve().parent.parent
AKID = "AKIAFAKEEXAMPLE00001"
SECRET = "fAkE/sEcReT+kEy/0123456789abcdefghijklmn"
KEYS = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real AWS configuration, proxy variables or instance metadata leak into a test."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "LAMBDA_URL_PROXY_")) or key.lower() in {
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
        }:
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # STS GetCallerIdentity (an AccessDenied's explanation) asks a closed port, never AWS.
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))


@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeFunctionUrl]:
    async with FakeFunctionUrl(region="us-east-1") as function_url:
        function_url.keys[AKID] = KeyRecord(SECRET)
        yield function_url


@dataclass
class RunningProxy:
    url: str
    app: web.Application
    client: ClientSession


@asynccontextmanager
async def running_proxy(**settings: Any) -> AsyncIterator[RunningProxy]:
    """The proxy in this process, on a free port, with a plain client that changes nothing."""
    loaded = load_settings({"port": 0, **settings})
    app = create_app(loaded)
    runner, url = await start(app, loaded)
    client = ClientSession(
        auto_decompress=False, cookie_jar=DummyCookieJar(), timeout=ClientTimeout(total=20)
    )
    try:
        yield RunningProxy(url, app, client)
    finally:
        await client.close()
        await runner.cleanup()


def route(prefix: str, url: str, **options: Any) -> dict[str, Any]:
    return {"prefix": prefix, "url": url, "region": "us-east-1", **options}


@pytest_asyncio.fixture
async def proxy(fake: FakeFunctionUrl, aws_keys: None) -> AsyncIterator[RunningProxy]:
    async with running_proxy(routes=[route("/fn", fake.url)]) as running:
        yield running


async def raw_exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes no HTTP client would, read until the server closes or `timeout`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def raw_response(port: int, request: bytes, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """Send `request`, read exactly one response with a Content-Length: (head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        assert length, head
        body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), timeout)
        return head, body
    finally:
        writer.close()


@dataclass
class ProxyProcess:
    process: subprocess.Popen[str]
    url: str
    port: int
    lines: list[str]  # everything it printed so far; keeps filling while it runs

    def stop(self, timeout: float = 10.0) -> int:
        self.process.terminate()
        return self.process.wait(timeout)


def _pump(stream: Any, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


def spawn(
    args: list[str],
    env: dict[str, str] | None = None,
    startup: float = 15.0,
    inherit: bool = True,
) -> ProxyProcess:
    """Start `args` (the installed command, by default); wait for its 'listening on' line.
    `env` is added to this process's environment, or, with `inherit=False`, is all of it."""
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})} if inherit else env,
    )
    lines: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    deadline = time.monotonic() + startup
    while time.monotonic() < deadline and process.poll() is None:
        for line in list(lines):
            if match := re.search(r"listening on http://[^ ]+:(\d+)", line):
                port = int(match.group(1))
                return ProxyProcess(process, f"http://127.0.0.1:{port}", port, lines)
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise AssertionError(f"{args} did not start:\n" + "".join(lines))


@pytest.fixture
def spawn_proxy() -> Iterator[Any]:
    """spawn_proxy(*flags, env=...): the installed `lambda-url-proxy` on a free port."""
    started: list[ProxyProcess] = []

    def run(
        *flags: str, env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> ProxyProcess:
        running = spawn([*(command or ["lambda-url-proxy"]), "--port", "0", *flags], env)
        started.append(running)
        return running

    yield run
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()


@pytest.fixture
def processes() -> Iterator[list[ProxyProcess]]:
    """The proxy processes a test started itself (with `spawn`): killed if still running."""
    started: list[ProxyProcess] = []
    yield started
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


@pytest_asyncio.fixture
async def started(fake: FakeFunctionUrl, spawn_proxy: Any) -> AsyncIterator[Any]:
    """started(*flags): the installed command in front of the fake, on a free port."""

    async def start(*flags: str) -> ProxyProcess:
        return await asyncio.to_thread(
            spawn_proxy, "--route", f"/fn={fake.url}", "--region", "us-east-1", *flags, env=KEYS
        )

    yield start


@dataclass
class Stack:
    port: int
    fake: FakeFunctionUrl


@pytest.fixture
def threaded_stack(aws_keys: None) -> Iterator[Stack]:
    """Fake and proxy on an event loop in a thread, for a synchronous client (http.client)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with FakeFunctionUrl() as fake:
            fake.keys[AKID] = KeyRecord(box["secret"])
            async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
                box["stack"] = Stack(URL(proxy.url).port or 0, fake)
                ready.set()
                await stop.wait()

    box["secret"] = SECRET
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box["stack"]
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


PYTHON = sys.executable


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections and that nothing else can take while the test
    runs: bound, never listening. (A port found free and let go may become the proxy's own.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port

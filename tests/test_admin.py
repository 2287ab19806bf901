"""The admin listener (admin_listen): health, ready and metrics on an address of their own, and
nothing else; through the installed command, configured as docs/kubernetes.md configures it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import AKID, SECRET, ProxyProcess, raw_exchange, raw_response, spawn
from tests.fake_function_url import FakeFunctionUrl
from tests.test_metrics import P, parse, value

COMMAND = shutil.which("lambda-url-proxy") or "lambda-url-proxy"
TOKEN = "admin-test-token-0123456789"


def clean_env(home: Path, **variables: str) -> dict[str, str]:
    """`env -i` with a temporary HOME: only what a pod's container has."""
    return {
        "PATH": "/usr/bin:/bin:" + str(Path(COMMAND).parent),
        "HOME": str(home),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": AKID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        **variables,
    }


def admin_port(proxy: ProxyProcess) -> int:
    for line in proxy.lines:
        if match := re.search(r"admin listener on http://127\.0\.0\.1:(\d+)", line):
            return int(match[1])
    raise AssertionError("no admin listener line:\n" + "".join(proxy.lines))


async def get(
    port: int, path: str, method: str = "GET", token: bool = False
) -> tuple[bytes, bytes]:
    auth = f"X-Proxy-Token: {TOKEN}\r\n" if token else ""
    return await raw_response(
        port, f"{method} {path} HTTP/1.1\r\nHost: 10.1.2.3:{port}\r\n{auth}\r\n".encode()
    )


@pytest.fixture
async def proxy(fake: FakeFunctionUrl, tmp_path: Path) -> AsyncIterator[ProxyProcess]:
    """The proxy as the pod runs it: loopback, a token, and the admin listener, all from the
    environment (LAMBDA_URL_PROXY_*)."""
    env = clean_env(
        tmp_path,
        LAMBDA_URL_PROXY_ROUTES=json.dumps([{"prefix": "/fn", "url": fake.url}]),
        LAMBDA_URL_PROXY_REGION="us-east-1",
        LAMBDA_URL_PROXY_PORT="0",
        LAMBDA_URL_PROXY_ACCESS_TOKEN=TOKEN,
        LAMBDA_URL_PROXY_ADMIN_LISTEN="127.0.0.1:0",
    )
    running = await asyncio.to_thread(spawn, [COMMAND], env, inherit=False)
    yield running
    running.process.terminate()
    running.process.wait(10)


async def test_health_ready_and_metrics_without_the_token_or_a_loopback_host(
    proxy: ProxyProcess, fake: FakeFunctionUrl
) -> None:
    port = admin_port(proxy)
    head, body = await get(port, "/_proxy/health")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "ok"
    head, body = await get(port, "/_proxy/ready")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["ready"] is True
    # The main listener, meanwhile, wants the token and a loopback Host.
    head, _ = await get(proxy.port, "/_proxy/ready", token=True)
    assert b"\r\nX-Proxy-Error: host_not_allowed\r\n" in head  # 10.1.2.3 on a loopback bind
    request = b"GET /_proxy/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head, _ = await raw_response(proxy.port, request)
    assert b"\r\nX-Proxy-Error: unauthorized\r\n" in head
    async with (
        ClientSession() as session,
        session.get(proxy.url + "/fn/counted", headers={"X-Proxy-Token": TOKEN}) as response,
    ):
        assert response.status == 200
    head, body = await get(port, "/_proxy/metrics")
    assert head.startswith(b"HTTP/1.1 200") and b"text/plain; version=0.0.4" in head
    samples = parse(body.decode())
    ok = value(samples, f"{P}_requests_total", route="/fn", method="GET", status="2xx")
    assert ok == 1
    assert value(samples, f"{P}_requests_in_flight") == 0


async def test_it_never_forwards(proxy: ProxyProcess, fake: FakeFunctionUrl) -> None:
    port = admin_port(proxy)
    before = len(fake.received)
    for path in ("/fn/x", "/_proxy/routes", "/"):
        head, body = await get(port, path, token=True)
        assert head.startswith(b"HTTP/1.1 404"), head
        error = json.loads(body)
        assert error["error"] == "no_route"
        assert "serves only /_proxy/health, /_proxy/ready, /_proxy/metrics" in error["message"]
    request = b"HEAD /_proxy/ready HTTP/1.1\r\nHost: 10.1.2.3\r\nConnection: close\r\n\r\n"
    answer = await raw_exchange(port, request)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n")  # no body
    head, body = await get(port, "/_proxy/health", method="POST")
    assert head.startswith(b"HTTP/1.1 405") and b"\r\nAllow: GET, HEAD\r\n" in head
    assert json.loads(body)["error"] == "method_not_allowed"
    assert len(fake.received) == before


def refused(fake: FakeFunctionUrl, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command run to its exit, which should come at start-up."""
    return subprocess.run(
        [COMMAND, "--route", f"/fn={fake.url}", "--region", "us-east-1", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_bad_address_is_refused_at_start_up(tmp_path: Path, fake: FakeFunctionUrl) -> None:
    for bad in ("9901", "localhost", "0.0.0.0:99999"):
        result = refused(fake, clean_env(tmp_path, LAMBDA_URL_PROXY_ADMIN_LISTEN=bad))
        assert result.returncode == 2, result.stderr
        assert f"admin_listen {bad!r} must be HOST:PORT, for example 0.0.0.0:9901" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_an_address_in_use_is_a_clear_message(
    tmp_path: Path, fake: FakeFunctionUrl, proxy: ProxyProcess
) -> None:
    taken = admin_port(proxy)
    for workers in ("1", "2"):
        env = clean_env(
            tmp_path,
            LAMBDA_URL_PROXY_ADMIN_LISTEN=f"127.0.0.1:{taken}",
            LAMBDA_URL_PROXY_WORKERS=workers,
        )
        result = await asyncio.to_thread(refused, fake, env)
        assert result.returncode == 2, result.stderr
        assert f"admin_listen '127.0.0.1:{taken}': cannot listen there (" in result.stderr
        assert "Traceback" not in result.stderr

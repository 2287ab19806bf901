"""`--log-level debug`: the proxy's own decisions for each request (route, canonical request,
string to sign, signed headers, upstream timings), never a secret, and none of botocore's or
urllib3's chatter; at info level, none of it is even computed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from proxy import forward
from proxy.signing import signing_key
from tests.conftest import AKID, SECRET, ProxyProcess, RunningProxy, spawn
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

TOKEN = "FwoGZXIvYXdzEFAKEsessionTOKEN/with+slash=="
ACCESS_TOKEN = "proxy-access-token-0123456789"
KEYS = {
    "AWS_ACCESS_KEY_ID": AKID,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_SESSION_TOKEN": TOKEN,
    "LAMBDA_URL_PROXY_ACCESS_TOKEN": ACCESS_TOKEN,
}


async def debug_run(fake: FakeFunctionUrl, log_format: str) -> tuple[str, dict[str, Any]]:
    """One GET with a query through the installed command at debug level: (its output, what
    the function saw)."""
    fake.keys[AKID] = KeyRecord(SECRET, session_token=TOKEN)
    argv = ["lambda-url-proxy", "--port", "0", "--route", f"/users={fake.url}"]
    argv += ["--region", "us-east-1", "--log-level", "debug", "--log-format", log_format]
    proxy: ProxyProcess = await asyncio.to_thread(spawn, argv, KEYS)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(
                f"{proxy.url}/users/42?b=2&a=1",
                headers={"Authorization": f"Bearer {ACCESS_TOKEN}"},
            ) as response:
                assert response.status == 200, await response.text()
                seen: dict[str, Any] = await response.json()
    finally:
        assert await asyncio.to_thread(proxy.stop) == 0
    return "".join(proxy.lines), seen


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_debug_shows_the_proxys_decisions_and_no_secret(
    fake: FakeFunctionUrl, log_format: str
) -> None:
    output, seen = await debug_run(fake, log_format)

    for secret in (SECRET, TOKEN, ACCESS_TOKEN, AKID):  # the access key only ever masked
        assert secret not in output, secret
    signature = re.search(r"Signature=([0-9a-f]{64})", dict(seen["headers"])["Authorization"])
    assert signature and signature[1] not in output
    # botocore's start-up chatter and credential narration, urllib3's connections: none.
    for noise in ("Changing event name", "Looking for credentials", "Found credentials"):
        assert noise not in output
    assert "matched route /users -> GET " in output
    assert "/42?a=1&b=2 (region us-east-1, service lambda, identity default, AKIA...0001)" in output
    assert "x-amz-security-token:<session token>" in output
    assert "Credential=AKIA...0001/" in output and "Signature=<omitted>" in output
    assert re.search(r"upstream 200 after connect [\d.]+ ms, first byte [\d.]+ ms, total", output)
    if log_format == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        assert {line["logger"].split(".")[0] for line in lines} == {"proxy"}, output
        events = {line.get("event"): line for line in lines}
        assert events["upstream_timings"]["status"] == 200
        timings = events["upstream_timings"]
        assert 0 <= timings["connect_ms"] <= timings["first_byte_ms"] <= timings["total_ms"]
        shows_what_was_signed(events["signed"], seen)


def shows_what_was_signed(signed: dict[str, Any], seen: dict[str, Any]) -> None:
    """The canonical request and string to sign shown are the ones whose signature reached
    the function: signed again from them, with the secret, they give the same signature."""
    request = signed["canonical_request"]
    assert request.startswith("GET\n/42\na=1&b=2\nhost:127.0.0.1:")
    real = request.replace("<session token>", TOKEN)
    algorithm, timestamp, scope, digest = signed["string_to_sign"].split("\n")
    assert algorithm == "AWS4-HMAC-SHA256"
    assert digest == hashlib.sha256(real.encode()).hexdigest()
    date, region, service, _ = scope.split("/")
    key = signing_key(SECRET, date, region, service).key
    proof = hmac.new(key, signed["string_to_sign"].encode(), hashlib.sha256).hexdigest()
    authorization = CIMultiDict(seen["headers"])["Authorization"]
    assert authorization.endswith(f"Signature={proof}")
    assert f"x-amz-date: {timestamp}" in signed["signed_headers"]


async def test_at_info_level_no_request_computes_a_trace(
    proxy: RunningProxy, fake: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_trace(*args: object) -> None:
        raise AssertionError("a Trace was made at info level")

    monkeypatch.setattr(forward, "Trace", no_trace)
    async with proxy.client.get(proxy.url + "/fn/x?q=1") as response:
        assert response.status == 200
    assert fake.received[-1].verified

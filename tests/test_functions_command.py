"""Routes naming functions, through the installed command: the start-up banner, `check`, and
requests, against the fake Lambda API (AWS_ENDPOINT_URL_LAMBDA) and the fake Function URL."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import AKID, KEYS, SECRET, ProxyProcess
from tests.fake_function_url import FakeFunctionUrl, KeyRecord
from tests.fake_lambda_api import FakeLambdaApi, FakeUrl

OPEN_URL = "https://openopenopenopenopenopenopenopen.lambda-url.us-east-1.on.aws/"
ROUTES = (
    "--route",
    "/0=function:nope",  # first in the table: the banner's example is another
    "--route",
    "/a=function:with-url",
    "--route",
    "/b=function:open,qualifier=live",
    "--route",
    "/c=function:bare,invoke_mode=RESPONSE_STREAM",
)


@pytest_asyncio.fixture
async def lambda_api(fake: FakeFunctionUrl) -> AsyncIterator[FakeLambdaApi]:
    """with-url's URL is the fake Function URL; open's alias `live` answers anyone; bare has
    no URL; nope does not exist."""
    async with FakeLambdaApi() as api:
        api.keys[AKID] = KeyRecord(SECRET)
        api.add_function("with-url", url=FakeUrl(fake.url + "/"))
        api.add_function("open", aliases={"live": FakeUrl(OPEN_URL, "NONE", "RESPONSE_STREAM")})
        api.add_function("bare")
        yield api


def environment(api: FakeLambdaApi) -> dict[str, str]:
    return {**KEYS, "AWS_ENDPOINT_URL_LAMBDA": api.url, "AWS_REGION": "us-east-1"}


async def start(spawn_proxy: Any, api: FakeLambdaApi, *flags: str) -> ProxyProcess:
    started: ProxyProcess = await asyncio.to_thread(
        spawn_proxy, *ROUTES, *flags, env=environment(api)
    )
    return started


async def banner(process: ProxyProcess, routes: int = 4) -> list[str]:
    """The `route` lines of the start-up banner (they follow the listening line)."""
    for _ in range(200):
        lines = [line for line in process.lines if " route " in line or '"route"' in line]
        if len(lines) >= routes:
            return lines
        await asyncio.sleep(0.05)
    raise AssertionError("".join(process.lines))


async def test_the_banner_shows_each_function_and_what_was_found(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api)

    d, a, b, c = await banner(process)  # in the order of their prefixes

    identity = "(region us-east-1 from AWS_REGION, identity default, env, AKIA...0001)"
    assert (
        f"INFO    route /a -> function with-url -> {fake.url}/ (AuthType AWS_IAM, BUFFERED) "
        f"{identity}"
    ) in a
    assert (
        f"INFO    route /b -> function open:live -> {OPEN_URL} (unsigned (AuthType NONE), "
        f"RESPONSE_STREAM) {identity}"
    ) in b
    assert (
        "INFO    route /c -> function bare: no Function URL (invoked through the Lambda API at "
        f"{lambda_api.url}, InvokeWithResponseStream) {identity}"
    ) in c
    assert (
        "ERROR   route /0 -> function nope: FAILED: function 'nope' does not exist at "
        f"{lambda_api.url} (Function not found: "
        "arn:aws:lambda:us-east-1:123456789012:function:nope)"
    ) in d
    assert SECRET not in "".join(process.lines)
    assert f"try: curl {process.url}/a/" in "".join(process.lines)  # not the failed /0


async def test_requests_to_functions_by_name(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api)
    async with aiohttp.ClientSession() as client:
        async with client.get(process.url + "/a/42?x=1") as answer:
            found = (answer.status, await answer.json())
        async with client.get(process.url + "/0/42") as answer:
            missing = (answer.status, answer.headers["X-Proxy-Error"], await answer.json())
        async with client.get(process.url + "/c/42") as answer:
            # A handler that does not stream, invoked with InvokeWithResponseStream: its JSON.
            result = json.loads(await answer.read())
            bare = (answer.status, json.loads(result["body"])["rawPath"])

    assert found[0] == 200 and found[1]["raw_path"] == "/42?x=1"  # the URL's, signed
    assert fake.received[-1].verified
    assert missing[:2] == (502, "function_not_found")
    assert missing[2]["message"].startswith("function 'nope' does not exist")
    assert bare == (200, "/42")  # no URL: invoked, streaming (tests/test_invoke_command.py)


async def test_json_logs_carry_the_function_fields(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api, "--log-format", "json")

    lines = [json.loads(line) for line in await banner(process)]

    by_prefix = {line["prefix"]: line for line in lines}
    assert by_prefix["/a"]["function"] == "with-url"
    assert (by_prefix["/a"]["url"], by_prefix["/a"]["via"]) == (fake.url + "/", "function_url")
    assert (by_prefix["/b"]["signed"], by_prefix["/b"]["qualifier"]) == (False, "live")
    assert (by_prefix["/c"]["via"], by_prefix["/c"]["invoke_mode"]) == (
        "lambda_api",
        "RESPONSE_STREAM",
    )
    assert by_prefix["/0"]["level"] == "error"
    assert by_prefix["/0"]["error"].startswith("function 'nope' does not exist")


def run_check(api: FakeLambdaApi, *routes: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["lambda-url-proxy", "check", *routes],
        env={**__import__("os").environ, **environment(api)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_check_shows_the_functions_and_fails_for_a_missing_one(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl
) -> None:
    result = await asyncio.to_thread(run_check, lambda_api, *ROUTES)

    assert result.returncode == 1, result
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:5]}
    assert f"function with-url -> {fake.url}/ (AuthType AWS_IAM, BUFFERED)" in rows["/a"]
    assert "us-east-1 (AWS_REGION)" in rows["/a"] and "OK (env, AKIA...0001" in rows["/a"]
    assert "unsigned (AuthType NONE)" in rows["/b"]
    assert "function bare: no Function URL" in rows["/c"]
    assert "4 of 4 routes have usable credentials" in result.stdout
    assert "function nope: FAILED (below)" in rows["/0"]
    assert "FAILED: route /0: function 'nope' does not exist" in result.stdout


async def test_check_passes_when_every_function_is_found(lambda_api: FakeLambdaApi) -> None:
    result = await asyncio.to_thread(run_check, lambda_api, *ROUTES[2:])

    assert result.returncode == 0, result
    assert "FAILED" not in result.stdout
    # AWS's clock from one unsigned request to each host, but never to a URL anyone may call:
    # it would run the function (issue #13).
    clocks = {line.split()[0]: line for line in result.stdout.splitlines() if " clock: " in line}
    assert "not measured: the function's URL has AuthType NONE" in clocks["/b"]
    assert "AWS's clock is within 1 s of this machine's" in clocks["/a"]
    assert "AWS's clock is within 1 s of this machine's" in clocks["/c"]  # the Lambda API


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL"])
async def test_the_general_endpoint_variable_is_honoured(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any, variable: str
) -> None:
    env = {**KEYS, variable: lambda_api.url, "AWS_REGION": "us-east-1"}
    process: ProxyProcess = await asyncio.to_thread(
        spawn_proxy, "--route", "/a=function:with-url", env=env
    )

    [line] = await banner(process, routes=1)

    assert f"function with-url -> {fake.url}/" in line

"""Routes naming a function: GetFunctionUrlConfig through botocore, with the route's identity,
off the event loop, against the fake Lambda API (which checks every signature with awscrt);
the URL found compiled as a URL route's upstream; failures in the proxy's shape."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import proxy.functions
from proxy.errors import (
    CredentialsUnavailable,
    FunctionAccessDenied,
    FunctionNotFound,
    FunctionThrottled,
    FunctionUnresolved,
)
from proxy.functions import FunctionRoute
from proxy.lifetime import LIVE
from proxy.reload import Reloader
from proxy.settings import load_settings
from proxy.state import Live, ProxyState
from tests.conftest import AKID, SECRET, running_proxy
from tests.fake_function_url import FakeFunctionUrl, KeyRecord
from tests.fake_lambda_api import INVOKE, FakeLambdaApi, FakeUrl

# Not in the development loop (-m "not slow"): the installed command and the fake Lambda API.
pytestmark = pytest.mark.slow

URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-fn"


@pytest_asyncio.fixture
async def lambda_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeLambdaApi]:
    """The fake Lambda API, where botocore's standard variable points every lambda client."""
    async with FakeLambdaApi() as api:
        api.keys[AKID] = KeyRecord(SECRET)
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", api.url)
        yield api


def function_route(**route: Any) -> FunctionRoute:
    settings = load_settings(
        {"routes": [{"prefix": "/users", "function": "my-fn", "region": "us-east-1", **route}]}
    )
    [function] = ProxyState.build(settings).functions
    return function


async def resolved(**route: Any) -> FunctionRoute:
    function = function_route(**route)
    await function.identity.refresh()
    await function.resolve()
    return function


# --- With a URL: the route is a URL route ------------------------------------------------------


async def test_a_function_with_a_url_routes_as_a_url_route(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL))

    function = await resolved(strip_prefix=False, timeout=7)

    upstream = function.routed()
    assert (upstream.url, upstream.host, upstream.scheme, upstream.prefix) == (
        URL,
        "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
        "https",
        "/users",
    )
    assert (upstream.strip_prefix, upstream.timeout, upstream.region) == (
        False,
        7,
        "us-east-1",
    )
    assert (upstream.identity, upstream.function, upstream.unsigned) == (
        function.identity,
        function,
        False,
    )
    assert function.describe() == f"function my-fn -> {URL} (AuthType AWS_IAM, BUFFERED)"
    [call] = lambda_api.calls
    assert (call.operation, call.function, call.qualifier, call.access_key) == (
        "GetFunctionUrlConfig",
        "my-fn",
        None,
        AKID,
    )


async def test_the_router_gives_the_urls_upstream(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    state = ProxyState.build(
        load_settings(
            {"routes": [{"prefix": "/users", "function": "my-fn"}], "region": "us-east-1"}
        )
    )
    [function] = state.functions
    await function.identity.refresh()
    await function.resolve()

    upstream = state.router.match("/users/42")

    assert upstream is function.upstream and upstream is not None
    assert upstream.path_for("/users/42") == "/42"
    assert state.router.find("/users/42") is function


async def test_auth_type_none_is_forwarded_unsigned(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL, "NONE", "RESPONSE_STREAM"))

    function = await resolved()

    assert function.routed().unsigned is True
    assert function.describe() == (
        f"function my-fn -> {URL} (unsigned (AuthType NONE), RESPONSE_STREAM)"
    )
    assert function.status()["signed"] is False


async def test_the_qualifier_is_passed_and_picks_the_alias_url(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    prod = "https://prodprodprodprodprodprodprodprod.lambda-url.us-east-1.on.aws/"
    lambda_api.add_function("my-fn", url=FakeUrl(URL), aliases={"prod": FakeUrl(prod)})

    function = await resolved(qualifier="prod")

    assert function.routed().url == prod
    assert lambda_api.calls[0].qualifier == "prod"
    assert function.describe().startswith("function my-fn:prod -> ")


async def test_latest_asks_for_the_unqualified_url(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL))

    function = await resolved(qualifier="$LATEST")

    assert function.routed().url == URL
    assert lambda_api.calls[0].qualifier is None


async def test_a_function_arn_is_looked_up_in_its_region(
    monkeypatch: pytest.MonkeyPatch, aws_keys: None
) -> None:
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:my-fn"
    async with FakeLambdaApi(region="eu-west-1") as api:  # refuses any other signing region
        api.keys[AKID] = KeyRecord(SECRET)
        api.add_function("my-fn", url=FakeUrl(URL))
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", api.url)
        settings = load_settings({"routes": [{"prefix": "/users", "function": arn}]})
        [function] = ProxyState.build(settings).functions
        await function.identity.refresh()

        assert await function.resolve()

        assert (function.region, function.region_source) == ("eu-west-1", "the function's ARN")
        assert function.routed().region == "eu-west-1"
        assert api.calls[0].function == arn


async def test_a_named_profile_signs_the_lookup(lambda_api: FakeLambdaApi, tmp_path: Path) -> None:
    lambda_api.keys["AKIAPROFILEDEV000001"] = KeyRecord("dev/secret")
    (tmp_path / "aws-credentials").write_text(
        "[dev]\naws_access_key_id = AKIAPROFILEDEV000001\naws_secret_access_key = dev/secret\n"
    )
    lambda_api.add_function("my-fn", url=FakeUrl(URL))

    function = await resolved(profile="dev")

    assert function.routed().url == URL
    assert lambda_api.calls[0].access_key == "AKIAPROFILEDEV000001"


async def test_the_lookup_runs_off_the_event_loop(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    """The fake answers on this very loop: a lookup blocking the loop would never get its
    answer. Meanwhile the loop keeps ticking."""
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    function = function_route()
    await function.identity.refresh()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(tick())
    try:
        assert await asyncio.wait_for(function.resolve(), 30)
    finally:
        ticking.cancel()
    assert ticks > 1


# --- Without a URL: invoked through the Lambda API ---------------------------------------------


async def test_no_url_is_no_error_the_route_invokes_through_the_api(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn")

    function = await resolved()

    resolution = function.resolution
    assert resolution is not None and function.error is None
    assert (resolution.config, resolution.upstream, resolution.endpoint) == (
        None,
        None,
        lambda_api.url,
    )
    invoke = resolution.invoke
    assert invoke is not None
    assert (invoke.path, invoke.query, invoke.streaming) == (
        "/2015-03-31/functions/my-fn/invocations",
        "",
        False,
    )
    assert (invoke.upstream.url, invoke.upstream.region, invoke.upstream.service) == (
        lambda_api.url,
        "us-east-1",
        "lambda",
    )
    assert invoke.upstream.identity is function.identity
    assert function.describe() == (
        f"function my-fn: no Function URL (invoked through the Lambda API at {lambda_api.url}, "
        "Invoke)"
    )
    assert function.status()["via"] == "lambda_api"


async def test_streaming_invokes_use_their_own_path_and_the_qualifier(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn", aliases={"prod": None})

    function = await resolved(qualifier="prod", invoke_mode="RESPONSE_STREAM")

    assert function.resolution is not None and function.resolution.invoke is not None
    invoke = function.resolution.invoke
    assert (invoke.path, invoke.query, invoke.streaming) == (
        "/2021-11-15/functions/my-fn/response-streaming-invocations",
        "Qualifier=prod",
        True,
    )


async def test_an_arn_in_the_invoke_path_is_percent_encoded_as_botocore_does(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn")

    function = await resolved(function=ARN)

    assert function.resolution is not None and function.resolution.invoke is not None
    assert function.resolution.invoke.path == (
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Amy-fn"
        "/invocations"
    )


async def test_a_version_has_no_url_so_none_is_asked_for(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    function = await resolved(qualifier="3")

    assert function.resolution is not None and function.resolution.invoke is not None
    assert function.resolution.invoke.query == "Qualifier=3"
    assert lambda_api.calls == []


async def test_a_function_without_url_routes_to_the_lambda_api_with_its_invoke(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn")
    function = await resolved()

    routed = function.routed()

    assert function.resolution is not None
    assert routed.invoke is function.resolution.invoke and routed.invoke is not None
    assert (routed.url, routed.prefix) == (routed.invoke.upstream.url, function.prefix)
    assert routed.function is function


# --- Failures, in the proxy's shape ------------------------------------------------------------


async def test_a_function_that_does_not_exist(lambda_api: FakeLambdaApi, aws_keys: None) -> None:
    function = await resolved(function="nope")

    error = function.error
    assert isinstance(error, FunctionNotFound)
    assert (error.status, error.code) == (502, "function_not_found")
    assert error.message.startswith(f"function 'nope' does not exist at {lambda_api.url} ")
    assert (
        "Function not found: arn:aws:lambda:us-east-1:123456789012:function:nope" in error.message
    )
    with pytest.raises(FunctionNotFound):
        function.routed()
    assert function.describe() == f"function nope: FAILED: {error.message}"


async def test_an_alias_that_does_not_exist(lambda_api: FakeLambdaApi, aws_keys: None) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL))

    function = await resolved(qualifier="nope")

    assert isinstance(function.error, FunctionNotFound)
    assert "function 'my-fn' (qualifier 'nope') does not exist" in function.error.message


async def test_a_denied_lookup_names_the_action_and_the_identity(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    lambda_api.deny(AKID, "lambda:GetFunctionUrlConfig")

    function = await resolved()

    error = function.error
    assert isinstance(error, FunctionAccessDenied)
    assert (error.status, error.code) == (502, "function_access_denied")
    assert error.message.startswith(
        "identity default, env, AKIA...0001 may not call lambda:GetFunctionUrlConfig on "
        "function 'my-fn' (AWS: User: arn:aws:iam::123456789012:user/fake-caller is not "
        "authorized to perform: lambda:GetFunctionUrlConfig"
    )
    assert "give the route its url instead" in error.message
    assert SECRET not in error.message and AKID not in error.message


async def test_throttling_is_told_as_429_once_botocores_retries_are_spent(
    lambda_api: FakeLambdaApi, aws_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy.functions, "LOOKUP_ATTEMPTS", 1)
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    lambda_api.throttle("GetFunctionUrlConfig")

    function = await resolved()

    assert isinstance(function.error, FunctionThrottled)
    assert (function.error.status, function.error.code) == (429, "function_throttled")
    assert "Rate Exceeded." in function.error.message


async def test_botocore_retries_a_throttled_lookup(
    lambda_api: FakeLambdaApi, aws_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy.functions, "LOOKUP_ATTEMPTS", 2)
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    lambda_api.throttle("GetFunctionUrlConfig")

    function = await resolved()

    assert function.routed().url == URL
    assert len(lambda_api.calls) == 2


async def test_an_unreachable_lambda_api(
    monkeypatch: pytest.MonkeyPatch, aws_keys: None, unused_tcp_port: int
) -> None:
    monkeypatch.setattr(proxy.functions, "LOOKUP_ATTEMPTS", 1)
    endpoint = f"http://127.0.0.1:{unused_tcp_port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint)

    function = await resolved()

    assert isinstance(function.error, FunctionUnresolved)
    assert function.error.message.startswith(f"cannot reach the Lambda API at {endpoint}")


async def test_no_credentials_is_told_as_such(lambda_api: FakeLambdaApi) -> None:
    function = function_route()
    with pytest.raises(LookupError):
        await function.identity.refresh()

    assert not await function.resolve()

    assert isinstance(function.error, CredentialsUnavailable)
    assert lambda_api.calls == []


async def test_before_the_first_lookup_the_route_says_so(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    function = function_route()

    with pytest.raises(FunctionUnresolved, match="still being looked up; retry shortly"):
        function.routed()
    assert function.describe() == "function my-fn: looking up its URL"


# --- Looking again -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_resolving_again_finds_a_new_url_at_most_every_few_seconds(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    fake_function = lambda_api.add_function("my-fn", url=FakeUrl(URL))
    settings = load_settings(
        {"routes": [{"prefix": "/users", "function": "my-fn"}], "region": "us-east-1"}
    )
    template = ProxyState.build(settings).functions[0]
    clock = Clock()
    function = FunctionRoute(template.route, template._region, template.identity, clock=clock)
    await function.identity.refresh()
    await function.resolve()
    new = "https://newnewnewnewnewnewnewnewnewnewne.lambda-url.us-east-1.on.aws/"
    fake_function.url = FakeUrl(new)

    clock.now += 1.0
    assert (await function.resolve_again()) is function.resolution
    assert function.routed().url == URL  # too soon: the cached one
    clock.now += proxy.functions.AGAIN_AFTER
    await function.resolve_again()

    assert function.routed().url == new
    assert len(lambda_api.calls) == 2


async def test_concurrent_lookups_share_one_call(lambda_api: FakeLambdaApi, aws_keys: None) -> None:
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    function = function_route()
    await function.identity.refresh()

    results = await asyncio.gather(*(function.resolve() for _ in range(5)))

    assert results == [True] * 5
    assert len(lambda_api.calls) == 1


async def test_a_failed_lookup_keeps_the_url_that_worked(
    lambda_api: FakeLambdaApi, aws_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy.functions, "LOOKUP_ATTEMPTS", 1)
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    function = await resolved()
    lambda_api.throttle("GetFunctionUrlConfig")

    assert not await function.resolve()

    assert isinstance(function.error, FunctionThrottled)
    assert function.routed().url == URL


async def test_run_retries_until_found_and_says_so_once(
    lambda_api: FakeLambdaApi,
    aws_keys: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(proxy.functions, "LOOKUP_ATTEMPTS", 1)
    caplog.set_level(logging.INFO, logger="proxy.functions")
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    lambda_api.throttle("GetFunctionUrlConfig")
    function = function_route()
    function.announce()  # as the banner does: looking up, so failures are run()'s to tell
    refreshing = asyncio.create_task(function.identity.run())
    try:
        await asyncio.wait_for(function.run(), 10)
    finally:
        refreshing.cancel()

    assert function.routed().url == URL
    failed, found = [record.getMessage() for record in caplog.records]  # each said once
    assert failed.startswith("route /users -> function my-fn: FAILED: the Lambda API throttled")
    assert found == f"route /users -> function my-fn -> {URL} (AuthType AWS_IAM, BUFFERED)"


# --- In the running proxy ----------------------------------------------------------------------


async def test_start_up_looks_up_before_listening_and_the_route_forwards(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, aws_keys: None
) -> None:
    """A function whose URL is the fake Function URL: found at start-up, and requests to the
    route reach it signed, as for a URL route."""
    lambda_api.add_function("my-fn", url=FakeUrl(fake.url + "/"))
    routes = [{"prefix": "/users", "function": "my-fn", "region": "us-east-1"}]
    async with running_proxy(routes=routes) as running:
        async with running.client.get(running.url + "/_proxy/routes") as answer:
            table = (await answer.json())["routes"]
        async with running.client.get(running.url + "/users/42?a=1") as answer:
            echoed = await answer.json()

    assert table == [
        {
            "prefix": "/users",
            "url": fake.url + "/",
            "region": "us-east-1",
            "region_source": "route /users",
            "service": "lambda",
            "strip_prefix": True,
            "timeout": 60.0,
            "identity": "default",
            "function": "my-fn",
            "qualifier": None,
            "auth_type": "AWS_IAM",
            "invoke_mode": "BUFFERED",
            "signed": True,
            "via": "function_url",
            "lambda_api": lambda_api.url,
            "error": None,
        }
    ]
    assert echoed["raw_path"] == "/42?a=1"
    assert fake.received[-1].verified


async def test_a_route_whose_function_is_missing_answers_in_the_proxys_shape(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    routes = [{"prefix": "/users", "function": "nope", "region": "us-east-1"}]
    async with running_proxy(routes=routes) as running:
        async with running.client.get(running.url + "/users/42") as answer:
            status, headers, body = answer.status, answer.headers, await answer.json()

    assert (status, headers["X-Proxy-Error"], body["error"]) == (
        502,
        "function_not_found",
        "function_not_found",
    )
    assert body["message"].startswith("function 'nope' does not exist")


async def test_reload_looks_the_url_up_again_and_says_what_it_found(
    lambda_api: FakeLambdaApi, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.reload")
    lambda_api.add_function("my-fn", url=FakeUrl(URL))
    routes = [{"prefix": "/users", "function": "my-fn", "region": "us-east-1"}]
    async with running_proxy(routes=routes) as running:
        live = running.app[LIVE]
        settings = load_settings({"port": 0, "routes": routes})
        reloader = Reloader(live, lambda: settings, None)

        assert reloader.reload("test")
        [function] = live.state.functions
        await asyncio.wait_for(function.wait_first_attempt(), 10)
        await asyncio.sleep(0)  # the announcement follows the lookup

    assert len([c for c in lambda_api.calls if c.operation == "GetFunctionUrlConfig"]) == 2
    assert f"route /users -> function my-fn -> {URL} (AuthType AWS_IAM, BUFFERED)" in caplog.text


async def test_live_stops_the_lookups_of_a_replaced_state(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    settings = load_settings(
        {"routes": [{"prefix": "/users", "function": "nope"}], "region": "us-east-1"}
    )
    live = Live(ProxyState.build(settings))
    live.start_refreshing()
    [old] = live.state.functions
    await asyncio.wait_for(old.wait_first_attempt(), 10)
    task = live._resolving[old]

    live.replace(ProxyState.build(settings))
    await asyncio.sleep(0)

    assert task.cancelled() or task.done()
    assert old not in live._resolving and len(live._resolving) == 1
    await live.stop()


def test_json_of_the_routes_table_is_plain(lambda_api: FakeLambdaApi) -> None:
    function = function_route()

    json.dumps(function.status())  # nothing a JSON encoder cannot write, before any lookup
    assert function.status()["via"] is None


async def test_a_request_to_a_function_without_url_invokes_it(
    lambda_api: FakeLambdaApi, aws_keys: None
) -> None:
    lambda_api.add_function("my-fn")
    routes = [{"prefix": "/users", "function": "my-fn", "region": "us-east-1"}]
    async with running_proxy(routes=routes) as running:
        async with running.client.get(running.url + "/users/1") as answer:
            assert answer.status == 200
    assert [c.event["rawPath"] for c in lambda_api.calls if c.operation == INVOKE] == ["/1"]

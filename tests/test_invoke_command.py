"""Functions without a Function URL, invoked through the Lambda API (issue #14), through the
installed command against the fake Lambda API (AWS_ENDPOINT_URL_LAMBDA): the payload format 2.0
event the function gets, the answer the client gets, streaming, and every refusal in the
proxy's shape. Functions with a URL: AuthType NONE unsigned, and a URL that stops answering
looked up again."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import AKID, KEYS, SECRET, ProxyProcess
from tests.fake_function_url import FakeFunctionUrl, KeyRecord
from tests.fake_lambda_api import (
    GET_URL,
    HTTP_INTEGRATION,
    INVOKE,
    INVOKE_STREAM,
    PRELUDE_DELIMITER,
    ApiError,
    FakeLambdaApi,
    FakeUrl,
    Streamed,
)
from tests.test_disconnects import rss_mib

# Not in the development loop (-m "not slow"): the installed command and the fake Lambda API.
pytestmark = pytest.mark.slow

BINARY = bytes(range(256))
TIMEOUT = aiohttp.ClientTimeout(total=30)


def binary_answer(event: Any) -> Any:
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/octet-stream", "x-from": "the function"},
        "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
        "body": base64.b64encode(BINARY).decode(),
        "isBase64Encoded": True,
    }


def failing(event: Any) -> Any:
    raise ValueError("the database is down")


@pytest_asyncio.fixture
async def lambda_api() -> AsyncIterator[FakeLambdaApi]:
    async with FakeLambdaApi() as api:
        api.keys[AKID] = KeyRecord(SECRET)
        api.add_function("echo", aliases={"prod": None})  # no URL, nor has its alias
        api.add_function("binary", binary_answer)
        api.add_function("plain", lambda event: "Hello, world!")
        api.add_function("listing", lambda event: [1, 2, 3])
        api.add_function("failing", failing)
        yield api


def environment(api: FakeLambdaApi) -> dict[str, str]:
    return {**KEYS, "AWS_ENDPOINT_URL_LAMBDA": api.url, "AWS_REGION": "us-east-1"}


async def start(
    spawn_proxy: Any, api: FakeLambdaApi, *routes: str, flags: tuple[str, ...] = ()
) -> ProxyProcess:
    flags = (*flags, *(flag for route in routes for flag in ("--route", route)))
    process: ProxyProcess = await asyncio.to_thread(spawn_proxy, *flags, env=environment(api))
    await until(lambda: "try: curl" in "".join(process.lines), process)
    return process


async def until(condition: Any, process: ProxyProcess, tries: int = 400) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("".join(process.lines))


async def ask(process: ProxyProcess, path: str, method: str = "GET") -> tuple[int, Any, bytes]:
    """One request with a plain client: status, headers, body."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.request(method, process.url + path) as answer:
            return answer.status, answer.headers, await answer.read()


async def access_line(process: ProxyProcess, path: str) -> str:
    """The access log line of the request for `path` (written once the answer is)."""
    found: list[str] = []

    def logged() -> bool:
        found[:] = [line for line in process.lines if f" {path} " in line]
        return bool(found)

    await until(logged, process)
    return found[-1]


async def test_the_function_gets_a_function_urls_event(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api, "/echo=function:echo")
    headers = [
        ("Cookie", "a=1; b=2"),
        ("Cookie", "c=3"),
        ("X-Repeat", "one"),
        ("X-Repeat", "two"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("User-Agent", "the-test/1.0"),
        ("Authorization", "Bearer the client's own"),
        ("X-Amz-Date", "20200101T000000Z"),
        ("X-Forwarded-For", "203.0.113.9"),
    ]
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.post(
            process.url + "/echo/a%20b/c?x=1&x=2&y=%20z&plus=a+b",
            data="héllo",
            headers=headers,
            skip_auto_headers=["User-Agent"],
        ) as answer:
            status, request_id = answer.status, answer.headers["x-amzn-RequestId"]
            event = json.loads(await answer.read())

    assert status == 200
    [call] = [call for call in lambda_api.calls if call.operation == INVOKE]
    assert (call.function, call.qualifier, call.access_key, call.event) == (
        "echo",
        None,
        AKID,
        event,
    )
    assert (event["version"], event["routeKey"]) == ("2.0", "$default")
    assert (event["rawPath"], event["rawQueryString"]) == ("/a%20b/c", "x=1&x=2&y=%20z&plus=a+b")
    assert event["cookies"] == ["a=1", "b=2", "c=3"]
    assert event["queryStringParameters"] == {"x": "1,2", "y": " z", "plus": "a+b"}
    sent = event["headers"]
    assert all(name == name.lower() for name in sent)
    assert (sent["x-repeat"], sent["content-type"]) == ("one,two", "text/plain; charset=utf-8")
    assert (sent["host"], sent["x-forwarded-for"], sent["content-length"]) == (
        f"127.0.0.1:{process.port}",
        "127.0.0.1",
        str(len("héllo".encode())),
    )
    assert not {"cookie", "authorization", "x-amz-date"} & sent.keys()  # the client's own
    context = event["requestContext"]
    assert (context["domainName"], context["domainPrefix"], context["apiId"]) == (
        f"127.0.0.1:{process.port}",
        "127",
        "127",
    )
    assert context["http"] == {
        "method": "POST",
        "path": "/a%20b/c",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "the-test/1.0",
    }
    assert (context["routeKey"], context["stage"]) == ("$default", "$default")
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    assert isinstance(context["timeEpoch"], int) and context["timeEpoch"] > 1_700_000_000_000
    assert uuid.UUID(context["requestId"]).version == 4
    assert context["authorizer"]["iam"]["accessKey"] == AKID
    assert "accountId" in context
    assert (event["body"], event["isBase64Encoded"]) == ("héllo", False)
    assert request_id in await access_line(process, "/echo/a%20b/c")
    assert SECRET not in "".join(process.lines)


async def test_a_binary_body_is_base64_and_cookies_go_both_ways(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api, "/echo=function:echo", "/binary=function:binary")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.put(
            process.url + "/echo/upload",
            data=BINARY,
            headers={"Content-Type": "application/octet-stream", "Cookie": "id=7"},
        ) as answer:
            event = json.loads(await answer.read())
        async with client.get(process.url + "/binary/image") as answer:
            status, got = answer.status, await answer.read()
            set_cookies = answer.headers.getall("Set-Cookie")
            content_type, from_function = answer.headers["Content-Type"], answer.headers["x-from"]

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == BINARY
    assert event["cookies"] == ["id=7"]
    assert (status, got, content_type, from_function) == (
        201,
        BINARY,
        "application/octet-stream",
        "the function",
    )
    assert set_cookies == ["session=abc; Path=/; HttpOnly", "theme=dark"]


async def test_a_result_that_is_no_http_answer_is_200_json(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    process = await start(
        spawn_proxy, lambda_api, "/plain=function:plain", "/list=function:listing"
    )
    lookups = len(lambda_api.peers)  # botocore's connections

    status, headers, plain = await ask(process, "/plain")
    listing = await ask(process, "/list")

    assert (status, headers["Content-Type"], plain) == (200, "application/json", b'"Hello, world!"')
    assert (listing[0], listing[2]) == (200, b"[1, 2, 3]")
    assert len(lambda_api.peers) == lookups + 1  # the invokes shared one kept-alive connection


async def test_a_function_error_is_502_with_its_message_in_the_log_only(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api, "/failing=function:failing")

    status, headers, answer = await ask(process, "/failing/x")

    body = json.loads(answer)
    assert (status, headers["X-Proxy-Error"]) == (502, "function_error")
    assert body["error"] == "function_error"
    assert "ValueError" in body["message"] and "database" not in body["message"]
    line = await access_line(process, "/failing/x")
    assert "function error Unhandled: ValueError: the database is down" in line


async def test_the_qualifier_is_passed_to_invoke(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    arn = "arn:aws:lambda:us-east-1:123456789012:function:echo"
    process = await start(
        spawn_proxy,
        lambda_api,
        "/q=function:echo,qualifier=prod",
        f"/arn=function:{arn}",
        flags=("--log-level", "debug"),
    )

    assert (await ask(process, "/q/1"))[0] == 200
    by_arn = json.loads((await ask(process, "/arn/1"))[2])
    route = json.loads((await ask(process, "/_proxy/routes"))[2])["routes"][1]

    lookups = [call.qualifier for call in lambda_api.calls if call.operation == GET_URL]
    invokes = [call.qualifier for call in lambda_api.calls if call.operation == INVOKE]
    assert (sorted(lookups, key=str), invokes) == ([None, "prod"], ["prod", None])
    assert by_arn["requestContext"]["accountId"] == "123456789012"  # the ARN's account
    assert (route["via"], route["lambda_api"], route["url"]) == ("lambda_api", lambda_api.url, None)
    assert (route["qualifier"], route["invoke_mode"]) == ("prod", "BUFFERED")
    debug = (
        "GET /q/1 matched route /q -> function echo:prod: POST "
        f"{lambda_api.url}/2015-03-31/functions/echo/invocations?Qualifier=prod (event of "
    )
    assert debug in "".join(process.lines)
    assert SECRET not in "".join(process.lines)


async def test_a_streaming_function_reaches_the_client_chunk_by_chunk(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    """The first chunk reaches the client while the function has not yet written the last."""
    gate = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        prelude = {"statusCode": 202, "headers": {"x-stream": "yes"}, "cookies": ["s=1"]}
        yield json.dumps(prelude).encode()
        yield PRELUDE_DELIMITER
        yield b"first "
        await asyncio.wait_for(gate.wait(), 20)
        yield b"last"

    lambda_api.add_function("feed", lambda event: Streamed(chunks(), HTTP_INTEGRATION))
    process = await start(
        spawn_proxy, lambda_api, "/feed=function:feed,invoke_mode=RESPONSE_STREAM"
    )
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(process.url + "/feed/live") as answer:
            head = (answer.status, answer.headers["x-stream"], answer.headers["Set-Cookie"])
            chunked = answer.headers.get("Transfer-Encoding")
            first = await asyncio.wait_for(answer.content.readexactly(6), 20)
            released_before_first = gate.is_set()
            gate.set()
            rest = await answer.read()

    assert head == (202, "yes", "s=1") and chunked == "chunked"
    assert (first, rest, released_before_first) == (b"first ", b"last", False)
    assert [call.operation for call in lambda_api.calls][-1] == INVOKE_STREAM


async def test_a_stream_that_fails_midway_is_cut_and_logged(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    lambda_api.add_function(
        "broken",
        lambda event: Streamed([b"partial"], error=ValueError("disk full")),
    )
    lambda_api.add_function("early", lambda event: Streamed([], error=ValueError("no data at all")))
    process = await start(
        spawn_proxy,
        lambda_api,
        "/broken=function:broken,invoke_mode=RESPONSE_STREAM",
        "/early=function:early,invoke_mode=RESPONSE_STREAM",
    )
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(process.url + "/broken/x") as answer:
            status = answer.status
            with pytest.raises(aiohttp.ClientPayloadError):
                await answer.read()
        async with client.get(process.url + "/early/x") as answer:
            early = (answer.status, answer.headers["X-Proxy-Error"])

    assert status == 200  # the head had gone out: the client sees a truncated body
    line = await access_line(process, "/broken/x")
    assert "upstream_failed_mid_body" in line and "ValueError" in line and "disk full" in line
    assert early == (502, "function_error")
    assert "no data at all" in await access_line(process, "/early/x")


async def test_refusals_of_the_lambda_api_in_the_proxys_shape(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api, "/echo=function:echo", "/plain=function:plain")
    answers: dict[str, tuple[int, str, str]] = {}
    retry_after: list[str | None] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:

        async def ask(name: str, path: str, **options: Any) -> None:
            async with client.post(process.url + path, **options) as answer:
                body = await answer.json()
                answers[name] = (answer.status, answer.headers["X-Proxy-Error"], body["message"])
                retry_after.append(answer.headers.get("Retry-After"))

        lambda_api.throttle(INVOKE)
        await ask("throttled", "/echo/1")
        big = b"\xff" * (5 * 1024 * 1024)  # within max_body_size; a third more as base64
        await ask("too_large", "/echo/1", data=big, headers={"Content-Type": "image/png"})
        del lambda_api.functions["plain"]  # deleted since the start
        await ask("gone", "/plain/1")
        pending = (
            "The operation cannot be performed at this time. The function is currently in the "
            "following state: Pending"
        )
        lambda_api.fail(INVOKE, ApiError("ResourceConflictException", 409, {"message": pending}))
        await ask("conflict", "/echo/1")
        lambda_api.keys[AKID] = KeyRecord("not the proxy's secret")
        await ask("bad_signature", "/echo/1")
        lambda_api.keys[AKID] = KeyRecord(SECRET)
        lambda_api.deny(AKID, "lambda:InvokeFunction")
        await ask("denied", "/echo/1")

    assert answers["throttled"][:2] == (429, "function_throttled")
    assert "ConcurrentInvocationLimitExceeded" in answers["throttled"][2]
    assert retry_after == ["1", None, None, None, None, None]  # Lambda's, passed on with its 429
    assert answers["too_large"][:2] == (413, "body_too_large")
    assert "6 MB" in answers["too_large"][2] and "base64" in answers["too_large"][2]
    assert answers["gone"][:2] == (502, "function_not_found")
    assert "function plain does not exist" in answers["gone"][2]
    assert answers["conflict"][:2] == (502, "invoke_failed")
    assert answers["conflict"][2] == (
        "invoking function echo failed: the Lambda API answered 409 ResourceConflictException "
        f"({pending}); the function is being created or updated: retry shortly"
    )
    assert answers["bad_signature"][:2] == (502, "function_access_denied")
    assert "(InvalidSignatureException: The request signature" in answers["bad_signature"][2]
    assert "check its keys, its session token's expiry and the clock" in answers["bad_signature"][2]
    status, code, message = answers["denied"]
    assert (status, code) == (502, "function_access_denied")
    assert "identity default, env, AKIA...0001 may not call lambda:InvokeFunction" in message
    assert "allow lambda:InvokeFunction" in message
    assert SECRET not in "".join(process.lines)


async def test_an_unreachable_lambda_api_is_502(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    process = await start(spawn_proxy, lambda_api, "/echo=function:echo")
    url = lambda_api.url
    await lambda_api.stop()

    status, _, answer = await ask(process, "/echo/1")

    body = json.loads(answer)
    assert (status, body["error"]) == (502, "upstream_unreachable")
    assert f"the Lambda API at {url} is unreachable to invoke function echo" in body["message"]


# --- Functions with a URL -------------------------------------------------------------------


async def test_a_url_with_auth_type_none_is_sent_unsigned(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any
) -> None:
    fake.auth_type = "NONE"
    lambda_api.add_function("open", url=FakeUrl(fake.url + "/", "NONE"))
    process = await start(spawn_proxy, lambda_api, "/open=function:open")

    assert (await ask(process, "/open/1"))[0] == 200
    sent = {name.lower() for name, _ in fake.received[-1].headers}
    assert not sent & {"authorization", "x-amz-date", "x-amz-security-token"}
    assert "unsigned (AuthType NONE)" in "".join(process.lines)


async def test_only_signed_requests_over_plain_http_are_warned_of(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    """The banner warns of signatures and session tokens sent over plain http; a function URL
    with AuthType NONE goes unsigned, so it has nothing to warn of."""
    lambda_api.add_function("open", url=FakeUrl("http://open.example.test/", "NONE"))
    lambda_api.add_function("iam", url=FakeUrl("http://iam.example.test/"))
    process = await start(spawn_proxy, lambda_api, "/open=function:open", "/iam=function:iam")

    said = "".join(process.lines)
    assert "unsigned (AuthType NONE)" in said
    warned = [line for line in process.lines if "over plain http" in line]
    assert len(warned) == 1, said
    assert "route /iam sends signed requests" in warned[0] and "iam.example.test" in warned[0]


async def test_a_url_that_stops_answering_is_looked_up_again(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any
) -> None:
    """The URL was recreated (a new host): the old one cannot be reached, the proxy looks the
    function up again and the next requests go to the new URL."""
    async with FakeFunctionUrl() as old:
        old.keys[AKID] = KeyRecord(SECRET)
        moving = lambda_api.add_function("moving", url=FakeUrl(old.url + "/"))
        process = await start(spawn_proxy, lambda_api, "/m=function:moving")
        async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
            async with client.get(process.url + "/m/1") as answer:
                assert answer.status == 200
    moving.url = FakeUrl(fake.url + "/")  # `old` is gone
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(process.url + "/m/2") as answer:
            failed = (answer.status, answer.headers["X-Proxy-Error"])
        statuses = []
        for _ in range(100):  # the lookup runs in the background
            async with client.get(process.url + "/m/3") as answer:
                statuses.append(answer.status)
            if answer.status == 200:
                break
            await asyncio.sleep(0.05)

    assert failed == (502, "upstream_unreachable")
    assert statuses[-1] == 200 and fake.received[-1].raw_path == "/3"
    news = f"route /m -> function moving -> {fake.url}/ (AuthType AWS_IAM, BUFFERED)"
    assert news in "".join(process.lines)  # the new URL, said once found
    assert len([call for call in lambda_api.calls if call.operation == GET_URL]) == 2


async def test_a_404_from_the_url_looks_it_up_again(
    lambda_api: FakeLambdaApi, fake: FakeFunctionUrl, spawn_proxy: Any
) -> None:
    lambda_api.add_function("with-url", url=FakeUrl(fake.url + "/"))
    process = await start(spawn_proxy, lambda_api, "/a=function:with-url")
    for _ in range(3):  # looked up again once, however many 404s follow at once
        assert (await ask(process, "/a/status/404"))[0] == 404  # passed on as it came

    def lookups() -> int:
        return len([call for call in lambda_api.calls if call.operation == GET_URL])

    await until(lambda: lookups() == 2, process)
    await asyncio.sleep(0.2)
    assert lookups() == 2


async def test_answers_without_a_body_keep_the_connection_usable(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    """A 204 the function gives a body, and the answer to HEAD, go without it: the next
    request on the same connection is read as it should be."""
    lambda_api.add_function("nobody", lambda event: {"statusCode": 204, "body": "not sent"})
    lambda_api.add_function("streams", lambda event: Streamed([b"streamed"]))
    process = await start(
        spawn_proxy,
        lambda_api,
        "/nobody=function:nobody",
        "/plain=function:plain",
        "/streams=function:streams,invoke_mode=RESPONSE_STREAM",
    )
    lookups = len(lambda_api.peers)  # botocore's connections
    answers = []
    connector = aiohttp.TCPConnector(limit=1)  # one connection for every request
    async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as client:
        for method, path in (
            ("GET", "/nobody"),
            ("HEAD", "/plain"),
            ("GET", "/plain"),
            ("HEAD", "/streams"),
            ("GET", "/streams"),
        ):
            async with client.request(method, process.url + path) as answer:
                answers.append((answer.status, await answer.read()))

    assert answers == [
        (204, b""),
        (200, b""),
        (200, b'"Hello, world!"'),
        (200, b""),
        (200, b"streamed"),
    ]
    invokes = [call for call in lambda_api.calls if call.operation == INVOKE]
    assert [call.event["requestContext"]["http"]["method"] for call in invokes] == [
        "GET",
        "HEAD",
        "GET",
    ]
    assert len(lambda_api.peers) == lookups + 1  # every invoke on one kept-alive connection


async def test_the_routes_timeout_covers_the_invoke_and_its_stream(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    async def slow(event: Any) -> Any:
        await asyncio.sleep(10)
        return "too late"

    async def stalls() -> AsyncIterator[bytes]:
        yield b"a first part"
        await asyncio.sleep(10)
        yield b"never sent"

    lambda_api.add_function("slow", slow)
    lambda_api.add_function("stalls", lambda event: Streamed(stalls()))
    process = await start(
        spawn_proxy,
        lambda_api,
        "/slow=function:slow,timeout=1",
        "/stalls=function:stalls,invoke_mode=RESPONSE_STREAM,timeout=1",
    )

    status, headers, answer = await ask(process, "/slow/1")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(process.url + "/stalls/1") as streamed:
            first = await streamed.content.readexactly(len(b"a first part"))
            with pytest.raises(aiohttp.ClientPayloadError):
                await streamed.read()

    assert (status, headers["X-Proxy-Error"]) == (504, "upstream_timeout")
    assert "function slow did not answer within 1 s; raise the route's timeout" in answer.decode()
    assert (streamed.status, first) == (200, b"a first part")
    assert "upstream_failed_mid_body: TimeoutError" in await access_line(process, "/stalls/1")


async def test_a_client_that_stops_reading_holds_the_function_back_not_memory(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    """64 MiB streamed to a client that reads nothing for a while: the function is held back
    (the Lambda API's connection is not read), and the proxy's memory stays flat."""
    block, blocks = b"x" * 65536, 1024
    produced = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(blocks):
            produced += 1
            yield block

    lambda_api.add_function("big", lambda event: Streamed(chunks()))
    process = await start(spawn_proxy, lambda_api, "/big=function:big,invoke_mode=RESPONSE_STREAM")
    before = rss_mib(process.process.pid)
    reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
    try:
        writer.write(b"GET /big/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        seen = -1
        for _ in range(100):  # until the function stops making progress
            await asyncio.sleep(0.2)
            if produced == seen:
                break
            seen = produced
        held, grown = produced, rss_mib(process.process.pid) - before
        received, tail = 0, b""
        while not tail.endswith(b"\r\n0\r\n\r\n"):  # the last chunk
            data = await asyncio.wait_for(reader.read(1 << 20), 20)
            assert data, "the stream ended early"
            received += data.count(b"x")
            tail = (tail + data)[-7:]
    finally:
        writer.close()

    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
    assert held < blocks  # held back while the client read nothing
    assert grown < 16, f"RSS grew by {grown:.1f} MiB with {held} of {blocks} blocks made"
    assert received == len(block) * blocks  # then all of it, once read


async def test_the_trace_id_reaches_the_function_and_the_lambda_api(
    lambda_api: FakeLambdaApi, spawn_proxy: Any
) -> None:
    """X-Amzn-Trace-Id, as for a Function URL: the client's in the event's headers as sent, or
    one the proxy made; either way on the Invoke call too, and in the access line."""
    process = await start(spawn_proxy, lambda_api, "/echo=function:echo")
    given = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as client:
        async with client.get(process.url + "/echo/made") as answer:
            assert answer.status == 200
        async with client.get(
            process.url + "/echo/given", headers={"X-Amzn-Trace-Id": given}
        ) as answer:
            assert answer.status == 200
    made_call, given_call = [call for call in lambda_api.calls if call.operation == INVOKE]
    made = made_call.event["headers"]["x-amzn-trace-id"]
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", made)
    assert given_call.event["headers"]["x-amzn-trace-id"] == given
    for call, trace_id in ((made_call, made), (given_call, given)):
        assert [v for k, v in call.headers if k.lower() == "x-amzn-trace-id"] == [trace_id]
    assert f"trace={made}" in await access_line(process, "/echo/made")
    assert f"trace={given}" in await access_line(process, "/echo/given")

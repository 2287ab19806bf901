"""The inspector's endpoints (issue #15): the page, the requests listed, in detail and live
(Server-Sent Events), the replay; and the access rules of every reserved path on top of its own
(no CORS, nothing for a page of another origin)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession

from proxy.lifetime import LIVE
from tests.conftest import AKID, KEYS, SECRET, RunningProxy, route, running_proxy, spawn
from tests.fake_function_url import FakeFunctionUrl, KeyRecord
from tests.fake_lambda_api import FakeLambdaApi

TOKEN = "inspector-test-token-0123"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
REPLAY = {"X-Proxy-Inspector": "replay"}


async def get_json(proxy: RunningProxy, path: str, **headers: str) -> Any:
    async with proxy.client.get(proxy.url + path, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert not any(name.startswith("Access-Control-") for name in response.headers)
        return await response.json()


@contextlib.asynccontextmanager
async def watching(proxy: RunningProxy) -> AsyncIterator[aiohttp.StreamReader]:
    """The inspector's page open: its stream of events connected (the proxy has registered it
    once the answer's head has come)."""
    async with proxy.client.get(proxy.url + "/_proxy/events", headers=SAME_ORIGIN) as events:
        assert events.status == 200
        yield events.content


async def rows(proxy: RunningProxy, **headers: str) -> list[dict[str, Any]]:
    data = await get_json(proxy, "/_proxy/requests", **headers)
    requests: list[dict[str, Any]] = data["requests"]
    return requests


async def test_the_page_and_its_files_ship_in_the_package(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/_proxy/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    # No CDN, no build step: the page names only its own two files.
    assert '<script src="/_proxy/inspector.js" defer></script>' in page
    assert "http" not in page.replace("http-equiv", "")
    for name, kind in (("inspector.js", "text/javascript"), ("inspector.css", "text/css")):
        async with proxy.client.get(f"{proxy.url}/_proxy/{name}") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith(kind)
            assert len(await response.read()) > 1000


async def test_requests_are_listed_newest_first_and_shown_redacted(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with watching(proxy):  # a page is open: the steps are timed, the signature kept
        async with proxy.client.get(proxy.url + "/fn/first?x=1") as response:
            assert response.status == 200
        async with proxy.client.post(
            proxy.url + "/fn/second",
            data=b'{"name":"Ada","n":[1,2]}',
            headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer client-secret",
                "Cookie": "session=abc123; theme=dark",
                "X-Amz-Security-Token": "client-session-token",
            },
        ) as response:
            assert response.status == 200
            request_id = response.headers["x-amzn-RequestId"]
        listed = await rows(proxy)
        assert [(r["method"], r["path"], r["route"], r["status"]) for r in listed] == [
            ("POST", "/fn/second", "/fn", 200),
            ("GET", "/fn/first?x=1", "/fn", 200),
        ]
        assert listed[0]["request_id"] == request_id
        assert listed[0]["id"] > listed[1]["id"]

        detail = await get_json(proxy, f"/_proxy/requests/{listed[0]['id']}")
        # The function's echo of the cookie it received is its own body, shown as it answered.
        text = json.dumps({**detail, "response_body": None})
        for secret in ("client-secret", "abc123", "dark", "client-session-token", SECRET):
            assert secret not in text
        shown = {name.lower(): value for name, value in detail["request_headers"]}
        assert shown["authorization"] == "Bearer <redacted>"
        assert shown["cookie"] == "session=<masked>; theme=<masked>"
        assert shown["x-amz-security-token"] == "<redacted>"
        assert detail["request_body"] == {
            "size": 24,
            "truncated": False,
            "kind": "json",
            "text": '{\n  "name": "Ada",\n  "n": [\n    1,\n    2\n  ]\n}',
        }
        answer = json.loads(detail["response_body"]["text"])  # what the function echoed
        assert (answer["method"], answer["path"]) == ("POST", "/second")
        assert detail["response_body"]["kind"] == "json"
        assert ["Content-Type", "application/json"] in detail["response_headers"]
        signature = detail["signature"]
        assert signature["canonical_request"].startswith("POST\n/second\n\nhost:")
        assert signature["string_to_sign"].startswith("AWS4-HMAC-SHA256\n")
        assert AKID not in text and f"{AKID[:4]}...{AKID[-4:]}" in text  # the key masked
        assert "Signature=<omitted>" in signature["signed_headers"][-1]
        timings = detail["timings"]
        assert set(timings) == {
            "credentials_ms", "signing_ms", "connect_ms", "first_byte_ms", "total_ms"
        }  # fmt: skip
        assert all(isinstance(value, float) and value >= 0 for value in timings.values()), timings
        assert detail["curl"].startswith(
            f"curl {proxy.url}/fn/second -H 'Content-Type: application"
        )
        assert detail["replayable"] is True
        assert detail["diagnosis"] is None


async def test_with_no_page_open_only_the_ring_is_kept(proxy: RunningProxy) -> None:
    """No page open: no clock reading and no signature input is kept (the cost of the inspector
    on every request, bench/README.md); the headers and bodies are, and the page says why the
    rest is missing. A page open: the steps are timed; closed again: no longer."""
    inspector = proxy.app[LIVE].inspector
    assert inspector is not None and not inspector.watched
    async with proxy.client.post(proxy.url + "/fn/unwatched", data=b"hello") as response:
        assert response.status == 200
    async with watching(proxy) as events:
        assert inspector.watched
        async with proxy.client.get(proxy.url + "/fn/watched") as response:
            assert response.status == 200
        async with proxy.client.get(proxy.url + "/nowhere") as response:
            assert response.status == 404
        unwatched = await read_event(events)  # the ring, first
        watched, own = await read_event(events), await read_event(events)
        assert [row["path"] for row in (unwatched, watched, own)] == [
            "/fn/unwatched", "/fn/watched", "/nowhere"
        ]  # fmt: skip
    for _ in range(200):  # the page's stream ends with its connection: the proxy sees it go
        if not inspector.watched:
            break
        await asyncio.sleep(0.01)
    assert not inspector.watched
    async with proxy.client.get(proxy.url + "/fn/after") as response:
        assert response.status == 200
    steps = {r.exchange.path: r.steps for r in inspector.entries()}
    assert steps["/fn/watched"] is not None and steps["/nowhere"] is not None
    assert steps["/fn/unwatched"] is None and steps["/fn/after"] is None

    detail = await get_json(proxy, f"/_proxy/requests/{unwatched['id']}")
    assert detail["request_body"]["text"] == "hello"
    assert json.loads(detail["response_body"]["text"])["path"] == "/unwatched"
    assert ["Content-Length", "5"] in detail["request_headers"]
    assert detail["signature"] is None
    assert detail["not_signed"] == "not recorded: no inspector page was open when it passed"
    timings = detail["timings"]
    assert timings.pop("total_ms") > 0 and set(timings.values()) == {None}
    detail = await get_json(proxy, f"/_proxy/requests/{watched['id']}")
    assert detail["signature"]["canonical_request"].startswith("GET\n/watched\n")
    assert detail["not_signed"] is None
    assert all(value is not None for value in detail["timings"].values()), detail["timings"]
    detail = await get_json(proxy, f"/_proxy/requests/{own['id']}")
    assert detail["not_signed"] == "not signed: the proxy answered itself"


async def test_with_debug_on_the_trace_fills_the_pages_steps(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], log_level="debug") as proxy:
        async with watching(proxy) as events:
            async with proxy.client.get(proxy.url + "/fn/traced") as response:
                assert response.status == 200
            row = await read_event(events)
            detail = await get_json(proxy, f"/_proxy/requests/{row['id']}")
    assert detail["signature"]["canonical_request"].startswith("GET\n/traced\n")
    assert all(value is not None for value in detail["timings"].values()), detail["timings"]


async def test_an_invoked_function_shows_the_lambda_api_call_it_signed(aws_keys: None) -> None:
    """A function without a URL (proxy/invoke.py): the ring keeps the client's request and the
    function's answer; the signature is of the Invoke call to the Lambda API."""
    async with FakeLambdaApi() as api:
        api.keys[AKID] = KeyRecord(SECRET)
        api.add_function("echo")
        os.environ["AWS_ENDPOINT_URL_LAMBDA"] = api.url
        try:
            routes = [{"prefix": "/echo", "function": "echo", "region": "us-east-1"}]
            async with running_proxy(routes=routes) as proxy, watching(proxy) as events:
                async with proxy.client.post(proxy.url + "/echo/x?a=1", data=b"hi") as response:
                    assert response.status == 200
                    answer = await response.read()
                row = await read_event(events)
                detail = await get_json(proxy, f"/_proxy/requests/{row['id']}")
        finally:
            del os.environ["AWS_ENDPOINT_URL_LAMBDA"]
    assert (row["path"], row["route"], row["status"]) == ("/echo/x?a=1", "/echo", 200)
    assert detail["request_body"]["text"] == "hi"
    assert detail["response_body"]["text"] == json.dumps(json.loads(answer), indent=2)
    canonical = detail["signature"]["canonical_request"]
    assert canonical.startswith("POST\n/2015-03-31/functions/echo/invocations\n"), canonical
    assert all(value is not None for value in detail["timings"].values()), detail["timings"]


async def test_a_refusal_shows_its_diagnosis(fake: FakeFunctionUrl, aws_keys: None) -> None:
    fake.keys.clear()  # AWS does not know the key: 403 UnrecognizedClientException
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 403
        (row,) = await rows(proxy)
        detail = await get_json(proxy, f"/_proxy/requests/{row['id']}")
    assert detail["upstream_error_type"] == "UnrecognizedClientException"
    assert detail["diagnosis"].startswith("credentials_rejected: AWS rejected the credentials")


async def test_the_proxys_own_answers_are_recorded(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/nowhere") as response:
        assert response.status == 404
    (row,) = await rows(proxy)
    assert (row["path"], row["status"], row["outcome"]) == ("/nowhere", 404, "no_route")
    detail = await get_json(proxy, f"/_proxy/requests/{row['id']}")
    assert ["X-Proxy-Error", "no_route"] in detail["response_headers"]
    assert json.loads(detail["response_body"]["text"])["error"] == "no_route"
    assert detail["signature"] is None  # never signed


async def read_event(stream: aiohttp.StreamReader) -> dict[str, Any]:
    """The next `request` event's data (comments skipped)."""
    while True:
        block = (await asyncio.wait_for(stream.readuntil(b"\n\n"), 10)).decode()
        fields = dict(line.split(": ", 1) for line in block.strip().split("\n") if ": " in line)
        if fields.get("event") == "request":
            data: dict[str, Any] = json.loads(fields["data"])
            assert fields["id"] == str(data["id"])
            return data


async def test_events_stream_the_ring_then_each_request_live(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/fn/before") as response:
        assert response.status == 200
    async with proxy.client.get(proxy.url + "/_proxy/events", headers=SAME_ORIGIN) as events:
        assert events.status == 200
        assert events.headers["Content-Type"] == "text/event-stream"
        assert events.headers["Cache-Control"] == "no-store"
        assert (await read_event(events.content))["path"] == "/fn/before"
        inspector = proxy.app[LIVE].inspector
        assert inspector is not None and inspector.watched
        async with proxy.client.get(proxy.url + "/fn/during") as response:
            assert response.status == 200
        live = await read_event(events.content)
        assert (live["path"], live["status"], live["route"]) == ("/fn/during", 200, "/fn")
    # The page's own requests are neither in the ring nor in the log.
    assert [r["path"] for r in await rows(proxy)] == ["/fn/during", "/fn/before"]


async def test_replay_sends_the_same_request_again(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with proxy.client.put(
        proxy.url + "/fn/items/7?b=2&a=1", data=b"payload", headers={"X-Custom": "yes"}
    ) as response:
        assert response.status == 200
    (row,) = await rows(proxy)
    url = f"{proxy.url}/_proxy/requests/{row['id']}/replay"
    async with proxy.client.post(url, headers=REPLAY) as response:
        assert response.status == 200, await response.text()
        replayed = await response.json()
    assert replayed["replayed"] == row["id"] and replayed["status"] == 200
    first, second = fake.received
    assert (second.method, second.raw_path) == (first.method, first.raw_path)
    assert second.body == first.body == b"payload"
    assert second.verified and dict(second.headers)["X-Custom"] == "yes"
    newest = (await rows(proxy))[0]
    assert (newest["method"], newest["path"], newest["id"]) == ("PUT", row["path"], row["id"] + 1)


@pytest.mark.parametrize(
    ("method", "headers", "status", "code"),
    [
        ("POST", {}, 400, "bad_request"),  # what a form on another site sends: no header
        ("GET", REPLAY, 405, "method_not_allowed"),
        ("POST", {**REPLAY, "Origin": "http://localhost:5173"}, 403, "origin_not_allowed"),
        ("POST", {**REPLAY, "Sec-Fetch-Site": "same-site"}, 403, "origin_not_allowed"),
        ("POST", {**REPLAY, "Sec-Fetch-Site": "cross-site"}, 403, "origin_not_allowed"),
    ],
    ids=["no-header", "get", "other-origin", "same-site", "cross-site"],
)
async def test_replay_is_refused_to_anything_but_the_page(
    fake: FakeFunctionUrl,
    aws_keys: None,
    method: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with running_proxy(
        routes=[route("/fn", fake.url)], cors_origins=["http://localhost:5173"]
    ) as proxy:
        async with proxy.client.post(proxy.url + "/fn/x", data=b"1") as response:
            assert response.status == 200
        (row,) = await rows(proxy)
        url = f"{proxy.url}/_proxy/requests/{row['id']}/replay"
        async with proxy.client.request(method, url, headers=headers) as response:
            assert response.status == status
            assert response.headers["X-Proxy-Error"] == code
            assert not any(name.startswith("Access-Control-") for name in response.headers)
        # An allowed CORS origin gets no preflight answered either.
        preflight = {
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-proxy-inspector",
        }
        async with proxy.client.options(url, headers=preflight) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
    assert len(fake.received) == 1  # never replayed


async def test_the_ring_keeps_the_last_requests_and_caps_bodies(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    big = bytes(range(256)) * 300  # 76,800 bytes, over the 64 KiB cap
    async with running_proxy(routes=[route("/fn", fake.url)], inspector_size=2) as proxy:
        for n in range(3):
            async with proxy.client.get(f"{proxy.url}/fn/{n}") as response:
                assert response.status == 200
        assert [r["path"] for r in await rows(proxy)] == ["/fn/2", "/fn/1"]
        async with proxy.client.post(proxy.url + "/fn/upload", data=big) as response:
            assert response.status == 200
        async with proxy.client.get(proxy.url + "/fn/stream/200000/4") as response:
            assert len(await response.read()) == 200000
        streamed, upload = await rows(proxy)
        detail = await get_json(proxy, f"/_proxy/requests/{upload['id']}")
        assert detail["request_body"] == {"size": len(big), "truncated": True, "kind": "binary"}
        assert detail["replayable"] is False
        assert detail["curl"].endswith(" --data-binary @body.bin")
        async with proxy.client.post(
            f"{proxy.url}/_proxy/requests/{upload['id']}/replay", headers=REPLAY
        ) as response:
            assert response.status == 409
            assert "64 KiB" in (await response.json())["message"]
        detail = await get_json(proxy, f"/_proxy/requests/{streamed['id']}")
        assert detail["response_body"] == {"size": 200000, "truncated": True, "kind": "binary"}
        inspector = proxy.app[LIVE].inspector
        assert inspector is not None
        kept = [entry.capture for entry in inspector.entries()]
        assert [len(c.request_body) for c in kept] == [65536, 0]
        assert len(kept[1].response_body) == 65536  # of the stream, no more was kept
        assert len(kept[0].response_body) == upload["bytes"] < 65536  # the echo, whole


async def test_no_inspector(fake: FakeFunctionUrl, aws_keys: None) -> None:
    async with running_proxy(routes=[route("/fn", fake.url)], inspector=False) as proxy:
        assert proxy.app[LIVE].inspector is None
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 200
        for path in ("/_proxy/", "/_proxy/requests", "/_proxy/events"):
            async with proxy.client.get(proxy.url + path) as response:
                assert response.status == 404
                assert (await response.json())["error"] == "no_route"


async def test_with_a_token_only_the_page_itself_is_open(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    auth = {"X-Proxy-Token": TOKEN}
    async with running_proxy(routes=[route("/fn", fake.url)], access_token=TOKEN) as proxy:
        async with proxy.client.get(proxy.url + "/_proxy/") as response:
            assert response.status == 200  # a typed address carries no token: no data in it
        for path in ("/_proxy/requests", "/_proxy/events", "/_proxy/requests/1"):
            async with proxy.client.get(proxy.url + path) as response:
                assert response.status == 401
        async with proxy.client.get(
            f"{proxy.url}/fn/x?token={TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200
        # The refusals above are in the ring too: requests the proxy refused are what one
        # looks for here.
        assert [r["status"] for r in await rows(proxy, **auth)][1:] == [401] * 3
        row = (await rows(proxy, **auth))[0]
        detail = await get_json(proxy, f"/_proxy/requests/{row['id']}", **auth)
        assert TOKEN not in json.dumps(detail)
        assert detail["path"] == "/fn/x?token=<redacted>"
        assert detail["curl"].endswith(' -H "X-Proxy-Token: $LAMBDA_URL_PROXY_ACCESS_TOKEN"')
        replay = f"{proxy.url}/_proxy/requests/{row['id']}/replay"
        async with proxy.client.post(replay, headers=REPLAY) as response:
            assert response.status == 401
        async with proxy.client.post(replay, headers={**REPLAY, **auth}) as response:
            assert (await response.json())["status"] == 200  # sent with the proxy's token
        async with proxy.client.get(
            proxy.url + "/_proxy/", headers={"Host": "evil.example"}
        ) as response:
            assert response.status == 403  # the rebinding defence stands for the page too
    assert len(fake.received) == 2
    assert TOKEN not in caplog.text.replace(f"token={TOKEN}", "")


@pytest.mark.slow
async def test_the_installed_command_takes_the_flags(
    fake: FakeFunctionUrl, started: Any, spawn_proxy: Any
) -> None:
    sized = await started("--inspector-size", "1")
    off = await started("--no-inspector")
    environment = {**KEYS, "LAMBDA_URL_PROXY_INSPECTOR": "false"}
    by_env = await asyncio.to_thread(
        lambda: spawn_proxy("--route", f"/fn={fake.url}", "--region", "us-east-1", env=environment)
    )
    async with ClientSession() as client:
        for n in range(2):
            async with client.get(f"{sized.url}/fn/{n}") as response:
                assert response.status == 200
        async with client.get(sized.url + "/_proxy/requests") as response:
            assert [r["path"] for r in (await response.json())["requests"]] == ["/fn/1"]
        for running in (off, by_env):
            async with client.get(running.url + "/_proxy/") as response:
                assert response.status == 404


def test_a_bad_size_is_refused_at_start_up(fake: FakeFunctionUrl) -> None:
    result = subprocess.run(
        ["lambda-url-proxy", "--route", f"/fn={fake.url}", "--inspector-size", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "inspector_size" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
async def test_an_open_page_does_not_hold_the_shutdown(fake: FakeFunctionUrl) -> None:
    running = await asyncio.to_thread(
        spawn,
        ["lambda-url-proxy", "--port", "0", "--route", f"/fn={fake.url}", "--region",
         "us-east-1", "--shutdown-grace", "60"],
        KEYS,
    )  # fmt: skip
    try:
        async with ClientSession() as client:
            async with client.get(running.url + "/_proxy/events") as events:
                assert events.status == 200
                running.process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(events.content.read(), 20) == b""
            code = await asyncio.to_thread(running.process.wait, 20)  # not the 60 s grace
        assert code == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()

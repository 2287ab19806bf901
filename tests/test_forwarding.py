"""Requests go through the proxy, signed, and the fake Function URL (awscrt) accepts them."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import (
    AKID,
    RunningProxy,
    Stack,
    raw_response,
    route,
    running_proxy,
)
from tests.fake_function_url import FakeFunctionUrl, KeyRecord


async def echo(proxy: RunningProxy, target: str, **kwargs: Any) -> dict[str, Any]:
    method = kwargs.pop("method", "GET")
    async with proxy.client.request(method, URL(proxy.url + target, encoded=True), **kwargs) as r:
        text = await r.text()
        assert r.status == 200, text
        result: dict[str, Any] = json.loads(text)
        return result


async def test_get_is_signed_and_reaches_the_function(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    data = await echo(proxy, "/fn/42")
    assert data["method"] == "GET"
    assert data["raw_path"] == "/42"
    assert data["access_key"] == AKID
    assert fake.received[-1].verified


async def test_post_body_arrives_exactly_and_is_hashed(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    body = bytes(range(256)) * 40
    data = await echo(proxy, "/fn/items", method="POST", data=body)
    assert data["body_length"] == len(body)
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    headers = dict((k.lower(), v) for k, v in fake.received[-1].headers)
    assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method(proxy: RunningProxy, method: str) -> None:
    data = await echo(proxy, "/fn/x", method=method, data=b"payload")
    assert data["method"] == method


async def test_chunked_upload_is_read_whole_and_signed(proxy: RunningProxy) -> None:
    async def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 1000

    data = await echo(proxy, "/fn/up", method="POST", data=chunks())
    assert data["body_length"] == 5000


async def test_head(proxy: RunningProxy) -> None:
    async with proxy.client.head(proxy.url + "/fn/x") as response:
        assert response.status == 200
        assert await response.read() == b""


# Every legal path and query a browser or curl can send; AWS (awscrt) must accept each.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/fn/caf%C3%A9/%E2%9C%93", "/caf%C3%A9/%E2%9C%93", ""),
        ("/fn/a%20b/c%20d", "/a%20b/c%20d", ""),
        ("/fn/a+b", "/a%2Bb", ""),
        ("/fn/a%2Fb", "/a%2Fb", ""),
        ("/fn/!*'()", "/%21%2A%27%28%29", ""),
        ("/fn/user@example.com", "/user%40example.com", ""),
        ("/fn/a:b=c;d,e$", "/a%3Ab%3Dc%3Bd%2Ce%24", ""),
        ("/fn/trailing/", "/trailing/", ""),
        ("/fn/line%0Abreak%0D%00", "/line%0Abreak%0D%00", ""),
        ("/fn/%FF%fe", "/%FF%FE", ""),
        ("/fn/q?bytes=%FF", "/q", "bytes=%FF"),
        ("/fn/a/./b/../c", "/a/c", ""),
        ("/fn//double//slashes", "/double/slashes", ""),
        ("/fn/%7Euser/%41", "/~user/A", ""),
        ("/fn/q?b=2&a=1", "/q", "a=1&b=2"),
        ("/fn/q?a=2&a=1&a=1", "/q", "a=1&a=1&a=2"),
        ("/fn/q?flag&x=", "/q", "flag=&x="),
        ("/fn/q?empty=&=v", "/q", "=v&empty="),
        ("/fn/q?plus=1+2&space=1%202", "/q", "plus=1%2B2&space=1%202"),
        ("/fn/q?slash=a/b&enc=a%2Fb", "/q", "enc=a%2Fb&slash=a%2Fb"),
        ("/fn/q?q=caf%C3%A9&x=!*'()@:", "/q", "q=caf%C3%A9&x=%21%2A%27%28%29%40%3A"),
        ("/fn/q?eq=a=b&tilde=%7e", "/q", "eq=a%3Db&tilde=~"),
        ("/fn/q?", "/q", ""),
    ],
)
async def test_legal_paths_and_queries_are_accepted(
    proxy: RunningProxy, target: str, path: str, query: str
) -> None:
    data = await echo(proxy, target)
    assert data["path"] == path
    assert data["query"] == query


async def test_what_curl_sends_for_unicode_and_spaces(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    """curl percent-encodes a non-ASCII path (lower-case hex); -G --data-urlencode encodes the
    query, writing a space as '+', which AWS reads as a literal plus (README explains)."""
    result = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-G",
        f"{proxy.url}/fn/café/ü",
        "--data-urlencode",
        "q=ü&x",
        "--data-urlencode",
        "s=a b",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await result.communicate()
    assert result.returncode == 0
    assert json.loads(out)["raw_path"] == "/caf%C3%A9/%C3%BC?q=%C3%BC%26x&s=a%2Bb"
    assert fake.received[-1].verified


async def test_raw_utf8_in_the_query_gets_a_json_400_that_says_how_to_encode_it(
    proxy: RunningProxy, fake: FakeFunctionUrl, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9112 allows only ASCII in a request-target; curl sends a raw UTF-8 query as typed
    (`curl 'localhost:8080/fn/search?q=café'`). The parser refuses it: the client gets the
    proxy's JSON error with the way out, the log one access line and no traceback."""
    caplog.set_level(logging.INFO)
    port = URL(proxy.url).port
    assert port is not None
    request = "GET /fn/search?q=café HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    head, body = await raw_response(port, request)
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"X-Proxy-Error: bad_request" in head and b"Content-Type: application/json" in head
    error = json.loads(body)
    assert error["error"] == "bad_request"
    message = error["message"]
    assert "non-ASCII characters in its query" in message
    assert "é is %C3%A9" in message
    assert "curl -G localhost:8080/search --data-urlencode 'q=café'" in message
    assert "\\x" not in message and "Invalid char" not in message  # not the parser's dump
    (line,) = [record for record in caplog.records if record.name == "proxy.access"]
    assert line.levelname == "WARNING"
    assert "GET /fn/search?q=café -> - 400" in line.getMessage()
    assert "bad_request" in line.getMessage()
    others = [r for r in caplog.records if r.name != "proxy.access" and r.levelno >= logging.INFO]
    assert [r.getMessage() for r in others if "credentials for" not in r.getMessage()] == []
    assert all(record.exc_info is None for record in caplog.records)
    assert fake.received == []


async def test_raw_utf8_in_the_path_says_where(proxy: RunningProxy) -> None:
    port = URL(proxy.url).port
    assert port is not None
    request = "GET /fn/caf\u00e9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    _, body = await raw_response(port, request)
    message = json.loads(body)["message"]
    assert "non-ASCII characters in its path" in message and "é is %C3%A9" in message


async def test_proxy_headers_replace_the_clients(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    await echo(
        proxy,
        "/fn/h",
        headers={
            "Host": "localhost:9999",  # not the upstream: replaced by its Host
            "Authorization": "Bearer client-token",
            "X-Amz-Date": "20000101T000000Z",
            "X-Amz-Security-Token": "client-token",
            "Date": "Sat, 01 Jan 2000 00:00:00 GMT",
            "X-Forwarded-For": "10.9.9.9",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "host=evil.example",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "per-connection",
            "X-Custom": "kept",
            "User-Agent": "test-agent/1.0",
            "Content-Type": "application/json",
        },
    )
    sent = fake.received[-1]
    names = [name.lower() for name, _ in sent.headers]
    headers = {name.lower(): value for name, value in sent.headers}
    assert headers["host"] == f"127.0.0.1:{fake.port}"
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + AKID)
    assert headers["x-amz-date"] != "20000101T000000Z"
    for dropped in (
        "date",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "keep-alive",
        "te",
        "x-hop",
        "x-amz-security-token",
    ):
        assert dropped not in names, dropped
    assert names.count("authorization") == 1
    assert headers["x-custom"] == "kept"
    assert headers["user-agent"] == "test-agent/1.0"
    assert headers["content-type"] == "application/json"
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert signed == "host;x-amz-content-sha256;x-amz-date"


async def test_no_headers_invented_for_the_client(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    await echo(proxy, "/fn/plain", skip_auto_headers=["Accept", "Accept-Encoding", "User-Agent"])
    names = {name.lower() for name, _ in fake.received[-1].headers}
    assert "accept-encoding" not in names
    assert "content-type" not in names


async def test_repeated_request_headers_keep_every_value(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    from multidict import CIMultiDict

    await echo(proxy, "/fn/r", headers=CIMultiDict([("X-Multi", "one"), ("X-Multi", "two")]))
    assert [v for k, v in fake.received[-1].headers if k.lower() == "x-multi"] == ["one", "two"]


async def test_session_token_is_sent_and_signed(
    fake: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.keys["ASIATEMPORARY0000001"] = KeyRecord("temp-secret", session_token="the-session-token")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY0000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "temp-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "the-session-token")
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        await echo(proxy, "/fn/t")
    authorization = dict((k.lower(), v) for k, v in fake.received[-1].headers)["authorization"]
    assert "x-amz-security-token" in authorization


async def test_route_with_base_path_and_without_strip(
    fake: FakeFunctionUrl, aws_keys: None
) -> None:
    routes = [
        route("/v", fake.url + "/base"),
        route("/keep", fake.url, strip_prefix=False),
    ]
    async with running_proxy(routes=routes) as proxy:
        assert (await echo(proxy, "/v/x"))["path"] == "/base/x"
        assert (await echo(proxy, "/keep/x"))["path"] == "/keep/x"


async def test_upstream_403_passes_through_unchanged(fake: FakeFunctionUrl, aws_keys: None) -> None:
    fake.keys[AKID] = KeyRecord("a-different-secret")
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 403
            assert response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
            assert "X-Proxy-Error" not in response.headers
            body = await response.json()
            assert body["message"].startswith("The request signature we calculated does not match")


async def test_connections_to_the_upstream_are_reused(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    for _ in range(10):
        await echo(proxy, "/fn/pool")
    assert len(fake.peers) == 1


# --- property: every request the proxy forwards verifies at the fake ---------------------------

PATH_SAFE = "abcXYZ019-._~!$&'()*+,;=:@"  # legal unencoded in a path segment (RFC 3986 pchar)
QUERY_SAFE = "abcXYZ019-._~!$'()*,;:@/?"  # legal unencoded in a query name or value


def _spell(text: str, safe: str, raw: list[bool]) -> str:
    """Each character either as itself (where legal) or percent-encoded, as a client might."""
    out = []
    for i, char in enumerate(text):
        if char in safe and raw[i % len(raw)]:
            out.append(char)
        else:
            encoded = "".join(f"%{byte:02X}" for byte in char.encode())
            out.append(encoded.lower() if i % 2 else encoded)
    return "".join(out)


chars = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(PATH_SAFE),
    max_size=6,
)
segments = st.lists(chars | st.sampled_from(["", ".", ".."]), max_size=5)
pairs = st.lists(st.tuples(chars, st.none() | chars), max_size=4)


def _expected_segments(parts: list[str]) -> list[str]:
    kept: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if kept:
                kept.pop()
            continue
        kept.append(part)
    return kept


@pytest.mark.slow
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=segments,
    query=pairs,
    body=st.binary(max_size=256),
    spelling=st.lists(st.booleans(), min_size=1, max_size=5),
    method=st.sampled_from(["GET", "POST", "PUT"]),
)
def test_any_request_is_forwarded_so_that_aws_accepts_it(
    threaded_stack: Stack,
    parts: list[str],
    query: list[tuple[str, str | None]],
    body: bytes,
    spelling: list[bool],
    method: str,
) -> None:
    path = "/fn/" + "/".join(
        p if p in (".", "..") else _spell(p, PATH_SAFE, spelling) for p in parts
    )
    items = [
        _spell(k, QUERY_SAFE, spelling)
        + ("" if v is None else "=" + _spell(v, QUERY_SAFE, spelling))
        for k, v in query
    ]
    target = path + ("?" + "&".join(items) if items else "")
    connection = http.client.HTTPConnection("127.0.0.1", threaded_stack.port, timeout=10)
    try:
        connection.request(method, target, body=body or None)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    dot_free = _expected_segments(["fn", *parts])
    if dot_free[:1] != ["fn"]:
        assert response.status == 404, answer  # `..` climbed out of the route: no other upstream
        return
    assert response.status == 200, (target, answer)
    data = json.loads(answer)
    received = [unquote(s) for s in data["path"].split("/")[1:] if s]
    assert received == dot_free[1:]
    sent_pairs = sorted((k, v or "") for k, v in query if k or v is not None)
    got = [p.partition("=") for p in data["query"].split("&")] if data["query"] else []
    assert sorted((unquote(k), unquote(v)) for k, _, v in got) == sent_pairs
    assert data["body_sha256"] == hashlib.sha256(body).hexdigest()

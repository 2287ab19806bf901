"""Hostile and malformed input: a clear 4xx, never a 500, nothing reaches the upstream, and
the next normal request is still served."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import RunningProxy, Stack
from tests.fake_function_url import FakeFunctionUrl

HOST = b"Host: 127.0.0.1\r\n"

MALFORMED = {
    "invalid method": b"G(T /fn/x HTTP/1.1\r\n" + HOST + b"\r\n",
    "bad percent-encoding": b"GET /fn/%zz HTTP/1.1\r\n" + HOST + b"\r\n",
    "NUL in the path": b"GET /fn/a\x00b HTTP/1.1\r\n" + HOST + b"\r\n",
    "control byte in a header": b"GET /fn/x HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n",
    "over-long URL": b"GET /fn/" + b"a" * 20000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "over-long header": b"GET /fn/x HTTP/1.1\r\n" + HOST + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n",
    "thousands of headers": b"GET /fn/x HTTP/1.1\r\n"
    + HOST
    + b"".join(b"X-H%d: v\r\n" % i for i in range(2000))  # 22 KB: aiohttp's count refuses
    + b"\r\n",
    "head over max_head_size": b"GET /fn/x HTTP/1.1\r\n"
    + HOST
    + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 8000) for i in range(5))
    + b"\r\n",
    "conflicting Content-Length": b"POST /fn/x HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "Content-Length with Transfer-Encoding": b"POST /fn/x HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"POST /fn/x HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "absolute-form target": b"GET http://127.0.0.1:9/x HTTP/1.1\r\n" + HOST + b"\r\n",
    "authority-form target": b"CONNECT 127.0.0.1:9 HTTP/1.1\r\n" + HOST + b"\r\n",
    "asterisk-form target": b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
}
CODES = {"head over max_head_size": "head_too_large"}  # the others: bad_request


async def exchange(
    proxy: RunningProxy, request: bytes, timeout: float = 5.0, read_body: bool = False
) -> bytes:
    port = URL(proxy.url).port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        try:
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    data += chunk
                    head, found, body = data.partition(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    if found and (not read_body or (length and len(body) >= int(length[1]))):
                        break
        except TimeoutError:
            pass
        return data
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def still_serving(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/fn/after") as response:
        assert response.status == 200


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_requests_get_a_4xx_and_reach_nothing(
    proxy: RunningProxy,
    fake: FakeFunctionUrl,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    code = CODES.get(name, "bad_request")
    answer = await exchange(proxy, MALFORMED[name], read_body=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head[9:10] == b"4", answer[:300]
    # The proxy's one error shape, whichever layer refused the request.
    assert b"application/json" in head and f"X-Proxy-Error: {code}".encode() in head, head
    assert json.loads(body)["error"] == code
    assert fake.received == []
    # One access line, whichever layer refused it, and no traceback.
    (line,) = [record for record in caplog.records if record.name == "proxy.access"]
    assert code in line.getMessage() and line.levelname == "WARNING"
    assert all(record.exc_info is None for record in caplog.records)
    await still_serving(proxy)


async def test_http_1_0_is_served(proxy: RunningProxy, fake: FakeFunctionUrl) -> None:
    answer = await exchange(proxy, b"GET /fn/old HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.") and answer[9:12] == b"200", answer[:200]
    assert fake.received[-1].verified


async def test_pipelined_requests_are_all_answered_in_order(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    port = URL(proxy.url).port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /fn/one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"GET /fn/two HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"GET /fn/three HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.count(b"HTTP/1.1 200") == 3
    assert [r.raw_path for r in fake.received] == ["/one", "/two", "/three"]


@pytest.mark.slow
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(line=st.binary(min_size=1, max_size=200))
def test_any_bytes_never_crash_the_proxy(line: bytes, threaded_stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", threaded_stack.port), timeout=5) as sock:
        sock.sendall(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(2)
        try:
            answer = sock.recv(65536)
        except (TimeoutError, ConnectionError):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 5") and not answer.startswith(b"HTTP/1.0 5"), answer

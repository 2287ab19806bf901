"""Responses stream back as they arrive, byte for byte, and failures are never hidden."""

from __future__ import annotations

import asyncio
import gzip
import time

import pytest
from aiohttp import ClientPayloadError

from tests.conftest import RunningProxy, raw_exchange
from tests.fake_function_url import FakeFunctionUrl, pattern


def expected_bytes(n: int) -> bytes:
    return b"".join(pattern(0, n))


@pytest.mark.slow
async def test_chunks_arrive_as_they_are_sent(proxy: RunningProxy) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    async with proxy.client.get(proxy.url + "/fn/stream/500/5?delay=0.4") as response:
        assert response.status == 200
        assert "Content-Length" not in response.headers
        async for _ in response.content.iter_any():
            arrivals.append(time.monotonic() - started)
    # Buffered, the first byte would come with the last, after 4 delays (1.6 s).
    assert arrivals[0] < 1.0
    assert arrivals[-1] >= 1.5


async def test_large_chunked_stream_is_byte_exact(proxy: RunningProxy) -> None:
    n = 8 * 1024 * 1024 + 7
    async with proxy.client.get(proxy.url + f"/fn/stream/{n}/37") as response:
        assert await response.read() == expected_bytes(n)


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
async def test_a_stream_ends_with_its_last_chunk_whatever_the_connection(
    proxy: RunningProxy, connection: str
) -> None:
    """The last part and the terminating chunk go out together, also when the client asked
    for the connection to close after the answer (urllib, curl --no-keepalive, a pod's app)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    target = "/fn/slow-stream/3/0.05"
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n".encode()
    )
    try:
        answer = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"5\r\ntick\n\r\n" * 3 + b"0\r\n\r\n"


async def test_an_http_1_0_stream_ends_with_the_connection(proxy: RunningProxy) -> None:
    """An HTTP/1.0 client gets the whole body of an answer that streamed in, without chunked
    coding (the end of the connection ends the body): the last part was once dropped with it."""
    port = int(proxy.url.rsplit(":", 1)[1])
    request = b"GET /fn/slow-stream/3/0.05 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    answer = await raw_exchange(port, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert body == b"tick\n" * 3


async def test_content_length_is_kept(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/fn/bytes/100000") as response:
        assert response.headers["Content-Length"] == "100000"
        assert "Transfer-Encoding" not in response.headers
        assert await response.read() == expected_bytes(100000)


async def test_gzip_passes_through_untouched(proxy: RunningProxy) -> None:
    async with proxy.client.get(
        proxy.url + "/fn/gzip", headers={"Accept-Encoding": "gzip"}
    ) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        raw = await response.read()
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == b'{"compressed": true}'


async def test_every_set_cookie_is_kept(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/fn/cookies") as response:
        assert response.headers.getall("Set-Cookie") == [
            "a=1; Path=/",
            "b=2; Path=/",
            "c=3; Path=/; HttpOnly",
        ]


async def test_cookies_are_not_kept_between_clients(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with proxy.client.get(proxy.url + "/fn/cookies"):
        pass
    async with proxy.client.get(proxy.url + "/fn/after"):
        pass
    assert "cookie" not in {name.lower() for name, _ in fake.received[-1].headers}


async def test_redirects_are_returned_not_followed(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    async with proxy.client.get(proxy.url + "/fn/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "https://example.com/elsewhere"
    assert len(fake.received) == 1


@pytest.mark.parametrize("status", [201, 204, 304, 400, 404, 429, 500, 502, 503])
async def test_status_codes_pass_through(proxy: RunningProxy, status: int) -> None:
    async with proxy.client.get(proxy.url + f"/fn/status/{status}") as response:
        assert response.status == status
        assert response.headers["x-fake-status"] == str(status)
        assert "X-Proxy-Error" not in response.headers


async def test_upstream_request_id_reaches_the_client(proxy: RunningProxy) -> None:
    async with proxy.client.get(proxy.url + "/fn/id") as response:
        assert len(response.headers["x-amzn-RequestId"]) == 36


@pytest.mark.parametrize("kind", ["truncate", "truncate-chunked"])
async def test_truncated_upstream_body_is_never_a_clean_end(proxy: RunningProxy, kind: str) -> None:
    async with proxy.client.get(proxy.url + f"/fn/{kind}/200000") as response:
        assert response.status == 200
        with pytest.raises(ClientPayloadError):
            await response.read()
    # The proxy keeps serving.
    async with proxy.client.get(proxy.url + "/fn/ok") as response:
        assert response.status == 200


async def test_client_disconnect_closes_the_upstream_request(
    proxy: RunningProxy, fake: FakeFunctionUrl
) -> None:
    response = await proxy.client.get(proxy.url + "/fn/slow-stream/200/0.05")
    assert await response.content.readany()
    response.close()  # hang up mid-stream
    await asyncio.wait_for(fake.wait_stream_cancelled(1), timeout=5)
    assert fake.stream_cancelled == 1

"""Failing upstreams: what is retried (only a connection never made), and what is explained."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest
from aiohttp import ClientPayloadError

from proxy.logs import upstream_hint
from tests.conftest import AKID, SECRET, refusing_port, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl, KeyRecord


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RetryWatcher(logging.Handler):
    """Sets an event when the proxy announces a retry (logging runs on the event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.retried = asyncio.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying once" in record.getMessage():
            self.count += 1
            self.retried.set()


@pytest.fixture
def retries() -> Iterator[RetryWatcher]:
    watcher = RetryWatcher()
    logger = logging.getLogger("proxy.upstream")
    logger.addHandler(watcher)
    yield watcher
    logger.removeHandler(watcher)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
async def test_idempotent_request_is_retried_once_when_the_connection_was_refused(
    aws_keys: None, retries: RetryWatcher, method: str
) -> None:
    port = free_port()  # nothing listens there yet: the first connect is refused
    async with running_proxy(routes=[route("/fn", f"http://127.0.0.1:{port}")]) as proxy:
        pending = asyncio.create_task(proxy.client.request(method, proxy.url + "/fn/x"))
        await asyncio.wait_for(retries.retried.wait(), 5)
        async with FakeFunctionUrl() as late:  # the function comes up before the retry
            late.keys[AKID] = KeyRecord(SECRET)
            await late.stop()
            await late.start(port)
            response = await asyncio.wait_for(pending, 5)
            assert response.status == 200
            response.release()
            assert len(late.received) == 1 and late.received[0].verified  # signed afresh
    assert retries.count == 1


async def test_post_is_never_retried(aws_keys: None, retries: RetryWatcher) -> None:
    with refusing_port() as port:
        async with running_proxy(routes=[route("/fn", f"http://127.0.0.1:{port}")]) as proxy:
            async with proxy.client.post(proxy.url + "/fn/x", data=b"once") as response:
                assert response.status == 502
    assert retries.count == 0


async def test_a_request_that_went_out_is_never_retried(
    aws_keys: None, retries: RetryWatcher
) -> None:
    connections = 0

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")  # the request arrived...
        writer.close()  # ...and the connection dies without an answer

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_proxy(routes=[route("/fn", f"http://127.0.0.1:{port}")]) as proxy:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 502
                assert response.headers["X-Proxy-Error"] == "upstream_unreachable"
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 1
    assert retries.count == 0


def test_upstream_failures_are_explained() -> None:
    assert "throttled" in (upstream_hint(429, "TooManyRequestsException") or "")
    assert "lambda:InvokeFunctionUrl" in (upstream_hint(403, "AccessDeniedException") or "")
    assert upstream_hint(500, None) is None  # the function's own 500: nothing to add
    assert "AWS Lambda itself" in (upstream_hint(502, "ServiceException") or "")


async def test_429_reaches_the_client_unchanged(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/status/429") as response:
            assert response.status == 429
            assert "X-Proxy-Error" not in response.headers
    line = [r for r in caplog.records if r.name == "proxy.access"][-1]
    assert line.levelname == "WARNING" and "throttled" in line.getMessage()


def test_a_dns_failure_is_explained() -> None:
    # A real lookup would leave loopback; the error getaddrinfo raises takes the same path.
    from proxy.aws_config import Resolved
    from proxy.credentials import Identity
    from proxy.forward import _unreachable
    from proxy.routing import Upstream
    from proxy.settings import Route
    from proxy.upstream_errors import ConnectFailed

    upstream = Upstream.from_route(
        Route(prefix="/fn", url="https://nope.lambda-url.us-east-1.on.aws"),
        Resolved("us-east-1", "the URL's host"),
        Identity(),
    )
    error = ConnectFailed(socket.gaierror(-2, "Name or service not known"))
    refusal = _unreachable(upstream, error)
    assert refusal.status == 502
    assert "https://nope.lambda-url.us-east-1.on.aws is unreachable" in refusal.message
    assert "cannot connect (Name or service not known)" in refusal.message


@pytest.mark.slow
async def test_a_timeout_mid_body_cuts_the_client_response(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with running_proxy(routes=[route("/fn", fake.url, timeout=1.0)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/stream/100/50?delay=0.1") as response:
            assert response.status == 200  # the headers came in time...
            with pytest.raises(ClientPayloadError):  # ...the whole body did not
                await response.read()
    line = [r for r in caplog.records if r.name == "proxy.access"][-1]
    assert "upstream_failed_mid_body: TimeoutError" in line.getMessage()


def test_a_failure_after_the_answers_head_cuts_the_connection_instead_of_a_502() -> None:
    """A socket error once an answer's head is in hand (it may be on its way to the client):
    a 502 written after it would be a second answer in the body; the connection is cut."""
    from proxy.aws_config import Resolved
    from proxy.credentials import Identity
    from proxy.errors import UpstreamUnreachable
    from proxy.exchange import Exchange
    from proxy.forward import _failed
    from proxy.routing import Upstream
    from proxy.settings import Route

    class Transport:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    class Request:
        transport = Transport()

    upstream = Upstream.from_route(
        Route(prefix="/fn", url="http://127.0.0.1:9"), Resolved("us-east-1", "--region"), Identity()
    )
    before = Exchange("GET", "/fn/x")
    with pytest.raises(UpstreamUnreachable):
        _failed(Request(), upstream, before, ConnectionResetError())  # type: ignore[arg-type]
    assert not Request.transport.aborted
    after = Exchange("GET", "/fn/x")
    after.status = 200
    _failed(Request(), upstream, after, ConnectionResetError())  # type: ignore[arg-type]
    assert Request.transport.aborted
    assert after.outcome == "upstream_failed_mid_body: ConnectionResetError"

"""Only configured upstreams are contacted, TLS is verified, secrets stay out of logs."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import trustme
from yarl import URL

from tests.conftest import (
    AKID,
    SECRET,
    RunningProxy,
    raw_exchange,
    raw_response,
    route,
    running_proxy,
)
from tests.fake_function_url import FakeFunctionUrl, KeyRecord


@pytest_asyncio.fixture
async def bystander() -> AsyncIterator[FakeFunctionUrl]:
    """A second server that no route names: nothing may ever reach it."""
    async with FakeFunctionUrl() as other:
        other.keys[AKID] = KeyRecord(SECRET)
        yield other


def port_of(url: str) -> int:
    port = URL(url).port
    assert port is not None
    return port


@pytest.mark.parametrize(
    "request_line",
    [
        "GET http://127.0.0.1:{port}/x HTTP/1.1",
        "GET https://127.0.0.1:{port}/x HTTP/1.1",
        "CONNECT 127.0.0.1:{port} HTTP/1.1",
        "GET //127.0.0.1:{port}/x HTTP/1.1",
        "GET /fn/..//127.0.0.1:{port}/x HTTP/1.1",
        "GET /fn/@127.0.0.1:{port}/x HTTP/1.1",
        "GET /fn/%2F%2F127.0.0.1:{port}/x HTTP/1.1",
        "GET /fn/x HTTP/1.1\r\nX-Forwarded-Host: 127.0.0.1:{port}\r\nX-Forwarded-Proto: http",
    ],
)
async def test_requests_cannot_be_steered_to_another_host(
    proxy: RunningProxy, bystander: FakeFunctionUrl, fake: FakeFunctionUrl, request_line: str
) -> None:
    line = request_line.format(port=bystander.port)
    answer = await raw_exchange(
        port_of(proxy.url),
        f"{line}\r\nHost: 127.0.0.1:{bystander.port}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert answer[:12] in (b"HTTP/1.1 200", b"HTTP/1.1 400", b"HTTP/1.1 404"), answer[:200]
    assert bystander.received == []
    for received in fake.received:  # whatever did go out went to the configured upstream
        headers = {k.lower(): v for k, v in received.headers}
        assert headers["host"] == f"127.0.0.1:{fake.port}"


async def test_absolute_form_is_refused_with_a_clear_message(proxy: RunningProxy) -> None:
    head, body = await raw_response(
        port_of(proxy.url), b"GET http://example.com/fn/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 400")
    assert b"not a forward proxy" in body


async def test_secrets_never_reach_logs_or_error_bodies(
    fake: FakeFunctionUrl, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = "FwoGZXIvYXdzSESSIONTOKENSECRETVALUE"
    fake.keys["ASIATEMPORARY0000002"] = KeyRecord(SECRET, session_token=token)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY0000002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    bodies = []
    async with running_proxy(routes=[route("/fn", fake.url)], log_level="debug") as proxy:
        # The function's own answers (an echo would repeat the token) are not the proxy's.
        for target in ("/fn/status/200", "/fn/status/403", "/nowhere", "/fn/a%zz", "/_proxy/ready"):
            async with proxy.client.get(URL(proxy.url + target, encoded=True)) as response:
                bodies.append(await response.text())
        fake.keys["ASIATEMPORARY0000002"] = KeyRecord("other", session_token=token)
        async with proxy.client.get(proxy.url + "/fn/denied") as response:
            assert response.status == 403
            bodies.append(await response.text())
    everything = caplog.text + "".join(bodies)
    assert "GET /x" in caplog.text or "/fn" in caplog.text  # the logs did record these requests
    assert SECRET not in everything
    assert token not in everything
    assert "ASIATEMPORARY0000002" not in everything  # only a masked form


async def test_upstream_403_is_explained_in_the_log(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        fake.keys[AKID] = KeyRecord("wrong")
        async with proxy.client.get(proxy.url + "/fn/sig") as response:
            assert response.status == 403
        fake.keys[AKID] = KeyRecord(SECRET, allowed=False)
        async with proxy.client.get(proxy.url + "/fn/perm") as response:
            assert response.status == 403
    signature, permission = [r for r in caplog.records if r.name == "proxy.access"][-2:]
    assert "InvalidSignatureException" in signature.getMessage()
    assert "signature" in signature.getMessage() and "secret key" in signature.getMessage()
    assert "AccessDeniedException" in permission.getMessage()
    assert "lambda:InvokeFunctionUrl" in permission.getMessage()
    assert "lambda:InvokeFunction " in permission.getMessage()


async def test_access_log_line(proxy: RunningProxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with proxy.client.get(proxy.url + "/fn/bytes/1234") as response:
        request_id = response.headers["x-amzn-RequestId"]
        await response.read()
    record = [r for r in caplog.records if r.name == "proxy.access"][-1]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["method"] == "GET"
    assert fields["path"] == "/fn/bytes/1234"
    assert fields["route"] == "/fn"
    assert fields["status"] == 200
    assert fields["bytes"] == 1234
    assert fields["upstream_request_id"] == request_id
    assert fields["duration_ms"] > 0
    assert request_id in record.getMessage()


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest_asyncio.fixture
async def tls_fake(ca: trustme.CA) -> AsyncIterator[FakeFunctionUrl]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    async with FakeFunctionUrl(ssl_context=context) as function_url:
        function_url.keys[AKID] = KeyRecord(SECRET)
        yield function_url


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return bundle


async def test_tls_is_verified(tls_fake: FakeFunctionUrl, aws_keys: None) -> None:
    async with running_proxy(routes=[route("/fn", tls_fake.url)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 502
            body = await response.json()
    assert "TLS verification failed" in body["message"] and "AWS_CA_BUNDLE" in body["message"]
    assert tls_fake.received == []


async def test_ca_bundle_setting(tls_fake: FakeFunctionUrl, aws_keys: None, ca_file: Path) -> None:
    async with running_proxy(routes=[route("/fn", tls_fake.url)], ca_bundle=ca_file) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 200
    assert tls_fake.received[-1].verified


async def test_aws_ca_bundle_environment(
    tls_fake: FakeFunctionUrl, aws_keys: None, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    async with running_proxy(routes=[route("/fn", tls_fake.url)]) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x") as response:
            assert response.status == 200


# --- HTTPS_PROXY -------------------------------------------------------------------------------


class ConnectProxy:
    """A minimal CONNECT proxy on loopback that records the tunnels it opened."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.port = 0

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        assert method == "CONNECT"
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_https_proxy_is_honoured(
    tls_fake: FakeFunctionUrl, aws_keys: None, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ConnectProxy() as corporate:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{corporate.port}")
        async with running_proxy(routes=[route("/fn", tls_fake.url)], ca_bundle=ca_file) as proxy:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 200
    assert corporate.tunnels == [f"127.0.0.1:{tls_fake.port}"]
    assert tls_fake.received[-1].verified


async def test_no_proxy_is_honoured(
    tls_fake: FakeFunctionUrl, aws_keys: None, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ConnectProxy() as corporate:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{corporate.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with running_proxy(routes=[route("/fn", tls_fake.url)], ca_bundle=ca_file) as proxy:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 200
    assert corporate.tunnels == []  # went direct

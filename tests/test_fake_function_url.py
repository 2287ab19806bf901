"""The fake Function URL behaves like AWS, for requests signed by botocore and sent for real."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import ssl
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import aiohttp
import pytest
import pytest_asyncio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from yarl import URL

from tests.fake_function_url import (
    FORBIDDEN,
    FUNCTION_FAILED,
    GZIP_BODY,
    MAX_REQUEST_BODY,
    REDIRECT_LOCATION,
    SET_COOKIES,
    SIGNATURE_MISMATCH,
    THROTTLED,
    FakeFunctionUrl,
    KeyRecord,
    crt_signature,
    pattern,
)
from tests.sigv4_suite import Case, load_cases

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from multidict import CIMultiDictProxy

AKID = "AKIDFAKEFUNCTIONURL"
SECRET = "fake-secret-access-key"
TOKEN = "fake-session-token"


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    access_key: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = "us-east-1",
    service: str = "lambda",
    headers: Mapping[str, str] | None = None,
    content_sha256: bool = True,
) -> dict[str, str]:
    """The headers botocore signs, with x-amz-content-sha256 added as Lambda requires."""
    sent = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()} if content_sha256 else {}
    request = AWSRequest(method=method, url=url, data=body, headers={**sent, **(headers or {})})
    SigV4Auth(Credentials(access_key, secret, token), service, region).add_auth(request)
    return dict(request.headers.items())


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    ssl_context: ssl.SSLContext | None = None,
) -> Reply:
    # encoded=True: the target goes on the wire exactly as signed, never re-quoted by yarl.
    async with session.request(
        method,
        URL(url, encoded=True),
        headers=headers,
        data=io.BytesIO(body) if body else None,  # raw bytes over 1 MiB make aiohttp warn
        allow_redirects=False,
        ssl=ssl_context or True,
    ) as response:
        return Reply(response.status, response.headers, await response.read())


async def call(
    session: aiohttp.ClientSession,
    fake: FakeFunctionUrl,
    target: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    **signing: Any,
) -> Reply:
    url = fake.url + target
    return await send(session, method, url, sign(method, url, body, **signing), body)


def assert_aws_error(reply: Reply, status: int, error_type: str) -> None:
    assert (reply.status, reply.headers.get("x-amzn-ErrorType")) == (status, error_type)
    assert reply.headers["Content-Type"] == "application/json"
    assert uuid.UUID(reply.headers["x-amzn-RequestId"]).version == 4


@contextlib.asynccontextmanager
async def running(**options: Any) -> AsyncIterator[FakeFunctionUrl]:
    async with FakeFunctionUrl(**options) as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        yield fake


# Shadows conftest's `fake` on purpose: these tests own their key and need none of the proxy's.
@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeFunctionUrl]:
    async with running() as fake:
        yield fake


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # auto_decompress=False: tests compare the bytes that travelled, gzip included.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


# --- Accepted requests -----------------------------------------------------------------------


async def test_signed_get_is_echoed(fake: FakeFunctionUrl, session: aiohttp.ClientSession) -> None:
    reply = await call(session, fake, "/hello%20there?b=2&a=1")

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert uuid.UUID(reply.headers["x-amzn-RequestId"]).version == 4
    echo = reply.json()
    assert echo["method"] == "GET"
    assert echo["raw_path"] == "/hello%20there?b=2&a=1"
    assert (echo["path"], echo["query"]) == ("/hello%20there", "b=2&a=1")
    assert (echo["access_key"], echo["region"]) == (AKID, "us-east-1")
    assert (echo["body_length"], echo["body"]) == (0, "")
    assert ["Host", f"127.0.0.1:{fake.port}"] in echo["headers"]
    [received] = fake.received
    assert (received.raw_path, received.verified, received.error_type) == (
        "/hello%20there?b=2&a=1",
        True,
        None,
    )


async def test_signed_post_is_echoed(fake: FakeFunctionUrl, session: aiohttp.ClientSession) -> None:
    body = "héllo wörld".encode()

    reply = await call(session, fake, "/post", method="POST", body=body)

    assert reply.status == 200
    echo = reply.json()
    assert (echo["method"], echo["body"], echo["body_length"]) == ("POST", "héllo wörld", len(body))
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert fake.received[0].body == body


async def test_temporary_credentials_with_signed_token_are_accepted(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    fake.keys["ASIATEMP"] = KeyRecord(SECRET, session_token=TOKEN)

    reply = await call(session, fake, "/", access_key="ASIATEMP", token=TOKEN)

    assert reply.status == 200
    assert reply.json()["access_key"] == "ASIATEMP"


@pytest.mark.parametrize("offset", [-240.0, 240.0])
async def test_clock_skew_under_five_minutes_is_accepted(
    session: aiohttp.ClientSession, offset: float
) -> None:
    async with running(clock=lambda: time.time() + offset) as fake:
        assert (await call(session, fake, "/")).status == 200


async def test_body_at_the_limit_is_accepted(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/big", method="POST", body=bytes(MAX_REQUEST_BODY))

    assert reply.status == 200
    assert (reply.json()["body_length"], reply.json()["body"]) == (MAX_REQUEST_BODY, None)


async def test_peers_are_the_client_connections(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    await call(session, fake, "/one")
    await call(session, fake, "/kept-alive")
    async with aiohttp.ClientSession() as other:
        await call(other, fake, "/another-connection")

    assert len(fake.peers) == 2
    assert all(host == "127.0.0.1" for host, _ in fake.peers)


async def test_subprocess_serves_signed_requests(session: aiohttp.ClientSession) -> None:
    # --host: another loopback address than the default, so the Host it expects must follow it.
    script = Path(__file__).with_name("fake_function_url.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *("--host", "127.0.0.2", "--port", "0", "--region", "eu-west-1"),
        *("--key", f"{AKID}:{SECRET}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("listening on http://127.0.0.2:")
        url = line.removeprefix("listening on ").strip() + "/from-subprocess"

        reply = await send(session, "GET", url, sign("GET", url, region="eu-west-1"))

        assert (reply.status, reply.json()["region"]) == (200, "eu-west-1")
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            await process.wait()


async def test_https_with_ssl_context(session: aiohttp.ClientSession) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with running(ssl_context=server) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        url = fake.url + "/tls"

        reply = await send(session, "GET", url, sign("GET", url), ssl_context=client)

        assert reply.status == 200


# --- Rejected requests -----------------------------------------------------------------------


async def test_unsigned_request_is_forbidden(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await send(session, "GET", fake.url + "/", {})

    assert_aws_error(reply, 403, "AccessDeniedException")
    assert reply.json() == {"Message": "Forbidden"}
    [received] = fake.received
    assert (received.verified, received.error_type) == (False, "AccessDeniedException")


async def test_malformed_authorization_is_incomplete(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    url = fake.url + "/"
    headers = sign("GET", url)
    headers["Authorization"] = headers["Authorization"].replace("SignedHeaders=", "Signed=")

    reply = await send(session, "GET", url, headers)

    assert_aws_error(reply, 403, "IncompleteSignatureException")


async def test_wrong_secret_is_a_signature_mismatch(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/", secret="not-the-secret")

    assert_aws_error(reply, 403, "InvalidSignatureException")
    assert reply.json() == {"message": SIGNATURE_MISMATCH}


TAMPERINGS = {
    # name: (signed target, sent target, signed body, sent body, sent header changes)
    "body": ("/", "/", b"signed", b"tampered", {}),
    "body and its hash": (
        "/",
        "/",
        b"signed",
        b"tampered",
        {"X-Amz-Content-SHA256": hashlib.sha256(b"tampered").hexdigest()},
    ),
    "signed header": ("/", "/", b"", b"", {"X-Custom": "tampered"}),
    "path": ("/a", "/b", b"", b"", {}),
    "path encoding": ("/%41", "/A", b"", b"", {}),
    "query": ("/?a=1", "/?a=2", b"", b"", {}),
}


@pytest.mark.parametrize("tampering", TAMPERINGS.values(), ids=TAMPERINGS.keys())
async def test_request_changed_after_signing_is_rejected(
    fake: FakeFunctionUrl,
    session: aiohttp.ClientSession,
    tampering: tuple[str, str, bytes, bytes, dict[str, str]],
) -> None:
    signed_target, sent_target, signed_body, sent_body, changes = tampering
    headers = sign("POST", fake.url + signed_target, signed_body, headers={"X-Custom": "signed"})

    reply = await send(session, "POST", fake.url + sent_target, {**headers, **changes}, sent_body)

    assert_aws_error(reply, 403, "InvalidSignatureException")
    assert fake.received[0].error_type == "InvalidSignatureException"


@pytest.mark.parametrize(
    ("offset", "message"),
    [(600.0, "Signature expired: "), (-600.0, "Signature not yet current: ")],
)
async def test_x_amz_date_over_five_minutes_off_is_rejected(
    session: aiohttp.ClientSession, offset: float, message: str
) -> None:
    async with running(clock=lambda: time.time() + offset) as fake:
        reply = await call(session, fake, "/")

    assert_aws_error(reply, 403, "InvalidSignatureException")
    assert reply.json()["message"].startswith(message)


@pytest.mark.parametrize("offset", [600.0, -600.0])
async def test_every_answer_tells_the_fakes_clock_in_date(
    session: aiohttp.ClientSession, offset: float
) -> None:
    async with running(clock=lambda: time.time() + offset) as fake:
        refused = await call(session, fake, "/")  # signed by botocore, by this machine's clock
        aws_now = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=offset)
        with mock.patch("botocore.auth.get_current_datetime", return_value=aws_now):
            signed_by_its_clock = sign("GET", fake.url + "/")  # botocore, by AWS's clock
        accepted = await send(session, "GET", fake.url + "/", signed_by_its_clock)
    for reply in (refused, accepted):
        told = parsedate_to_datetime(reply.headers["Date"]).timestamp()
        assert abs(told - (time.time() + offset)) < 5
    assert (refused.status, accepted.status) == (403, 200)


async def test_throttling_and_a_failed_function_answer_as_lambda_does(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    throttled = await call(session, fake, "/throttle")
    assert_aws_error(throttled, 429, "TooManyRequestsException")
    assert throttled.json() == THROTTLED
    failed = await call(session, fake, "/fail")
    assert (failed.status, failed.body) == (502, FUNCTION_FAILED.encode())


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ({"region": "eu-west-1"}, "Credential should be scoped to a valid region. "),
        ({"service": "execute-api"}, "Credential should be scoped to correct service: 'lambda'."),
    ],
)
async def test_credential_scope_must_match(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession, scope: dict[str, Any], message: str
) -> None:
    reply = await call(session, fake, "/", **scope)

    assert_aws_error(reply, 403, "InvalidSignatureException")
    assert reply.json() == {"message": message}


async def test_unknown_access_key_is_unrecognized(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/", access_key="AKIDUNKNOWN")

    assert_aws_error(reply, 403, "UnrecognizedClientException")
    assert reply.json() == {"message": "The security token included in the request is invalid."}


async def test_expired_key_is_rejected(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET, expires_at=time.time() - 1)

    reply = await call(session, fake, "/")

    assert_aws_error(reply, 403, "ExpiredTokenException")
    assert reply.json() == {"message": "The security token included in the request is expired"}


async def test_key_expires_in_real_time(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET, expires_at=time.time() + 0.3)
    assert (await call(session, fake, "/")).status == 200

    await asyncio.sleep(0.4)

    assert_aws_error(await call(session, fake, "/"), 403, "ExpiredTokenException")


@pytest.mark.parametrize(
    ("token", "added_after_signing", "error_type"),
    [
        (None, {}, "UnrecognizedClientException"),
        ("another-token", {}, "UnrecognizedClientException"),
        (None, {"X-Amz-Security-Token": TOKEN}, "IncompleteSignatureException"),
    ],
    ids=["missing", "wrong", "unsigned"],
)
async def test_session_token_must_be_the_keys_and_signed(
    fake: FakeFunctionUrl,
    session: aiohttp.ClientSession,
    token: str | None,
    added_after_signing: dict[str, str],
    error_type: str,
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET, session_token=TOKEN)
    url = fake.url + "/"

    reply = await send(
        session, "GET", url, {**sign("GET", url, token=token), **added_after_signing}
    )

    assert_aws_error(reply, 403, error_type)


async def test_session_token_for_a_long_term_key_is_invalid(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    assert_aws_error(
        await call(session, fake, "/", token=TOKEN), 403, "UnrecognizedClientException"
    )


async def test_key_without_permission_is_denied(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET, allowed=False)

    reply = await call(session, fake, "/")

    assert_aws_error(reply, 403, "AccessDeniedException")
    assert reply.json() == {"Message": FORBIDDEN}


@pytest.mark.parametrize(
    "signing",
    [{"content_sha256": False}, {"headers": {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}}],
    ids=["absent", "unsigned-payload"],
)
async def test_payload_must_be_signed(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession, signing: dict[str, Any]
) -> None:
    reply = await call(session, fake, "/", method="POST", body=b"body", **signing)

    assert_aws_error(reply, 403, "InvalidSignatureException")


async def test_host_must_be_the_function_urls(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    other = f"localhost:{fake.port}"
    headers = sign("GET", f"http://{other}/")

    reply = await send(session, "GET", fake.url + "/", {**headers, "Host": other})

    assert_aws_error(reply, 403, "InvalidSignatureException")
    assert other in reply.json()["message"]


async def test_header_awscrt_never_signs_is_reported(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    # botocore signs sec-websocket-key; awscrt (like AWS's SDKs) refuses to, so the sets differ.
    reply = await call(session, fake, "/", headers={"Sec-WebSocket-Key": "k"})

    assert_aws_error(reply, 403, "InvalidSignatureException")
    assert "awscrt signed host;x-amz-content-sha256;x-amz-date" in reply.json()["message"]


async def test_body_over_the_limit_is_too_large(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/big", method="POST", body=bytes(MAX_REQUEST_BODY + 1))

    assert_aws_error(reply, 413, "RequestEntityTooLargeException")
    assert fake.received[0].error_type == "RequestEntityTooLargeException"


# --- Query canonicalisation: where botocore and AWS disagree ---------------------------------


@pytest.mark.parametrize("query", ["b=2&a=1", "a=2&a=1", "a=x%20y", "a", "%E1%88%B4=1"])
async def test_query_botocore_and_aws_agree_on_is_accepted(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession, query: str
) -> None:
    reply = await call(session, fake, f"/q?{query}")

    assert reply.status == 200
    assert reply.json()["query"] == query


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("a=%7e", "a=~"), ("a=1+2", "a=1%2B2"), ("a=/", "a=%2F"), ("%61=1", "a=1")],
)
async def test_query_botocore_signs_raw_is_rejected_but_canonical_accepted(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession, raw: str, canonical: str
) -> None:
    # botocore signs the query exactly as given; AWS decodes, re-encodes and sorts it first.
    assert_aws_error(await call(session, fake, f"/q?{raw}"), 403, "InvalidSignatureException")
    assert (await call(session, fake, f"/q?{canonical}")).status == 200


# --- Function behaviours ---------------------------------------------------------------------


def test_pattern_is_i_mod_251_across_pieces() -> None:
    for start, length in [(0, 0), (0, 1000), (250, 3), (70_000, 200_000)]:
        expected = bytes(i % 251 for i in range(start, start + length))
        assert b"".join(pattern(start, length)) == expected


async def test_stream_is_chunked_and_paced(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    started = time.monotonic()

    reply = await call(session, fake, "/stream/100000/4?delay=0.05")

    assert time.monotonic() - started >= 0.15
    assert reply.status == 200
    assert reply.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in reply.headers
    assert reply.headers["Content-Type"] == "application/octet-stream"
    assert reply.body == b"".join(pattern(0, 100_000))


async def test_bytes_have_a_content_length(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/bytes/300000")

    assert (reply.status, reply.headers["Content-Length"]) == (200, "300000")
    assert "Transfer-Encoding" not in reply.headers
    assert reply.body == b"".join(pattern(0, 300_000))


async def test_gzip_body_is_sent_compressed(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/gzip")

    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body == GZIP_BODY
    assert json.loads(gzip.decompress(reply.body)) == {"compressed": True}


async def test_cookies_are_three_set_cookie_headers(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/cookies")

    assert reply.status == 200
    assert reply.headers.getall("Set-Cookie") == list(SET_COOKIES)


@pytest.mark.parametrize("code", [201, 204, 304, 404, 503])
async def test_status_is_the_requested_one(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession, code: int
) -> None:
    reply = await call(session, fake, f"/status/{code}")

    assert (reply.status, reply.headers["x-fake-status"]) == (code, str(code))
    expected = b"" if code in (204, 304) else json.dumps({"status": code}).encode()
    assert reply.body == expected


async def test_redirect_is_a_302(fake: FakeFunctionUrl, session: aiohttp.ClientSession) -> None:
    reply = await call(session, fake, "/redirect")

    assert (reply.status, reply.headers["Location"]) == (302, REDIRECT_LOCATION)


async def test_slow_headers_arrive_late(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    url = fake.url + "/slow-headers/5"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await send(session, "GET", url, sign("GET", url))

    assert (await call(session, fake, "/slow-headers/0.05")).json() == {"slept": 0.05}


@pytest.mark.parametrize("kind", ["truncate", "truncate-chunked"])
async def test_truncate_cuts_the_body_halfway(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession, kind: str
) -> None:
    url = fake.url + f"/{kind}/1000"
    received = bytearray()

    async def read_all(response: aiohttp.ClientResponse) -> None:
        while chunk := await response.content.readany():
            received.extend(chunk)

    async with session.get(URL(url, encoded=True), headers=sign("GET", url)) as response:
        if kind == "truncate":
            assert response.headers["Content-Length"] == "1000"
        else:
            assert response.headers["Transfer-Encoding"] == "chunked"
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_all(response)

    assert received == b"".join(pattern(0, 500))


async def test_slow_stream_counts_streams_cut_by_the_peer(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    url = fake.url + "/slow-stream/100/0.05"
    async with session.get(URL(url, encoded=True), headers=sign("GET", url)) as response:
        assert await response.content.readline() == b"tick\n"
    # Leaving the block with the body unread closes the connection.

    async with asyncio.timeout(2):
        await fake.wait_stream_cancelled()
    assert fake.stream_cancelled == 1


async def test_slow_stream_read_to_the_end_is_not_counted(
    fake: FakeFunctionUrl, session: aiohttp.ClientSession
) -> None:
    reply = await call(session, fake, "/slow-stream/3/0.01")

    assert (reply.headers["Transfer-Encoding"], reply.body) == ("chunked", b"tick\n" * 3)
    assert fake.stream_cancelled == 0


# --- awscrt against AWS's official SigV4 vectors ---------------------------------------------


@pytest.mark.parametrize("case", load_cases(), ids=lambda case: case.name)
def test_crt_signature_reproduces_aws_vectors(case: Case) -> None:
    signed_headers = case.canonical_request.split("\n")[-2]
    credentials = case.context["credentials"]

    computed = crt_signature(
        case.method,
        case.target,
        case.headers,
        signed_headers=signed_headers.split(";"),
        body_sha256=hashlib.sha256(case.body).hexdigest(),
        access_key=credentials["access_key_id"],
        secret_key=credentials["secret_access_key"],
        session_token=credentials.get("token"),
        region=case.context["region"],
        service=case.context["service"],
        when=case.when,
    )

    assert computed.signed_headers == signed_headers
    assert computed.signature == case.signature

"""Every refusal explained (issue #13): AWS's answer reaches the client unchanged, with
`X-Proxy-Diagnosis: <code>` added and one access line that explains it. One test per kind of
refusal, against the fake's canned answers (AWS's own words); the classification itself, pure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from multidict import CIMultiDictProxy

from proxy.diagnosis import Cure, RouteFacts, diagnose
from proxy.review import BODY_LIMIT
from tests.conftest import AKID, SECRET, route, running_proxy
from tests.fake_credential_sources import FakeSts
from tests.fake_function_url import (
    FORBIDDEN,
    FUNCTION_FAILED,
    INVALID_TOKEN,
    SIGNATURE_MISMATCH,
    THROTTLED,
    FakeFunctionUrl,
    KeyRecord,
)
from tests.test_upstream_client import Answer as Script
from tests.test_upstream_client import ScriptedUpstream, in_two_parts, ok, scripted

LAMBDA_REGION_REFUSAL = b'{"message":"Credential should be scoped to a valid region. "}'
ORIGIN = "http://localhost:5173"


def region_hint(
    prefix: str, url: str, signed_region: str, error_type: str | None, body: bytes
) -> str | None:
    """The explanation of a refusal diagnosed as a wrong region, else None."""
    found = diagnose(403, error_type, body, RouteFacts(prefix, url, signed_region))
    return found.explanation if found is not None and found.code == "wrong_region" else None


def access_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    return [record for record in caplog.records if record.name == "proxy.access"][-1]


@pytest.mark.parametrize(
    ("settings", "headers"),
    [({}, {}), ({"cors_origins": [ORIGIN]}, {"Origin": ORIGIN})],
    ids=["answer-written-whole", "answer-streamed-with-cors"],
)
async def test_a_wrong_region_gets_a_region_hint(
    fake: FakeFunctionUrl,
    aws_keys: None,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    headers: dict[str, str],
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    routes = [route("/fn", fake.url, region="eu-west-1")]  # the fake is in us-east-1
    async with running_proxy(routes=routes, **settings) as proxy:
        async with proxy.client.get(proxy.url + "/fn/x", headers=headers) as response:
            body = await response.json()
            assert response.status == 403
            assert response.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
            assert "X-Proxy-Error" not in response.headers  # AWS's answer, passed through
            assert response.headers["X-Proxy-Diagnosis"] == "wrong_region"
    assert body == {"message": "Credential should be scoped to a valid region. "}
    line = access_line(caplog)
    message = line.getMessage()
    assert line.levelname == "WARNING"
    assert "route /fn signed for region eu-west-1 (from route /fn)" in message
    assert "region on the route, --region or AWS_REGION" in message
    assert "clock" not in message


FUNCTION_URL = "https://abc123.lambda-url.eu-west-1.on.aws"


@pytest.mark.parametrize(
    ("url", "signed", "expected"),
    [
        (FUNCTION_URL, "us-east-1", "its URL's host names eu-west-1"),
        (FUNCTION_URL, "us-east-1", "set region on the route to eu-west-1, or remove it"),
        (FUNCTION_URL, "eu-west-1", f"check that {FUNCTION_URL} is the function's URL"),
        ("http://127.0.0.1:9001", "us-east-1", "region on the route, --region or AWS_REGION"),
    ],
)
def test_the_hint_names_the_regions(url: str, signed: str, expected: str) -> None:
    hint = region_hint("/users", url, signed, "InvalidSignatureException", LAMBDA_REGION_REFUSAL)
    assert hint is not None
    assert f"route /users signed for region {signed}" in hint
    assert expected in hint


@pytest.mark.parametrize(
    ("error_type", "body"),
    [
        ("InvalidSignatureException", b'{"message": "The request signature we calculated..."}'),
        ("InvalidSignatureException", b'{"message": "Signature expired: 20260101T000000Z ..."}'),
        ("AccessDeniedException", b'{"Message": "Forbidden. region"}'),
        (None, b"region"),
    ],
)
def test_other_refusals_get_no_region_hint(error_type: str | None, body: bytes) -> None:
    assert region_hint("/users", FUNCTION_URL, "us-east-1", error_type, body) is None


def test_other_services_wording_names_the_region_too() -> None:
    for body in (
        b'{"message":"Credential should be scoped to a valid region, not \'us-east-2\'. "}',
        b'{"message":"Credential should be scoped to correct region"}',
    ):
        assert region_hint("/u", FUNCTION_URL, "us-east-1", "InvalidSignatureException", body)


# --- Each refusal, through the proxy --------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    line: str  # the access line


async def ask(
    fake: FakeFunctionUrl, caplog: pytest.LogCaptureFixture, path: str, **settings: Any
) -> Answer:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with running_proxy(routes=[route("/fn", fake.url)], **settings) as proxy:
        async with proxy.client.get(proxy.url + path) as response:
            answer = Answer(response.status, response.headers, await response.read(), "")
    answer.line = access_line(caplog).getMessage()
    return answer


def aws_body(key: str, message: str) -> bytes:
    """The body the fake (as AWS) sends: the test compares what the client got with it."""
    return json.dumps({key: message}).encode()


async def test_a_signature_mismatch_is_reported_as_a_proxy_bug(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    fake.keys[AKID] = KeyRecord("another secret")
    answer = await ask(fake, caplog, "/fn/x")
    assert answer.status == 403
    assert answer.headers["X-Proxy-Diagnosis"] == "signature_mismatch"
    assert answer.body == aws_body("message", SIGNATURE_MISMATCH)
    request_id = answer.headers["x-amzn-RequestId"]
    assert f"report it with the request id {request_id}" in answer.line
    assert "secret key belongs to the access key AKIA" in answer.line
    assert len(fake.received) == 1  # never sent again


async def test_access_denied_names_who_both_actions_and_the_policy(
    fake: FakeFunctionUrl,
    aws_keys: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET, allowed=False)
    async with FakeSts(fake) as sts:
        sts.keys[AKID] = KeyRecord(SECRET)
        sts.callers[AKID] = "arn:aws:iam::123456789012:user/frontend"
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        caplog.set_level(logging.INFO, logger="proxy.access")
        async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
            for _ in range(2):
                async with proxy.client.get(proxy.url + "/fn/x") as response:
                    assert response.status == 403
                    assert response.headers["X-Proxy-Diagnosis"] == "access_denied"
                    assert await response.read() == aws_body("Message", FORBIDDEN)
        assert sts.whoami_calls == 1  # once per identity
    line = access_line(caplog).getMessage()
    assert "arn:aws:iam::123456789012:user/frontend may not invoke" in line
    assert "lambda:InvokeFunctionUrl and, for Function URLs created since October 2025" in line
    assert '"Action": ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"]' in line


async def test_access_denied_without_sts_still_names_the_key_and_actions(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    fake.keys[AKID] = KeyRecord(SECRET, allowed=False)  # STS: conftest's closed port
    answer = await ask(fake, caplog, "/fn/x")
    assert answer.headers["X-Proxy-Diagnosis"] == "access_denied"
    assert f"the identity with access key {AKID[:4]}" in answer.line
    assert "lambda:InvokeFunctionUrl" in answer.line


def profile(access_key: str, secret_key: str) -> str:
    return f"[default]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"


async def test_rejected_credentials_are_resolved_afresh_and_sent_once_more(
    fake: FakeFunctionUrl, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The profile's keys were replaced while the proxy ran (as after `aws configure`): AWS
    rejects the old ones, the proxy reads the new ones and the request succeeds."""
    old, new = ("AKIAOLDKEY0000000001", "old/secret"), ("AKIANEWKEY0000000001", "new/secret")
    credentials = tmp_path / "aws-credentials"  # conftest's AWS_SHARED_CREDENTIALS_FILE
    credentials.write_text(
        f"[default]\naws_access_key_id = {old[0]}\naws_secret_access_key = {old[1]}\n"
    )
    fake.keys[old[0]] = KeyRecord(old[1], expires_at=time.time() - 1)
    fake.keys[new[0]] = KeyRecord(new[1])
    caplog.set_level(logging.INFO, logger="proxy")
    async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
        credentials.write_text(profile(*new))
        async with proxy.client.post(proxy.url + "/fn/x", data=b"order") as response:
            assert response.status == 200
            assert (await response.json())["body"] == "order"
    assert [(r.verified, r.error_type) for r in fake.received] == [
        (False, "ExpiredTokenException"),
        (True, None),
    ]
    assert any("resolved afresh" in r.getMessage() for r in caplog.records)


async def test_credentials_rejected_again_are_not_sent_a_second_time(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    del fake.keys[AKID]  # AWS does not know the key: resolving afresh finds the same one
    answer = await ask(fake, caplog, "/fn/x")
    assert answer.status == 403
    assert answer.headers["X-Proxy-Diagnosis"] == "credentials_rejected"
    assert answer.body == aws_body("message", INVALID_TOKEN)
    assert "UnrecognizedClientException: they expired or were revoked" in answer.line
    assert "resolving them afresh gave no other keys" in answer.line
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    ("path", "status", "code", "body", "said"),
    [
        ("/fn/throttle", 429, "throttled", json.dumps(THROTTLED), "the proxy never retries it"),
        (
            "/fn/fail",
            502,
            "function_error",
            FUNCTION_FAILED,
            "the function itself failed or timed out (a 502 from Lambda, not from the proxy): "
            "find the invocation with request id {id} in the function's CloudWatch log group",
        ),
    ],
    ids=["throttled", "function-failed"],
)
async def test_lambdas_own_failures_are_explained_and_never_retried(
    fake: FakeFunctionUrl,
    aws_keys: None,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
    code: str,
    body: str,
    said: str,
) -> None:
    answer = await ask(fake, caplog, path)
    assert (answer.status, answer.headers["X-Proxy-Diagnosis"]) == (status, code)
    assert answer.body == body.encode()
    assert said.format(id=answer.headers["x-amzn-RequestId"]) in answer.line
    assert len(fake.received) == 1


async def test_a_functions_own_502_is_left_alone(
    fake: FakeFunctionUrl, aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    answer = await ask(fake, caplog, "/fn/status/502")  # the function chose 502
    assert answer.status == 502
    assert "X-Proxy-Diagnosis" not in answer.headers


class LyingDate(FakeFunctionUrl):
    """AWS 10 minutes ahead, but a Date 10 minutes behind: the correction it leads to fails."""

    async def _add_date(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = formatdate(self._clock() - 1200, usegmt=True)


async def test_a_request_is_never_sent_a_third_time(
    aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    async with LyingDate(clock=lambda: time.time() + 600) as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        answer = await ask(fake, caplog, "/fn/x")
        assert answer.status == 403
        assert answer.headers["X-Proxy-Diagnosis"] == "clock_skew"
        assert json.loads(answer.body)["message"].startswith("Signature expired")
        assert "more than 5 minutes from AWS's (after a retry)" in answer.line
        assert [r.verified for r in fake.received] == [False, False]


# --- A refusal's body: waited for when it comes late, left alone when it is not AWS's -------


@contextlib.asynccontextmanager
async def answered(answer: Script) -> AsyncIterator[tuple[ScriptedUpstream, ClientResponse]]:
    """GET /fn/x through the proxy, to an upstream that answers with `answer`."""
    async with (
        scripted(answer) as upstream,
        running_proxy(routes=[route("/fn", f"http://127.0.0.1:{upstream.port}")]) as proxy,
        proxy.client.get(proxy.url + "/fn/x") as response,
    ):
        yield upstream, response


def refusal(date: float, body: bytes) -> bytes:
    return (
        "HTTP/1.1 403 Forbidden\r\nx-amzn-ErrorType: InvalidSignatureException\r\n"
        f"Date: {formatdate(date, usegmt=True)}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_a_refusal_whose_body_comes_late_is_still_read_and_resent(aws_keys: None) -> None:
    expired = b'{"message":"Signature expired: 20270115T075000Z is now earlier than ..."}'

    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            whole = refusal(time.time() + 600, expired)
            await in_two_parts(whole[:-10], 0.2, whole[-10:])(writer, n)
        else:
            await ok()(writer, n)

    async with answered(answer) as (upstream, response):
        assert (response.status, await response.read()) == (200, b"ok")
    first, second = (request.header("x-amz-date") or "" for request in upstream.received)
    ahead = time.strftime("%Y%m%dT%H%M", time.gmtime(time.time() + 600))
    assert second[:13] == ahead[:13] and first != second


async def test_a_large_403_is_passed_through_unread_and_unexplained(aws_keys: None) -> None:
    big = b"x" * (BODY_LIMIT * 4)

    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(refusal(time.time(), big))
        await writer.drain()

    async with answered(answer) as (upstream, response):
        assert (response.status, await response.read()) == (403, big)
        assert "X-Proxy-Diagnosis" not in response.headers
    assert len(upstream.received) == 1


# --- The classification, pure ------------------------------------------------------------


EXPIRED = b'{"message":"Signature expired: 20270115T075000Z is now earlier than ..."}'
NOT_YET_CURRENT = b'{"message":"Signature not yet current: 20270115T081000Z is still later ..."}'


def named(**known: str) -> RouteFacts:
    return RouteFacts("/orders", "https://abc.lambda-url.eu-west-1.on.aws", "eu-west-1", **known)


def test_a_route_naming_its_function_gets_the_logs_command_and_the_functions_arn() -> None:
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:orders"
    failed = diagnose(
        502, None, b"Internal Server Error", named(function="orders", request_id="r1")
    )
    assert failed is not None and failed.code == "function_error"
    assert "request id r1 in `aws logs tail /aws/lambda/orders --since 10m`" in failed.explanation
    timed_out = diagnose(504, "TimeoutError", b"", named(function="orders"))
    assert timed_out is not None and "the function itself timed out" in timed_out.explanation
    denied = diagnose(403, "AccessDeniedException", b"", named(function_arn=arn))
    assert denied is not None and f'"Resource": "{arn}"' in denied.explanation
    assert f"may not invoke {arn}" in denied.explanation


@pytest.mark.parametrize(
    ("status", "error_type", "body", "code", "cure"),
    [
        (403, "InvalidSignatureException", EXPIRED, "clock_skew", Cure.CLOCK),
        (403, "InvalidSignatureException", NOT_YET_CURRENT, "clock_skew", Cure.CLOCK),
        (403, "ExpiredTokenException", b"", "credentials_rejected", Cure.CREDENTIALS),
        (403, "UnrecognizedClientException", b"", "credentials_rejected", Cure.CREDENTIALS),
        (403, "InvalidSignatureException", LAMBDA_REGION_REFUSAL, "wrong_region", None),
        (403, "AccessDeniedException", b"", "access_denied", None),
        (429, "TooManyRequestsException", b"", "throttled", None),
    ],
)
def test_only_what_a_second_signature_mends_is_cured(
    status: int, error_type: str, body: bytes, code: str, cure: Cure | None
) -> None:
    found = diagnose(status, error_type, body, named())
    assert found is not None and (found.code, found.cure) == (code, cure)


@pytest.mark.parametrize(
    ("status", "error_type", "body"),
    [
        (403, "InvalidSignatureException", b'{"message":"something new"}'),
        (403, None, b"Forbidden"),  # a function's own 403
        (502, None, b'{"error": "the function chose 502"}'),
        (500, None, b""),
        (429, None, b"slow down"),  # the function's own rate limit
        (200, None, b"Signature expired"),
    ],
)
def test_what_it_does_not_know_it_leaves_alone(
    status: int, error_type: str | None, body: bytes
) -> None:
    assert diagnose(status, error_type, body, named()) is None


async def test_a_functions_own_streamed_403_is_not_held_back(aws_keys: None) -> None:
    """No x-amzn-ErrorType: the function's answer, whose head goes to the client at once."""
    release = asyncio.Event()

    async def answer(writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()

    async with answered(answer) as (upstream, response):
        assert response.status == 403  # arrived while the function still streams
        assert await response.content.readexactly(5) == b"first"
        release.set()
        assert await response.read() == b"last"
        assert "X-Proxy-Diagnosis" not in response.headers
    assert len(upstream.received) == 1

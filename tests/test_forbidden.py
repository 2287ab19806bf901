"""An upstream 403 whose body names a region is logged with a hint about the region, not the
clock; AWS's answer still reaches the client unchanged."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from proxy.forbidden import region_hint
from tests.conftest import AKID, SECRET, route, running_proxy
from tests.fake_function_url import FakeFunctionUrl, KeyRecord

LAMBDA_REGION_REFUSAL = b'{"message":"Credential should be scoped to a valid region. "}'
ORIGIN = "http://localhost:5173"


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
    assert body == {"message": "Credential should be scoped to a valid region. "}
    line = access_line(caplog)
    message = line.getMessage()
    assert line.levelname == "WARNING"
    assert "route /fn signed for region eu-west-1 (from route /fn)" in message
    assert "region on the route, --region or AWS_REGION" in message
    assert "clock" not in message


async def test_a_clock_refusal_keeps_the_clock_hint(
    aws_keys: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with FakeFunctionUrl(clock=lambda: time.time() + 600) as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        async with running_proxy(routes=[route("/fn", fake.url)]) as proxy:
            async with proxy.client.get(proxy.url + "/fn/x") as response:
                assert response.status == 403
    message = access_line(caplog).getMessage()
    assert "check the clock" in message and "region" not in message


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

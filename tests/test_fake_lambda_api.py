"""The fake Lambda API behaves as botocore's own `lambda` client expects of AWS: every answer,
errors and the event stream included, is parsed by the client into what its model promises."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import botocore.session
import pytest
import pytest_asyncio
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.fake_function_url import MAX_REQUEST_BODY, KeyRecord
from tests.fake_lambda_api import (
    HTTP_INTEGRATION,
    INVOKE,
    INVOKE_STREAM,
    NO_URL,
    QUALIFIER_MISMATCH,
    FakeLambdaApi,
    FakeUrl,
    Streamed,
    echo,
    http_stream,
)

# Not in the development loop (-m "not slow"): a fake server per test, driven by botocore.
pytestmark = pytest.mark.slow

AKID = "AKIDFAKELAMBDAAPI001"
SECRET = "fake-lambda-api-secret-key"
TOKEN = "fake-lambda-api-session-token"
URL = "https://0123456789abcdefghijklmnopqrstuv.lambda-url.us-east-1.on.aws/"
PROD_URL = "https://vutsrqponmlkjihgfedcba9876543210.lambda-url.us-east-1.on.aws/"

T = TypeVar("T")


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeLambdaApi]:
    async with FakeLambdaApi() as fake:
        fake.keys[AKID] = KeyRecord(SECRET)
        yield fake


def client(
    at: FakeLambdaApi | str | None,
    *,
    secret: str = SECRET,
    access_key: str = AKID,
    token: str | None = None,
    attempts: int = 1,
) -> Any:
    """botocore's lambda client, at the fake or a URL (None: wherever the environment points
    it); Any, as botocore makes its methods from the service model at run time."""
    return botocore.session.get_session().create_client(
        "lambda",
        region_name="us-east-1",
        endpoint_url=at.url if isinstance(at, FakeLambdaApi) else at,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


async def off_loop(call: Callable[[], T]) -> T:
    """botocore blocks: it runs in a thread while the fake answers on this loop."""
    return await asyncio.to_thread(call)


def error_of(call: Callable[[], object]) -> ClientError:
    try:
        call()
    except ClientError as error:
        return error
    raise AssertionError("no error")


# --- GetFunctionUrlConfig --------------------------------------------------------------------


async def test_get_function_url_config_is_parsed_by_botocore(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL, "NONE", "RESPONSE_STREAM"))
    lam = client(fake)

    answer = await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))

    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert (answer["FunctionUrl"], answer["AuthType"], answer["InvokeMode"]) == (
        URL,
        "NONE",
        "RESPONSE_STREAM",
    )
    assert answer["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:my-fn"
    [call] = fake.calls
    assert (call.operation, call.function, call.qualifier) == (
        "GetFunctionUrlConfig",
        "my-fn",
        None,
    )


async def test_the_qualifier_picks_the_alias_url(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL), aliases={"prod": FakeUrl(PROD_URL)})
    lam = client(fake)

    answer = await off_loop(
        lambda: lam.get_function_url_config(FunctionName="my-fn", Qualifier="prod")
    )

    assert answer["FunctionUrl"] == PROD_URL
    assert answer["FunctionArn"].endswith(":function:my-fn:prod")
    assert fake.calls[0].qualifier == "prod"


@pytest.mark.parametrize(
    "name",
    [
        "arn:aws:lambda:us-east-1:123456789012:function:my-fn",
        "123456789012:function:my-fn",
        "my-fn",
    ],
)
async def test_a_function_is_named_by_name_partial_arn_or_arn(
    fake: FakeLambdaApi, name: str
) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL))
    lam = client(fake)

    answer = await off_loop(lambda: lam.get_function_url_config(FunctionName=name))

    assert answer["FunctionUrl"] == URL
    assert fake.calls[0].function == name  # botocore percent-encoded the colons; we decoded


async def test_no_url_is_resource_not_found(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn")
    lam = client(fake)

    with pytest.raises(lam.exceptions.ResourceNotFoundException) as raised:
        await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))

    error = raised.value.response
    assert error["Error"] == {"Code": "ResourceNotFoundException", "Message": NO_URL}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Type"] == "User"


@pytest.mark.parametrize(
    ("qualifier", "arn"),
    [(None, ":function:nope"), ("prod", ":function:nope:prod")],
)
async def test_a_missing_function_or_alias_is_function_not_found(
    fake: FakeLambdaApi, qualifier: str | None, arn: str
) -> None:
    lam = client(fake)
    extra = {"Qualifier": qualifier} if qualifier else {}

    with pytest.raises(lam.exceptions.ResourceNotFoundException) as raised:
        await off_loop(lambda: lam.get_function_url_config(FunctionName="nope", **extra))

    message = raised.value.response["Error"]["Message"]
    assert message == f"Function not found: arn:aws:lambda:us-east-1:123456789012{arn}"


async def test_a_missing_alias_of_an_existing_function_is_not_found(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL))
    lam = client(fake)

    with pytest.raises(lam.exceptions.ResourceNotFoundException, match="Function not found"):
        await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn", Qualifier="x"))


async def test_a_denied_caller_gets_access_denied_naming_the_action(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL))
    fake.deny(AKID, "lambda:GetFunctionUrlConfig")
    lam = client(fake)

    error = await off_loop(
        lambda: error_of(lambda: lam.get_function_url_config(FunctionName="my-fn"))
    )

    assert error.response["Error"]["Code"] == "AccessDeniedException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error.response["Error"]["Message"] == (
        "User: arn:aws:iam::123456789012:user/fake-caller is not authorized to perform: "
        "lambda:GetFunctionUrlConfig on resource: "
        "arn:aws:lambda:us-east-1:123456789012:function:my-fn because no identity-based policy "
        "allows the lambda:GetFunctionUrlConfig action"
    )


async def test_throttling_is_too_many_requests_with_its_reason(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL))
    fake.throttle("GetFunctionUrlConfig")
    lam = client(fake)

    with pytest.raises(lam.exceptions.TooManyRequestsException) as raised:
        await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))

    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert (error["Reason"], error["retryAfterSeconds"]) == ("CallerRateLimitExceeded", "1")
    assert error["Error"]["Message"] == "Rate Exceeded."


async def test_botocore_retries_a_throttled_call_as_throttling(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL))
    fake.throttle("GetFunctionUrlConfig")
    lam = client(fake, attempts=2)

    answer = await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))

    assert answer["FunctionUrl"] == URL
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1


async def test_a_qualifier_in_the_name_and_another_in_the_query_is_refused(
    fake: FakeLambdaApi,
) -> None:
    fake.add_function("my-fn", aliases={"prod": FakeUrl(URL), "dev": None})
    lam = client(fake)

    with pytest.raises(lam.exceptions.InvalidParameterValueException, match=QUALIFIER_MISMATCH):
        await off_loop(lambda: lam.invoke(FunctionName="my-fn:prod", Qualifier="dev"))


# --- Signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_key", "secret", "code"),
    [
        (AKID, "the wrong secret", "InvalidSignatureException"),
        ("AKIDNOBODYKNOWS00001", SECRET, "UnrecognizedClientException"),
    ],
)
async def test_a_bad_signature_is_refused_as_aws_does(
    fake: FakeLambdaApi, access_key: str, secret: str, code: str
) -> None:
    fake.add_function("my-fn", url=FakeUrl(URL))
    lam = client(fake, access_key=access_key, secret=secret)

    error = await off_loop(
        lambda: error_of(lambda: lam.get_function_url_config(FunctionName="my-fn"))
    )

    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert fake.calls == []
    assert not fake.received[0].verified


async def test_temporary_credentials_sign_with_their_token(fake: FakeLambdaApi) -> None:
    fake.keys["ASIAFAKELAMBDAAPI001"] = KeyRecord(SECRET, session_token=TOKEN)
    fake.add_function("my-fn", url=FakeUrl(URL))
    lam = client(fake, access_key="ASIAFAKELAMBDAAPI001", token=TOKEN)

    answer = await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))

    assert answer["FunctionUrl"] == URL
    assert fake.calls[0].access_key == "ASIAFAKELAMBDAAPI001"


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL"])
async def test_the_standard_endpoint_variables_point_botocore_at_the_fake(
    fake: FakeLambdaApi, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, fake.url)
    fake.add_function("my-fn", url=FakeUrl(URL))
    lam = client(None)

    assert lam.meta.endpoint_url == fake.url
    answer = await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))
    assert answer["FunctionUrl"] == URL


# --- Invoke ----------------------------------------------------------------------------------


async def test_invoke_gives_the_handler_the_payload_and_returns_its_result(
    fake: FakeLambdaApi,
) -> None:
    fake.add_function("my-fn", echo)
    lam = client(fake)

    answer = await off_loop(
        lambda: lam.invoke(FunctionName="my-fn", Payload=json.dumps({"rawPath": "/x"}))
    )

    assert (answer["StatusCode"], answer["ExecutedVersion"]) == (200, "$LATEST")
    assert "FunctionError" not in answer
    result = json.loads(answer["Payload"].read())
    assert result["statusCode"] == 200
    assert json.loads(result["body"]) == {"rawPath": "/x"}
    assert fake.calls[0].event == {"rawPath": "/x"}
    assert fake.calls[0].operation == INVOKE


async def test_invoke_a_qualified_function(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", lambda event: "prod answer", aliases={"prod": None})
    lam = client(fake)

    answer = await off_loop(lambda: lam.invoke(FunctionName="my-fn", Qualifier="prod"))

    assert json.loads(answer["Payload"].read()) == "prod answer"
    assert answer["ExecutedVersion"] == "1"
    assert fake.calls[0].qualifier == "prod"


async def test_an_async_handler_is_awaited(fake: FakeLambdaApi) -> None:
    async def handler(event: Any) -> Any:
        await asyncio.sleep(0)
        return [1, 2]

    fake.add_function("my-fn", handler)
    lam = client(fake)

    answer = await off_loop(lambda: lam.invoke(FunctionName="my-fn"))

    assert json.loads(answer["Payload"].read()) == [1, 2]
    assert fake.calls[0].event == {}  # no Payload: an empty object


async def test_a_function_error_is_a_200_with_x_amz_function_error(fake: FakeLambdaApi) -> None:
    def handler(event: Any) -> Any:
        raise KeyError("missing")

    fake.add_function("my-fn", handler)
    lam = client(fake)

    answer = await off_loop(lambda: lam.invoke(FunctionName="my-fn", Payload=b"{}"))

    assert (answer["StatusCode"], answer["FunctionError"]) == (200, "Unhandled")
    error = json.loads(answer["Payload"].read())
    assert (error["errorType"], error["errorMessage"]) == ("KeyError", "'missing'")
    assert set(error) == {"errorType", "errorMessage", "requestId", "stackTrace"}


async def test_a_result_over_six_megabytes_is_a_function_error(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", lambda event: "x" * (6 * 1024 * 1024))
    lam = client(fake)

    answer = await off_loop(lambda: lam.invoke(FunctionName="my-fn"))

    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"


async def test_the_log_tail_is_returned_when_asked(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn")
    lam = client(fake)

    answer = await off_loop(lambda: lam.invoke(FunctionName="my-fn", LogType="Tail"))

    assert base64.b64decode(answer["LogResult"]).startswith(b"START RequestId: ")


@pytest.mark.parametrize(("invocation_type", "status"), [("DryRun", 204), ("Event", 202)])
async def test_dry_runs_and_events_answer_their_status(
    fake: FakeLambdaApi, invocation_type: str, status: int
) -> None:
    fake.add_function("my-fn")
    lam = client(fake)

    answer = await off_loop(
        lambda: lam.invoke(FunctionName="my-fn", InvocationType=invocation_type)
    )

    assert answer["StatusCode"] == status
    assert answer["Payload"].read() == b""


async def test_a_payload_that_is_not_json_is_invalid_request_content(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn")
    lam = client(fake)

    with pytest.raises(lam.exceptions.InvalidRequestContentException, match="into json"):
        await off_loop(lambda: lam.invoke(FunctionName="my-fn", Payload=b"{not json"))


async def test_a_payload_over_the_quota_is_request_too_large(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn")
    lam = client(fake)
    payload = json.dumps("x" * MAX_REQUEST_BODY).encode()

    with pytest.raises(lam.exceptions.RequestTooLargeException):
        await off_loop(lambda: lam.invoke(FunctionName="my-fn", Payload=payload))


async def test_invoke_errors_are_parsed_as_for_the_control_plane(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn")
    fake.deny(AKID, "lambda:InvokeFunction")
    fake.throttle(INVOKE)
    lam = client(fake)

    denied = await off_loop(lambda: error_of(lambda: lam.invoke(FunctionName="my-fn")))
    missing = await off_loop(lambda: error_of(lambda: lam.invoke(FunctionName="other")))

    assert denied.response["Error"]["Code"] == "AccessDeniedException"
    assert "lambda:InvokeFunction on resource" in denied.response["Error"]["Message"]
    assert missing.response["Error"]["Code"] == "AccessDeniedException"  # IAM decides first
    fake.denied.clear()
    with pytest.raises(lam.exceptions.TooManyRequestsException) as raised:
        await off_loop(lambda: lam.invoke(FunctionName="my-fn"))
    assert raised.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
    with pytest.raises(lam.exceptions.ResourceNotFoundException, match="Function not found"):
        await off_loop(lambda: lam.invoke(FunctionName="other"))


# --- InvokeWithResponseStream ----------------------------------------------------------------


def read_stream(answer: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
    """Every event botocore decodes, with the time it arrived."""
    return [(time.monotonic(), event) for event in answer["EventStream"]]


async def test_a_stream_is_decoded_event_by_event_by_botocore(fake: FakeLambdaApi) -> None:
    fake.add_function(
        "my-fn",
        lambda event: http_stream(201, [b"first ", b"second"], {"x-a": "1"}, ["c=1"]),
    )
    lam = client(fake)

    def call() -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
        answer = lam.invoke_with_response_stream(FunctionName="my-fn", Payload=b'{"a": 1}')
        return answer, read_stream(answer)

    answer, events = await off_loop(call)

    assert answer["StatusCode"] == 200
    assert answer["ResponseStreamContentType"] == HTTP_INTEGRATION
    chunks = [event["PayloadChunk"]["Payload"] for _, event in events[:-1]]
    assert chunks == [
        b'{"statusCode": 201, "headers": {"x-a": "1"}, "cookies": ["c=1"]}',
        b"\0" * 8,
        b"first ",
        b"second",
    ]
    assert events[-1][1] == {"InvokeComplete": {"LogResult": ""}}
    assert fake.calls[0].operation == INVOKE_STREAM
    assert fake.calls[0].event == {"a": 1}


async def test_stream_chunks_arrive_as_they_are_written(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", lambda event: Streamed([b"a", b"b", b"c"], "text/plain", delay=0.3))
    lam = client(fake)

    def call() -> list[tuple[float, dict[str, Any]]]:
        return read_stream(lam.invoke_with_response_stream(FunctionName="my-fn"))

    events = await off_loop(call)

    assert [event["PayloadChunk"]["Payload"] for _, event in events[:3]] == [b"a", b"b", b"c"]
    assert events[2][0] - events[0][0] >= 0.5  # the first came long before the last


async def test_an_error_mid_stream_ends_it_with_an_error_code(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", lambda event: Streamed([b"part"], error=RuntimeError("boom")))
    lam = client(fake)

    events = await off_loop(
        lambda: read_stream(lam.invoke_with_response_stream(FunctionName="my-fn"))
    )

    assert events[0][1] == {"PayloadChunk": {"Payload": b"part"}}
    complete = events[-1][1]["InvokeComplete"]
    assert complete["ErrorCode"] == "Unhandled"
    details = json.loads(complete["ErrorDetails"])
    assert (details["errorType"], details["errorMessage"]) == ("RuntimeError", "boom")


async def test_a_handler_that_does_not_stream_answers_its_json_once(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", lambda event: {"statusCode": 200})
    lam = client(fake)

    def call() -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
        answer = lam.invoke_with_response_stream(FunctionName="my-fn")
        return answer, read_stream(answer)

    answer, events = await off_loop(call)

    assert answer["ResponseStreamContentType"] == "application/json"
    assert events[0][1] == {"PayloadChunk": {"Payload": b'{"statusCode": 200}'}}


async def test_stream_errors_before_the_stream_are_api_errors(fake: FakeLambdaApi) -> None:
    fake.throttle(INVOKE_STREAM)
    lam = client(fake)
    fake.add_function("my-fn")

    with pytest.raises(lam.exceptions.TooManyRequestsException):
        await off_loop(lambda: lam.invoke_with_response_stream(FunctionName="my-fn"))
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        await off_loop(lambda: lam.invoke_with_response_stream(FunctionName="other"))


async def test_a_stream_invoked_with_invoke_is_buffered(fake: FakeLambdaApi) -> None:
    fake.add_function("my-fn", lambda event: Streamed([b"a", b"b"]))
    lam = client(fake)

    answer = await off_loop(lambda: lam.invoke(FunctionName="my-fn"))

    assert answer["Payload"].read() == b"ab"


async def test_run_alone_it_serves_the_functions_it_is_given() -> None:
    script = Path(__file__).with_name("fake_lambda_api.py")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *("--port", "0", "--key", f"{AKID}:{SECRET}"),
        *("--function", f"my-fn={URL},auth=NONE,mode=RESPONSE_STREAM", "--function", "plain"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        url = line.removeprefix("listening on ").strip()
        lam = client(url)

        config = await off_loop(lambda: lam.get_function_url_config(FunctionName="my-fn"))
        echoed = await off_loop(lambda: lam.invoke(FunctionName="plain", Payload=b'{"a": 1}'))

        assert (config["FunctionUrl"], config["AuthType"], config["InvokeMode"]) == (
            URL,
            "NONE",
            "RESPONSE_STREAM",
        )
        assert json.loads(json.loads(echoed["Payload"].read())["body"]) == {"a": 1}
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            await process.wait()

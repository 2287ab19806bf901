"""A fake AWS Lambda API for the tests: GetFunctionUrlConfig, Invoke and InvokeWithResponseStream
at their real REST paths, with the shapes of botocore's service model
(botocore/data/lambda/2015-03-31/service-2.json) and AWS's error answers.

Requests pass the same checks as tests/fake_function_url.py (every SigV4 signature recomputed
with awscrt, service `lambda`, the fake's region), except that the Lambda API, unlike a Function
URL, does not demand `x-amz-content-sha256` (botocore's lambda client never sends it).
tests/test_fake_lambda_api.py proves it faithful with botocore's own `lambda` client.

Functions are configured here: a name, a handler (a Python callable given the event, returning
the result, raising for a function error, or returning `Streamed` to stream), and optionally a
Function URL for the function and for each alias.

Run it alone: python tests/fake_lambda_api.py --port 0 --key AKID:SECRET \
    --function my-fn --function other=http://127.0.0.1:9001,auth=NONE
(a function given a URL answers GetFunctionUrlConfig with it; every handler echoes its event)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from aiohttp import web

from tests import eventstream
from tests.fake_function_url import FakeFunctionUrl, serve_until_signalled, standalone_parser

log = logging.getLogger(__name__)

ACCOUNT: Final = "123456789012"
# Lambda's synchronous response quota: a larger result is a function error, not an API error.
MAX_RESPONSE: Final = 6 * 1024 * 1024
# The content type `awslambda.HttpResponseStream.from` sets, and its delimiter
# (aws-lambda-nodejs-runtime-interface-client, src/HttpResponseStream.js).
HTTP_INTEGRATION: Final = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER: Final = b"\0" * 8

NO_URL: Final = "The resource you requested does not exist."
RATE_EXCEEDED: Final = "Rate Exceeded."
QUALIFIER_MISMATCH: Final = (
    "The derived qualifier from the function name does not match the specified qualifier."
)

GET_URL: Final = "GetFunctionUrlConfig"
INVOKE: Final = "Invoke"
INVOKE_STREAM: Final = "InvokeWithResponseStream"
# The IAM action each operation needs (the service authorization reference for Lambda).
ACTIONS: Final = {
    GET_URL: "lambda:GetFunctionUrlConfig",
    INVOKE: "lambda:InvokeFunction",
    INVOKE_STREAM: "lambda:InvokeFunction",
}
_OPERATIONS: Final = (
    ("GET", re.compile(r"/2021-10-31/functions/([^/]+)/url"), GET_URL),
    ("POST", re.compile(r"/2015-03-31/functions/([^/]+)/invocations"), INVOKE),
    (
        "POST",
        re.compile(r"/2021-11-15/functions/([^/]+)/response-streaming-invocations"),
        INVOKE_STREAM,
    ),
)
# The FunctionName forms the model accepts: name, partial ARN, ARN, each with an optional
# qualifier (NamespacedFunctionName).
_FUNCTION_NAME: Final = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):)?(?:(?P<account>\d{12}):)?"
    r"(?:function:)?(?P<name>[a-zA-Z0-9_.-]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?"
)

Handler = Callable[[Any], Any]


@dataclass
class FakeUrl:
    """A Function URL's configuration, as GetFunctionUrlConfig answers it."""

    url: str = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/"
    auth_type: str = "AWS_IAM"
    invoke_mode: str = "BUFFERED"


@dataclass
class Streamed:
    """What a response-streaming handler writes: its content type, then its chunks, each
    `delay` seconds after the one before; `error` ends the stream as a function error."""

    chunks: Iterable[bytes] | AsyncIterable[bytes]
    content_type: str = "application/octet-stream"
    delay: float = 0.0
    error: Exception | None = None


def http_stream(
    status: int,
    body: Iterable[bytes],
    headers: dict[str, str] | None = None,
    cookies: Sequence[str] = (),
    delay: float = 0.0,
) -> Streamed:
    """What `awslambda.HttpResponseStream.from(stream, {statusCode, headers, cookies})` writes:
    the JSON prelude and the 8 NUL bytes as writes of their own, then the body."""
    prelude: dict[str, Any] = {"statusCode": status}
    if headers is not None:
        prelude["headers"] = headers
    if cookies:
        prelude["cookies"] = list(cookies)
    chunks = [json.dumps(prelude).encode(), PRELUDE_DELIMITER, *body]
    return Streamed(chunks, HTTP_INTEGRATION, delay)


def echo(event: Any) -> Any:
    """A handler answering as a Function URL function would: the event it got, as JSON."""
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(event),
    }


@dataclass
class FakeFunction:
    name: str
    handler: Handler = echo
    url: FakeUrl | None = None  # the unqualified function's URL
    aliases: dict[str, FakeUrl | None] = field(default_factory=dict)  # alias -> its URL


@dataclass(frozen=True)
class Call:
    """One call that passed the signature checks, as it arrived."""

    operation: str
    function: str  # as named in the path, decoded
    qualifier: str | None
    headers: list[tuple[str, str]]
    event: Any  # the Invoke payload, parsed; None for GetFunctionUrlConfig
    access_key: str


class ApiError(Exception):
    """An answer the Lambda API gives instead of a result: its type, status and JSON body."""

    def __init__(
        self,
        error_type: str,
        status: int,
        body: dict[str, Any],
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(f"{error_type}: {body}")
        self.error_type = error_type
        self.status = status
        self.body = body
        self.headers = headers

    def response(self) -> web.Response:
        return _json(self.body, self.status, [("x-amzn-ErrorType", self.error_type), *self.headers])


def not_found(message: str) -> ApiError:
    return ApiError("ResourceNotFoundException", 404, {"Type": "User", "Message": message})


def invalid_parameter(message: str) -> ApiError:
    return ApiError("InvalidParameterValueException", 400, {"Type": "User", "message": message})


class FakeLambdaApi(FakeFunctionUrl):
    too_large_error = "RequestTooLargeException"

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        account: str = ACCOUNT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(region=region, service="lambda", clock=clock)
        self.payload_hash_required = False
        self.account = account
        self.caller = f"arn:aws:iam::{account}:user/fake-caller"
        self.functions: dict[str, FakeFunction] = {}
        self.calls: list[Call] = []
        self.denied: dict[str, set[str]] = {}  # access key -> IAM actions refused
        self.throttled: dict[str, int] = {}  # operation -> how many more calls get 429
        self.failures: dict[str, list[ApiError]] = {}  # operation -> the next calls' answers

    def add_function(
        self,
        name: str,
        handler: Handler = echo,
        *,
        url: FakeUrl | None = None,
        aliases: dict[str, FakeUrl | None] | None = None,
    ) -> FakeFunction:
        function = FakeFunction(name, handler, url, dict(aliases or {}))
        self.functions[name] = function
        return function

    def deny(self, access_key: str, action: str) -> None:
        self.denied.setdefault(access_key, set()).add(action)

    def fail(self, operation: str, error: ApiError) -> None:
        """The next call of `operation` (past IAM and throttling) is answered with `error`."""
        self.failures.setdefault(operation, []).append(error)

    def throttle(self, operation: str, times: int = 1) -> None:
        self.throttled[operation] = self.throttled.get(operation, 0) + times

    def arn(self, name: str, qualifier: str | None = None) -> str:
        arn = f"arn:aws:lambda:{self.region}:{self.account}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    async def _invoke(
        self, request: web.Request, body: bytes, access_key: str
    ) -> web.StreamResponse:
        """Answer as the Lambda API would, by method and path."""
        raw_path, _, query = request.raw_path.partition("?")
        for method, pattern, operation in _OPERATIONS:
            match = pattern.fullmatch(raw_path)
            if match and request.method == method:
                try:
                    return await self._operation(
                        request, operation, unquote(match[1]), query, body, access_key
                    )
                except ApiError as error:
                    log.info("%s %s -> %s", operation, raw_path, error)
                    return error.response()
        return ApiError(
            "UnknownOperationException", 404, {"message": "Unknown operation"}
        ).response()

    async def _operation(
        self,
        request: web.Request,
        operation: str,
        function_name: str,
        query: str,
        body: bytes,
        access_key: str,
    ) -> web.StreamResponse:
        qualifiers = parse_qs(query).get("Qualifier", [])
        function, qualifier = self._function(function_name, qualifiers[0] if qualifiers else None)
        event = None if operation == GET_URL else _event(body)
        self.calls.append(
            Call(
                operation,
                function_name,
                qualifier,
                list(request.headers.items()),
                event,
                access_key,
            )
        )
        # IAM decides before the function is looked up: a denied caller learns nothing of it.
        action = ACTIONS[operation]
        if action in self.denied.get(access_key, set()):
            message = (
                f"User: {self.caller} is not authorized to perform: {action} on resource: "
                f"{self.arn(function_name if function is None else function.name, qualifier)} "
                f"because no identity-based policy allows the {action} action"
            )
            raise ApiError("AccessDeniedException", 403, {"Message": message})
        if self.throttled.get(operation, 0) > 0:
            self.throttled[operation] -= 1
            reason = (
                "CallerRateLimitExceeded"
                if operation == GET_URL
                else ("ConcurrentInvocationLimitExceeded")
            )
            raise ApiError(
                "TooManyRequestsException",
                429,
                {"Reason": reason, "Type": "User", "message": RATE_EXCEEDED},
                [("Retry-After", "1")],
            )
        if self.failures.get(operation):
            raise self.failures[operation].pop(0)
        if function is None or (
            qualifier not in (None, "$LATEST") and qualifier not in function.aliases
        ):
            named = _FUNCTION_NAME.fullmatch(function_name)
            name = named["name"] if named else function_name
            raise not_found(f"Function not found: {self.arn(name, qualifier)}")
        if operation == GET_URL:
            return self._url_config(function, qualifier)
        invocation_type = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            return web.Response(status=204)
        if operation == INVOKE:
            if invocation_type == "Event":
                return web.Response(status=202)
            return await self._buffered(request, function, event, qualifier)
        return await self._streamed(request, function, event, qualifier)

    def _function(
        self, function_name: str, qualifier: str | None
    ) -> tuple[FakeFunction | None, str | None]:
        """The function a FunctionName names, and the qualifier in force."""
        named = _FUNCTION_NAME.fullmatch(function_name)
        if named is None:
            raise invalid_parameter(
                f"1 validation error detected: Value '{function_name}' at "
                "'functionName' failed to satisfy constraint"
            )
        if named["qualifier"] is not None:
            if qualifier is not None and qualifier != named["qualifier"]:
                raise invalid_parameter(QUALIFIER_MISMATCH)
            qualifier = named["qualifier"]
        if (named["region"] or self.region) != self.region or (
            named["account"] or self.account
        ) != self.account:
            return None, qualifier
        return self.functions.get(named["name"]), qualifier

    def _url_config(self, function: FakeFunction, qualifier: str | None) -> web.Response:
        config = function.url if qualifier is None else function.aliases.get(qualifier)
        if config is None:
            raise not_found(NO_URL)
        return _json(
            {
                "FunctionUrl": config.url,
                "FunctionArn": self.arn(function.name, qualifier),
                "AuthType": config.auth_type,
                "CreationTime": "2026-01-05T10:00:00.000000Z",
                "LastModifiedTime": "2026-01-05T10:00:00.000000Z",
                "InvokeMode": config.invoke_mode,
            }
        )

    async def _buffered(
        self, request: web.Request, function: FakeFunction, event: Any, qualifier: str | None
    ) -> web.Response:
        request_id = str(uuid.uuid4())
        headers = [("X-Amz-Executed-Version", "$LATEST" if qualifier is None else "1")]
        if request.headers.get("X-Amz-Log-Type") == "Tail":
            tail = f"START RequestId: {request_id}\nEND RequestId: {request_id}\n"
            headers.append(("X-Amz-Log-Result", base64.b64encode(tail.encode()).decode()))
        try:
            result = await _call(function.handler, event)
            payload = (
                await _collect(result)
                if isinstance(result, Streamed)
                else (json.dumps(result).encode())
            )
        except Exception as error:  # the function's own failure: a 200 with the error object
            payload = _function_error(error, request_id)
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        else:
            if len(payload) > MAX_RESPONSE:
                payload = json.dumps(
                    {
                        "errorMessage": "Response payload size exceeded maximum allowed payload"
                        f" size ({MAX_RESPONSE} bytes).",
                        "errorType": "Function.ResponseSizeTooLarge",
                    }
                ).encode()
                headers.append(("X-Amz-Function-Error", "Unhandled"))
        return web.Response(body=payload, content_type="application/json", headers=headers)

    async def _streamed(
        self, request: web.Request, function: FakeFunction, event: Any, qualifier: str | None
    ) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        try:
            result = await _call(function.handler, event)
        except Exception as error:  # failed before its first write: no chunk, then the error
            result = Streamed((), error=error)
        if not isinstance(result, Streamed):  # a handler that does not stream: its JSON, once
            result = Streamed([json.dumps(result).encode()], "application/json")
        # The HTTP Content-Type is the function's (the model's ResponseStreamContentType); the
        # body is event-stream framed whatever it says.
        response = web.StreamResponse(
            headers={
                "Content-Type": result.content_type,
                "X-Amz-Executed-Version": "$LATEST" if qualifier is None else "1",
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            first = True
            async for chunk in _chunks(result.chunks):
                if not first and result.delay:
                    await asyncio.sleep(result.delay)
                first = False
                await response.write(eventstream.payload_chunk(chunk))
            if result.error is not None:
                details = json.dumps(json.loads(_function_error(result.error, request_id)))
                await response.write(eventstream.invoke_complete("Unhandled", details))
            else:
                await response.write(eventstream.invoke_complete())
        except (asyncio.CancelledError, ConnectionResetError):
            if not self._stopping:
                self.stream_cancelled += 1
                self._stream_cut.set()
            raise
        await response.write_eof()
        return response


def _event(body: bytes) -> Any:
    if not body:
        return {}  # Invoke without a Payload: the function gets an empty object
    try:
        return json.loads(body)
    except ValueError as error:
        raise ApiError(
            "InvalidRequestContentException",
            400,
            {"Type": "User", "message": f"Could not parse request body into json: {error}"},
        ) from None


async def _call(handler: Handler, event: Any) -> Any:
    result = handler(event)
    return await result if inspect.isawaitable(result) else result


async def _chunks(chunks: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


async def _collect(streamed: Streamed) -> bytes:
    """A streaming function invoked with Invoke: Lambda buffers what it writes."""
    if streamed.error is not None:
        raise streamed.error
    return b"".join([chunk async for chunk in _chunks(streamed.chunks)])


def _function_error(error: Exception, request_id: str) -> bytes:
    """The error object a runtime reports for an unhandled exception (the Python runtime's
    shape: errorMessage, errorType, requestId, stackTrace)."""
    return json.dumps(
        {
            "errorMessage": str(error),
            "errorType": type(error).__name__,
            "requestId": request_id,
            "stackTrace": [],
        }
    ).encode()


def _json(data: object, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers=list(headers),
    )


def _parse_function(text: str) -> tuple[str, FakeUrl | None]:
    """NAME[=URL[,auth=NONE][,mode=RESPONSE_STREAM]]"""
    name, _, rest = text.partition("=")
    if not rest:
        return name, None
    url, *options = rest.split(",")
    config = FakeUrl(url)
    for option in options:
        key, _, value = option.partition("=")
        if key == "auth":
            config.auth_type = value
        elif key == "mode":
            config.invoke_mode = value
        else:
            raise argparse.ArgumentTypeError(f"unknown option {option!r} in {text!r}")
    return name, config


def main(argv: Sequence[str] | None = None) -> None:
    parser = standalone_parser("A fake AWS Lambda API.")
    parser.add_argument(
        "--function",
        type=_parse_function,
        action="append",
        default=[],
        metavar="NAME[=URL[,auth=NONE][,mode=RESPONSE_STREAM]]",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    def make() -> FakeLambdaApi:
        fake = FakeLambdaApi(region=args.region)
        fake.keys.update(dict(args.key))
        for name, url in args.function:
            fake.add_function(name, url=url)
        return fake

    asyncio.run(serve_until_signalled(make, args.host, args.port))


if __name__ == "__main__":
    main()

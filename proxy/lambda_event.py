"""Lambda's payload format 2.0, as pure functions: the event a Function URL gives a function for
an HTTP request, and the HTTP answer a Function URL makes of what the function returns. For
routes to functions without a URL, invoked through the Lambda API (issue #14).

Each rule names its source:
[URLS]  AWS Lambda Developer Guide, "Invoking Lambda function URLs", request and response
        payloads: https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-payloads
[V2]    API Gateway Developer Guide, "payload format version 2.0", the schema [URLS] says Function
        URLs follow: https://docs.aws.amazon.com/apigateway/latest/developerguide/
        http-api-develop-integrations-lambda.html#http-api-develop-integrations-lambda.proxy-format
[TEXT]  Which content types arrive as text: [URLS] says only "if the content type of the
        request is binary, the body is base64-encoded"; the split, measured against AWS, is in
        https://github.com/ministackorg/ministack/pull/766 (text/*, application/json,
        application/xml, application/javascript; everything else, a missing Content-Type
        included, is base64).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import unquote

from proxy.errors import FunctionError
from proxy.headers import CONTROL_BYTES, HOP_BY_HOP

VERSION: Final = "2.0"
DEFAULT: Final = "$default"  # routeKey and stage: "Lambda sets this to $default" [URLS]
TEXT_TYPES: Final = frozenset(
    {"application/json", "application/xml", "application/javascript"}
)  # [TEXT], with every text/*
# English month abbreviations, whatever the locale: requestContext.time is
# "12/Mar/2020:19:03:58 +0000" [URLS].
MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# The proxy frames the body itself: a length or framing the function names would be wrong.
FRAMING: Final = HOP_BY_HOP | {"content-length"}
# RFC 9110 5.6.2: a header name is a token.
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL: Final = re.compile("[" + re.escape(CONTROL_BYTES.decode("latin-1")) + "\r\n]")


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity that signed the invoke call, for requestContext.authorizer.iam [URLS]."""

    access_key: str
    account_id: str | None = None
    arn: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The request, as the client sent it (after the route's prefix is taken off the path)."""

    method: str
    path: str  # raw, as sent: percent-encoding kept
    query: str  # raw, as sent, without "?"
    headers: Sequence[tuple[str, str]]  # in order, repeats kept; what the proxy forwards
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer a Function URL makes of a function's result."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def build_event(
    request: HttpRequest,
    *,
    request_id: str,
    now: float,
    domain_name: str,
    account_id: str,
    caller: Caller | None,
) -> dict[str, Any]:
    """The event a Function URL at `domain_name` gives its function for `request`, received at
    `now` (epoch seconds). Keys a Function URL leaves out when empty (cookies, query
    parameters, body) are left out; those it never uses (pathParameters, stageVariables) too:
    "Lambda sets this to null or excludes this from the JSON" [URLS]."""
    prefix = _without_port(domain_name).split(".")[0]
    headers = event_headers(request.headers)
    # A Function URL's front end names its host and the client [URLS example; V2].
    headers["host"] = domain_name
    headers.setdefault("x-forwarded-for", request.source_ip)
    headers.setdefault("x-forwarded-proto", "http")
    event: dict[str, Any] = {
        "version": VERSION,
        "routeKey": DEFAULT,
        "rawPath": request.path,
        "rawQueryString": request.query,  # "the raw string containing the ... query" [URLS]
    }
    if cookies := request_cookies(request.headers):
        event["cookies"] = cookies
    event["headers"] = headers
    if parameters := query_parameters(request.query):
        event["queryStringParameters"] = parameters
    event["requestContext"] = {
        "accountId": account_id,  # "the AWS account ID of the function owner" [URLS]
        "apiId": prefix,  # the URL's id, which is also its domain prefix [URLS]
        "authentication": None,  # "Function URLs don't use this parameter" [URLS]
        "authorizer": None if caller is None else {"iam": _iam(caller)},
        "domainName": domain_name,
        "domainPrefix": prefix,
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": _first(request.headers, "user-agent") or "",
        },
        "requestId": request_id,
        "routeKey": DEFAULT,
        "stage": DEFAULT,
        "time": aws_time(now),
        "timeEpoch": int(now * 1000),
    }
    event.update(body_fields(request.body, _first(request.headers, "content-type")))
    return event


def event_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Names lower-cased, a repeated header's values joined with commas ("Duplicate headers are
    combined with commas" [V2]); Cookie moves to `cookies` [V2]."""
    joined: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            continue
        joined[lower] = f"{joined[lower]},{value}" if lower in joined else value
    return joined


def request_cookies(headers: Iterable[tuple[str, str]]) -> list[str]:
    """Every cookie of every Cookie header, one per item ("cookies": ["Cookie_1=Value_1",
    "Cookie_2=Value_2"] [URLS]; "all cookie headers in the request are combined ... and added
    to the cookies field" [V2])."""
    return [
        cookie.strip()
        for name, value in headers
        if name.lower() == "cookie"
        for cookie in value.split(";")
        if cookie.strip()
    ]


def query_parameters(raw_query: str) -> dict[str, str]:
    """Names and values percent-decoded, a repeated name's values joined with commas in the
    order sent ("parameter1": "value1,value2" [URLS]; "duplicate query strings are combined
    with commas" [V2]). A `+` stays a plus, as Lambda reads the query it signs (README)."""
    parameters: dict[str, str] = {}
    for pair in raw_query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name, value = unquote(raw_name), unquote(raw_value)
        parameters[name] = f"{parameters[name]},{value}" if name in parameters else value
    return parameters


def is_text(content_type: str | None) -> bool:
    """Does a body of this content type reach the function as text? [TEXT]"""
    if not content_type:
        return False
    media_type = content_type.split(";")[0].strip().lower()
    return media_type.startswith("text/") or media_type in TEXT_TYPES


def body_fields(body: bytes, content_type: str | None) -> dict[str, Any]:
    """`body` and `isBase64Encoded`: text as itself, anything else base64 ("if the content type
    of the request is binary, the body is base64-encoded" [URLS], [TEXT]). Bytes that are not
    UTF-8 are base64 whatever the type claims: a JSON string cannot carry them."""
    if not body:
        return {"isBase64Encoded": False}
    if is_text(content_type):
        try:
            return {"body": body.decode("utf-8"), "isBase64Encoded": False}
        except UnicodeDecodeError:
            pass
    return {"body": base64.b64encode(body).decode("ascii"), "isBase64Encoded": True}


def aws_time(epoch: float) -> str:
    """requestContext.time: "12/Mar/2020:19:03:58 +0000" [URLS]."""
    return _aws_second(int(epoch))


@lru_cache(maxsize=2)  # once a second, not once a request: 4 % of an invoke's CPU (bench)
def _aws_second(second: int) -> str:
    when = datetime.fromtimestamp(second, UTC)
    return f"{when.day:02d}/{MONTHS[when.month - 1]}/{when:%Y:%H:%M:%S} +0000"


def answer_from_result(payload: bytes, function_error: str | None = None) -> Answer:
    """The HTTP answer a Function URL makes of an Invoke result [URLS, "Response payload
    format"]: an object with a `statusCode` says its status, headers, cookies and body; any
    other valid JSON is "200, content-type application/json, body the function response".
    FunctionError (502) for a function error (`X-Amz-Function-Error`) or a result that is no
    HTTP answer; its `detail` carries the function's errorType and errorMessage for the log."""
    if function_error is not None:
        raise function_failed(payload, function_error)
    try:
        result = json.loads(payload)
    except ValueError as error:
        raise FunctionError(
            "the function's result is not JSON, so it cannot be made an HTTP answer",
            f"result not JSON ({error}): {payload[:200]!r}",
        ) from None
    if isinstance(result, dict) and "statusCode" in result:
        return _answer(result)
    # The docs' example: "Hello, world!" answers `"Hello, world!"` (content-length 15): the
    # function's JSON as it came.
    return Answer(200, (("content-type", "application/json"),), payload)


def function_failed(payload: bytes, function_error: str) -> FunctionError:
    """A function error (`X-Amz-Function-Error: Unhandled`): the payload is the runtime's error
    object, {"errorMessage", "errorType", ...}."""
    try:
        error = json.loads(payload)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = {"errorMessage": payload[:500].decode("utf-8", "replace")}
    error_type = str(error.get("errorType") or function_error)
    message = str(error.get("errorMessage") or "")
    return FunctionError(
        f"the function failed ({function_error}, {error_type}); its error message is in the "
        "proxy's log",
        f"function error {function_error}: {error_type}: {message}",
    )


def head_lines(
    headers: object, cookies: object, where: str = "the function's answer"
) -> tuple[tuple[str, str], ...]:
    """A result's or a stream prelude's `headers` (an object of strings) and `cookies` (a list
    of strings, each one Set-Cookie [URLS, "Cookies"]) as header lines; FunctionError if they
    are not that shape, or hold what no header line may."""
    lines: list[tuple[str, str]] = []
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise _malformed(f"{where} has headers that are not an object: {headers!r}")
        for name, value in headers.items():
            if value is None:
                continue
            if isinstance(value, dict | list):
                raise _malformed(f"{where} has header {name!r} whose value is not a string")
            text = value if isinstance(value, str) else json.dumps(value)
            if name.lower() not in FRAMING:
                lines.append(_line(name, text, where))
    if cookies is not None:
        if not isinstance(cookies, list) or not all(isinstance(c, str) for c in cookies):
            raise _malformed(f"{where} has cookies that are not a list of strings: {cookies!r}")
        lines.extend(_line("set-cookie", cookie, where) for cookie in cookies)
    return tuple(lines)


def status_of(value: object, where: str = "the function's answer") -> int:
    """A `statusCode`: an integer from 100 to 599 (or one written as a string)."""
    status = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.isdigit():
        status = int(value)
    if status is None or not 100 <= status <= 599:
        raise _malformed(f"{where} has statusCode {value!r}, which is no HTTP status")
    return status


def _answer(result: dict[str, Any]) -> Answer:
    status = status_of(result["statusCode"])
    lines = head_lines(result.get("headers"), result.get("cookies"))
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):  # an object given as the body: its JSON
        data = json.dumps(body).encode()
    elif result.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed(
                "the function's answer says isBase64Encoded but its body is not base64"
            ) from None
    else:
        data = body.encode("utf-8")
    return Answer(status, lines, data)


@lru_cache(maxsize=512)  # a function answers with the same few header lines every time
def _line(name: str, value: str, where: str) -> tuple[str, str]:
    if not _TOKEN.fullmatch(name) or _CONTROL.search(value):
        raise _malformed(f"{where} has a header line no HTTP answer may hold: {name!r}")
    return name, value


def _malformed(why: str) -> FunctionError:
    return FunctionError(f"{why}, so it cannot be made an HTTP answer", why)


def _iam(caller: Caller) -> dict[str, Any]:
    return {
        "accessKey": caller.access_key,
        "accountId": caller.account_id,
        "callerId": caller.user_id,
        "cognitoIdentity": None,  # "Function URLs don't use this parameter" [URLS]
        "principalOrgId": None,
        "userArn": caller.arn,
        "userId": caller.user_id,
    }


def _first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _without_port(host: str) -> str:
    """A Host value's name: "localhost:8080" -> "localhost", "[::1]:8080" -> "[::1]"."""
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host

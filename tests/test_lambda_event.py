"""Payload format 2.0: every rule of the event a Function URL builds, and of the answer it makes
of a function's result (sources in proxy/lambda_event.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import FunctionError
from proxy.headers import HOP_BY_HOP
from proxy.lambda_event import (
    Answer,
    Caller,
    HttpRequest,
    answer_from_result,
    aws_time,
    body_fields,
    build_event,
    event_headers,
    query_parameters,
    request_cookies,
)

PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe"
NOW = 1583348638.390  # the docs' timeEpoch, 1583348638390
CALLER = Caller(
    "AKIAIOSFODNN7EXAMPLE",
    "111122223333",
    "arn:aws:iam::111122223333:user/example-user",
    "AIDACKCEVSQ6C2EXAMPLE",
)


def request(
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    method: str = "GET",
    path: str = "/my/path",
    query: str = "",
) -> HttpRequest:
    return HttpRequest(method, path, query, headers or [], body, "127.0.0.1")


def event_for(req: HttpRequest, caller: Caller | None = CALLER) -> dict[str, Any]:
    return build_event(
        req,
        request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        now=NOW,
        domain_name="localhost:8080",
        account_id="123456789012",
        caller=caller,
    )


def test_the_docs_request_becomes_the_docs_event() -> None:
    """The request of the docs' example [URLS], field by field."""
    req = HttpRequest(
        "POST",
        "/my/path",
        "parameter1=value1&parameter1=value2&parameter2=value",
        [
            ("Header1", "value1"),
            ("Header2", "value1"),
            ("Cookie", "cookie1; cookie2"),
            ("Header2", "value2"),
            ("User-Agent", "agent"),
            ("Content-Type", "text/plain"),
        ],
        b"Hello from client!",
        "123.123.123.123",
    )

    event = event_for(req)

    assert event == {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/my/path",
        "rawQueryString": "parameter1=value1&parameter1=value2&parameter2=value",
        "cookies": ["cookie1", "cookie2"],
        "headers": {
            "header1": "value1",
            "header2": "value1,value2",
            "user-agent": "agent",
            "content-type": "text/plain",
            "host": "localhost:8080",
            "x-forwarded-for": "123.123.123.123",
            "x-forwarded-proto": "http",
        },
        "queryStringParameters": {"parameter1": "value1,value2", "parameter2": "value"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "localhost",
            "authentication": None,
            "authorizer": {
                "iam": {
                    "accessKey": "AKIAIOSFODNN7EXAMPLE",
                    "accountId": "111122223333",
                    "callerId": "AIDACKCEVSQ6C2EXAMPLE",
                    "cognitoIdentity": None,
                    "principalOrgId": None,
                    "userArn": "arn:aws:iam::111122223333:user/example-user",
                    "userId": "AIDACKCEVSQ6C2EXAMPLE",
                }
            },
            "domainName": "localhost:8080",
            "domainPrefix": "localhost",
            "http": {
                "method": "POST",
                "path": "/my/path",
                "protocol": "HTTP/1.1",
                "sourceIp": "123.123.123.123",
                "userAgent": "agent",
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "04/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": "Hello from client!",
        "isBase64Encoded": False,
    }
    json.dumps(event)  # and it is JSON, as the Invoke payload must be


def test_a_bare_get_leaves_out_what_it_does_not_have() -> None:
    event = event_for(request())

    assert "cookies" not in event
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    assert (event["rawQueryString"], event["requestContext"]["http"]["userAgent"]) == ("", "")


def test_without_a_caller_the_authorizer_is_null() -> None:
    assert event_for(request(), caller=None)["requestContext"]["authorizer"] is None


def test_the_raw_path_and_query_are_as_sent() -> None:
    event = event_for(request(path="/a%20b/%2F", query="q=caf%C3%A9&x=1+2"))

    assert (event["rawPath"], event["rawQueryString"]) == ("/a%20b/%2F", "q=caf%C3%A9&x=1+2")
    assert event["requestContext"]["http"]["path"] == "/a%20b/%2F"
    assert event["queryStringParameters"] == {"q": "café", "x": "1+2"}


@pytest.mark.parametrize(
    ("domain", "prefix"),
    [
        ("abc123.lambda-url.us-east-1.on.aws", "abc123"),
        ("127.0.0.1:8080", "127"),
        ("[::1]:8080", "[::1]"),
        ("proxy.internal", "proxy"),
    ],
)
def test_the_domain_prefix_is_the_hosts_first_label(domain: str, prefix: str) -> None:
    event = build_event(
        request(), request_id="r", now=NOW, domain_name=domain, account_id="1", caller=None
    )

    context = event["requestContext"]
    assert (context["domainName"], context["domainPrefix"], context["apiId"]) == (
        domain,
        prefix,
        prefix,
    )
    assert event["headers"]["host"] == domain


def test_headers_are_lower_cased_and_repeats_joined_with_commas_in_order() -> None:
    headers = [("X-A", "1"), ("x-b", "2"), ("X-a", "3"), ("Cookie", "c=1"), ("x-A", "4")]

    assert event_headers(headers) == {"x-a": "1,3,4", "x-b": "2"}


def test_cookies_are_split_from_every_cookie_header() -> None:
    headers = [("Cookie", "a=1; b=2"), ("X", "y"), ("cookie", "c=3;d=4; ; ")]

    assert request_cookies(headers) == ["a=1", "b=2", "c=3", "d=4"]


@given(st.lists(st.text(st.characters(blacklist_characters=";\r\n"), min_size=1).filter(str.strip)))
def test_any_cookies_sent_in_one_header_arrive_one_by_one(cookies: list[str]) -> None:
    header = [("Cookie", "; ".join(cookies))] if cookies else []

    assert request_cookies(header) == [cookie.strip() for cookie in cookies]


def test_query_parameters_decode_and_join_repeats() -> None:
    assert query_parameters("a=1&b=%20x&a=2&flag&&c=") == {
        "a": "1,2",
        "b": " x",
        "flag": "",
        "c": "",
    }


@given(st.lists(st.tuples(st.text(min_size=1), st.text())))
def test_any_query_reads_back_as_aws_joins_it(pairs: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)
    expected: dict[str, list[str]] = {}
    for name, value in pairs:
        expected.setdefault(name, []).append(value)

    assert query_parameters(raw) == {name: ",".join(values) for name, values in expected.items()}


@pytest.mark.parametrize(
    ("content_type", "body", "encoded"),
    [
        ("application/json", b'{"a": "\xc3\xa9"}', False),
        ("application/json; charset=utf-8", b"{}", False),
        ("TEXT/HTML", b"<p>hi</p>", False),
        ("application/xml", b"<a/>", False),
        ("application/javascript", b"x()", False),
        ("application/octet-stream", PNG, True),
        ("image/png", PNG, True),
        ("application/x-www-form-urlencoded", b"a=1&b=2", True),  # [TEXT]: AWS base64s it
        (None, b"plain", True),  # no Content-Type: binary, as AWS takes it
        ("text/plain", b"\xff\xfe not utf-8", True),  # a JSON string cannot carry these bytes
    ],
)
def test_a_body_is_text_only_when_its_type_says_text(
    content_type: str | None, body: bytes, encoded: bool
) -> None:
    fields = body_fields(body, content_type)

    assert fields["isBase64Encoded"] is encoded
    sent = base64.b64decode(fields["body"]) if encoded else fields["body"].encode()
    assert sent == body


def test_a_binary_request_reaches_the_event_base64() -> None:
    event = event_for(request([("Content-Type", "image/png")], PNG, "PUT"))

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == PNG


@given(
    st.binary(min_size=1), st.sampled_from([None, "text/plain", "image/png", "application/json"])
)
def test_any_body_can_be_had_back_from_the_event(body: bytes, content_type: str | None) -> None:
    fields = body_fields(body, content_type)

    decoded = (
        base64.b64decode(fields["body"]) if fields["isBase64Encoded"] else fields["body"].encode()
    )
    assert decoded == body


@pytest.mark.parametrize("month", range(1, 13))
def test_the_time_is_awss_format_in_every_month(month: int) -> None:
    epoch = datetime(2021, month, 7, 22, 50, 22, tzinfo=UTC).timestamp()
    name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    assert aws_time(epoch) == f"07/{name[month - 1]}/2021:22:50:22 +0000"


# --- The answer --------------------------------------------------------------------------------


def result(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_a_custom_response_is_its_status_headers_cookies_and_body() -> None:
    answer = answer_from_result(
        result(
            {
                "statusCode": 201,
                "headers": {"Content-Type": "application/json", "My-Custom-Header": "Custom Value"},
                "body": '{ "message": "Hello, world!" }',
                "cookies": [
                    "Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT",
                    "Cookie_2=Value2; Max-Age=78000",
                ],
                "isBase64Encoded": False,
            }
        )
    )

    assert answer == Answer(
        201,
        (
            ("Content-Type", "application/json"),
            ("My-Custom-Header", "Custom Value"),
            ("set-cookie", "Cookie_1=Value1; Expires=21 Oct 2021 07:48 GMT"),
            ("set-cookie", "Cookie_2=Value2; Max-Age=78000"),
        ),
        b'{ "message": "Hello, world!" }',
    )


@pytest.mark.parametrize(
    "value",
    ["Hello, world!", {"message": "Hello, world!"}, [1, 2], 3, None, True],
    ids=["string", "object", "list", "number", "null", "bool"],
)
def test_any_other_json_is_200_application_json_with_the_result_as_body(value: Any) -> None:
    payload = result(value)

    answer = answer_from_result(payload)

    assert answer == Answer(200, (("content-type", "application/json"),), payload)


def test_the_docs_string_example_answers_15_bytes() -> None:
    assert len(answer_from_result(b'"Hello, world!"').body) == 15


def test_a_base64_body_is_decoded() -> None:
    body = base64.b64encode(PNG).decode()

    answer = answer_from_result(result({"statusCode": 200, "body": body, "isBase64Encoded": True}))

    assert answer.body == PNG


def test_a_status_code_alone_answers_an_empty_body() -> None:
    assert answer_from_result(result({"statusCode": 204})) == Answer(204, (), b"")


def test_an_object_as_body_is_its_json() -> None:
    assert answer_from_result(result({"statusCode": 200, "body": {"a": 1}})).body == b'{"a": 1}'


def test_header_values_that_are_not_strings_are_written_as_json() -> None:
    answer = answer_from_result(
        result({"statusCode": 200, "headers": {"x-n": 5, "x-b": True, "x-none": None}})
    )

    assert answer.headers == (("x-n", "5"), ("x-b", "true"))


def test_the_functions_framing_headers_give_way_to_the_proxys() -> None:
    answer = answer_from_result(
        result(
            {
                "statusCode": 200,
                "headers": {"Content-Length": "999", "Transfer-Encoding": "chunked", "x": "y"},
                "body": "short",
            }
        )
    )

    assert answer.headers == (("x", "y"),)


def test_a_status_code_as_a_string_of_digits_is_taken() -> None:
    assert answer_from_result(result({"statusCode": "404"})).status == 404


@pytest.mark.parametrize(
    "value",
    [
        {"statusCode": "abc"},
        {"statusCode": 99},
        {"statusCode": 600},
        {"statusCode": True},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": ["a", "b"]}},
        {"statusCode": 200, "headers": {"x": "a\r\nSet-Cookie: evil=1"}},
        {"statusCode": 200, "headers": {"bad name": "v"}},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "cookies": ["a=1\nb"]},
        {"statusCode": 200, "body": "not base64!", "isBase64Encoded": True},
    ],
)
def test_a_result_that_is_no_http_answer_is_a_502(value: dict[str, Any]) -> None:
    with pytest.raises(FunctionError) as raised:
        answer_from_result(result(value))

    assert (raised.value.status, raised.value.code) == (502, "function_error")


def test_a_result_that_is_not_json_is_a_502() -> None:
    with pytest.raises(FunctionError, match="not JSON"):
        answer_from_result(b"{oops")


def test_a_function_error_is_a_502_with_its_error_for_the_log() -> None:
    payload = result(
        {
            "errorMessage": "secret detail",
            "errorType": "KeyError",
            "requestId": "r",
            "stackTrace": [],
        }
    )

    with pytest.raises(FunctionError) as raised:
        answer_from_result(payload, "Unhandled")

    error = raised.value
    assert (error.status, error.code) == (502, "function_error")
    assert error.detail == "function error Unhandled: KeyError: secret detail"
    assert "KeyError" in error.message
    assert "secret detail" not in error.message  # the client learns the type, the log the rest
    assert json.loads(error.body())["error"] == "function_error"


def test_a_function_error_whose_payload_is_not_json_is_still_told() -> None:
    with pytest.raises(FunctionError) as raised:
        answer_from_result(b"Task timed out after 3.00 seconds", "Unhandled")

    assert "Task timed out" in raised.value.detail


safe_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
# Names the answer keeps: not hop-by-hop (proxy/headers.py's list, so that a name added there,
# such as proxy-authorization, is left out here too) and not the length the proxy sets.
names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20).filter(
    lambda name: name not in HOP_BY_HOP and name != "content-length"
)


@given(
    st.integers(100, 599),
    st.dictionaries(names, safe_text, max_size=5),
    st.lists(safe_text, max_size=3),
    st.binary(),
)
def test_any_answer_a_function_returns_is_the_answer_sent(
    status: int, headers: dict[str, str], cookies: list[str], body: bytes
) -> None:
    payload = result(
        {
            "statusCode": status,
            "headers": headers,
            "cookies": cookies,
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }
    )

    answer = answer_from_result(payload)

    expected = (*headers.items(), *(("set-cookie", cookie) for cookie in cookies))
    assert answer == Answer(status, expected, body)

"""The signed request head, a pure function: bytes in, bytes out, checked without a socket.

Each head is parsed back with llhttp (httptools' request parser) and its signature recomputed
with awscrt, AWS's own signer, independent of the proxy's."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import quote

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.aws_config import Resolved
from proxy.credentials import Identity
from proxy.routing import Upstream
from proxy.settings import Route
from proxy.signing import EMPTY_SHA256, Credentials
from proxy.target import split_target
from proxy.wire import connection_line, request_head, status_line
from tests.fake_function_url import crt_signature
from tests.test_signing import segment

KEYS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = datetime(2026, 11, 21, 5, 30, 1, tzinfo=UTC)
TIMESTAMP = "20261121T053001Z"


def upstream(url: str = "https://abc123.lambda-url.eu-west-1.on.aws") -> Upstream:
    return Upstream.from_route(
        Route(prefix="/fn", url=url), Resolved("eu-west-1", "the URL's host"), Identity()
    )


class Parsed:
    """A request head as llhttp reads it."""

    def __init__(self, head: bytes) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.complete = False
        parser = httptools.HttpRequestParser(self)
        parser.feed_data(head)
        self.method = parser.get_method().decode()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode(), value.decode()))

    def on_headers_complete(self) -> None:
        self.complete = True

    def header(self, name: str) -> str | None:
        found = [value for key, value in self.headers if key.lower() == name]
        assert len(found) <= 1, found
        return found[0] if found else None


def verified(parsed: Parsed, credentials: Credentials = KEYS) -> bool:
    """Does awscrt, signing the parsed request again, get the signature the head carries?"""
    authorization = parsed.header("authorization") or ""
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    payload_hash = parsed.header("x-amz-content-sha256") or ""
    signature = crt_signature(
        parsed.method,
        parsed.url.decode(),
        parsed.headers,
        signed_headers=signed,
        body_sha256=payload_hash,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
        region="eu-west-1",
        service="lambda",
        when=WHEN,
    )
    return authorization.endswith(f"Signature={signature.signature}")


def test_a_get_head_is_these_bytes_and_aws_accepts_its_signature() -> None:
    head = request_head(
        "GET", upstream(), "/42", "a=1&b=2", b"X-Custom: kept\r\n", 0, EMPTY_SHA256, KEYS, TIMESTAMP
    )
    lines = head.split(b"\r\n")
    assert lines[:4] == [
        b"GET /42?a=1&b=2 HTTP/1.1",
        b"Host: abc123.lambda-url.eu-west-1.on.aws",
        b"X-Custom: kept",
        b"x-amz-content-sha256: " + EMPTY_SHA256.encode(),
    ]
    assert lines[4] == b"x-amz-date: " + TIMESTAMP.encode()
    assert lines[5].startswith(
        b"Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261121/eu-west-1/lambda/"
        b"aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
    )
    assert lines[6:] == [b"", b""]  # no framing for a GET without a body
    assert verified(Parsed(head))


def test_the_same_inputs_give_the_same_bytes() -> None:
    args = (
        "PUT",
        upstream(),
        "/x",
        "",
        b"",
        3,
        hashlib.sha256(b"abc").hexdigest(),
        KEYS,
        TIMESTAMP,
    )
    assert request_head(*args) == request_head(*args)


def test_a_body_is_framed_by_its_length_and_an_empty_post_says_zero() -> None:
    body_hash = hashlib.sha256(b"12345").hexdigest()
    post = Parsed(request_head("POST", upstream(), "/b", "", b"", 5, body_hash, KEYS, TIMESTAMP))
    assert post.header("content-length") == "5"
    assert post.header("x-amz-content-sha256") == body_hash
    assert verified(post)
    empty = Parsed(
        request_head("POST", upstream(), "/c", "", b"", 0, EMPTY_SHA256, KEYS, TIMESTAMP)
    )
    assert empty.header("content-length") == "0"
    for method in ("GET", "HEAD", "OPTIONS"):
        head = request_head(method, upstream(), "/", "", b"", 0, EMPTY_SHA256, KEYS, TIMESTAMP)
        assert Parsed(head).header("content-length") is None


def test_temporary_credentials_send_and_sign_their_token() -> None:
    keys = Credentials("ASIAEXAMPLE", "secret", "the//session+token==")
    parsed = Parsed(request_head("GET", upstream(), "/", "", b"", 0, EMPTY_SHA256, keys, TIMESTAMP))
    assert parsed.header("x-amz-security-token") == "the//session+token=="
    assert "x-amz-security-token" in (parsed.header("authorization") or "")
    assert verified(parsed, keys)


def test_through_an_http_proxy_a_plain_http_upstream_gets_the_absolute_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://alice:s3cret@127.0.0.1:3128")
    target = upstream("http://function.example:8000/base")
    head = request_head("GET", target, "/base/x", "q=1", b"", 0, EMPTY_SHA256, KEYS, TIMESTAMP)
    parsed = Parsed(head)
    assert parsed.url == b"http://function.example:8000/base/x?q=1"
    assert parsed.header("host") == "function.example:8000"
    assert parsed.header("proxy-authorization") == "Basic YWxpY2U6czNjcmV0"
    assert "proxy-authorization" not in (parsed.header("authorization") or "")  # unsigned


def test_answer_pieces() -> None:
    assert status_line((1, 1), 200, b"OK") == b"HTTP/1.1 200 OK\r\n"
    assert status_line((1, 0), 404) == b"HTTP/1.0 404 Not Found\r\n"
    assert status_line((1, 1), 599) == b"HTTP/1.1 599 \r\n"  # no standard phrase
    assert connection_line((1, 1), True) == b""
    assert connection_line((1, 1), False) == b"Connection: close\r\n"
    assert connection_line((1, 0), True) == b"Connection: keep-alive\r\n"
    assert connection_line((1, 0), False) == b""


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(
    segments=st.lists(segment.filter(lambda s: s not in (".", "..")), max_size=4),
    pairs=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3),
    body=st.binary(max_size=64),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_any_head_parses_back_and_verifies(
    segments: list[str], pairs: list[tuple[str, str]], body: bytes, method: str
) -> None:
    raw_path = "/" + "/".join(quote(s, safe="") for s in segments if s)
    raw_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    path, query = split_target(f"{raw_path}?{raw_query}")
    payload_hash = hashlib.sha256(body).hexdigest()
    head = request_head(
        method, upstream(), path, query, b"", len(body), payload_hash, KEYS, TIMESTAMP
    )
    parsed = Parsed(head)
    assert parsed.complete and parsed.method == method
    assert parsed.url == (f"{path}?{query}" if query else path).encode()
    assert verified(parsed)

"""The inspector's pure parts: the ring, the redaction, the bodies as shown, the curl line."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.exchange import Capture, Exchange
from proxy.inspector import Entry, Inspector
from proxy.inspector_view import body_view, curl, detail, redact, scrub, shown_headers, summary


class FakeRequest:
    """What Inspector.record reads of aiohttp's request."""

    def __init__(self, target: str, headers: list[tuple[str, str]]) -> None:
        self.raw_path = target
        self.raw_headers = tuple((n.encode(), v.encode()) for n, v in headers)
        self.version = (1, 1)


def recorded(
    inspector: Inspector,
    method: str = "GET",
    target: str = "/fn/x",
    headers: Any = (),
    body: bytes = b"",
    answer: bytes = b"",
) -> Entry:
    exchange = Exchange(method, target.partition("?")[0], capture=Capture(inspector.body_cap))
    assert exchange.capture is not None
    exchange.capture.request_body = body
    exchange.capture.response_body = answer
    exchange.bytes_sent = len(answer)
    inspector.record(exchange, FakeRequest(target, list(headers)), 0.0123)  # type: ignore[arg-type]
    return inspector.entries()[-1]


def test_the_ring_keeps_the_last_n_newest_first() -> None:
    inspector = Inspector(3)
    for n in range(5):
        recorded(inspector, target=f"/fn/{n}")
    assert [entry.target for entry in inspector.newest_first()] == ["/fn/4", "/fn/3", "/fn/2"]
    assert [entry.id for entry in inspector.entries()] == [3, 4, 5]
    assert inspector.find(2) is None and inspector.find(4) is not None


def test_bodies_are_capped_and_small_ones_not_copied() -> None:
    inspector = Inspector(2, body_cap=10)
    small = b"0123456789"
    entry = recorded(inspector, body=small, answer=b"x" * 25)
    assert entry.capture.request_body is small  # kept as it is: no copy
    assert entry.headers == [] and entry.host == ""
    assert (entry.request_size, entry.response_size) == (10, 25)
    assert entry.capture.response_body == b"x" * 10


def test_a_stream_keeps_only_its_beginning() -> None:
    capture = Capture(room=5)
    capture.keep([b"abc", b"def"])
    capture.keep([b"ghi"])
    assert capture.response_body == b"abcde" and capture.room < 0


def test_watchers_get_each_request_and_none_at_the_end() -> None:
    inspector = Inspector(10)
    queue = inspector.watch()
    entry = recorded(inspector)
    inspector.close()
    told = queue.get_nowait()
    assert told is not None and told.exchange is entry.exchange
    assert queue.get_nowait() is None
    assert not inspector.watched


def test_secrets_are_redacted() -> None:
    assert redact("Authorization", "Bearer abc") == "Bearer <redacted>"
    assert redact("authorization", "AWS4-HMAC-SHA256 Credential=x") == "AWS4-HMAC-SHA256 <redacted>"
    assert redact("Authorization", "opaque") == "<redacted>"
    assert redact("X-Amz-Security-Token", "tok") == "<redacted>"
    assert redact("X-Proxy-Token", "tok") == "<redacted>"
    assert redact("Cookie", "a=1; b=two") == "a=<masked>; b=<masked>"
    assert redact("Set-Cookie", "id=42; Path=/; HttpOnly") == "id=<masked>; Path=/; HttpOnly"
    assert redact("Accept", "*/*") == "*/*"
    assert shown_headers([("Cookie", "s=1"), ("X-A", "b")]) == [
        ["Cookie", "s=<masked>"],
        ["X-A", "b"],
    ]


@given(st.text(min_size=1), st.text(alphabet=st.characters(exclude_characters=";="), min_size=1))
def test_no_secret_header_value_survives(secret: str, value: str) -> None:
    for name in ("Authorization", "Proxy-Authorization"):
        assert redact(name, f"Bearer {secret}") == "Bearer <redacted>"
        assert redact(name, secret) in ("<redacted>", f"{secret.partition(' ')[0]} <redacted>")
    for name in ("X-Amz-Security-Token", "X-Proxy-Token"):
        assert redact(name, secret) == redact(name, f"Bearer {secret}") == "<redacted>"
    assert redact("Cookie", f"id={value}; b={value}") == "id=<masked>; b=<masked>"
    assert redact("Set-Cookie", f"id={value}; Path=/") == "id=<masked>; Path=/"


def test_scrub_replaces_the_token_anywhere() -> None:
    data = {"path": "/x?t=tok-123", "nested": [["h", "a tok-123 b"]], "n": 1}
    assert scrub(data, "tok-123") == {
        "path": "/x?t=<redacted>",
        "nested": [["h", "a <redacted> b"]],
        "n": 1,
    }
    assert scrub(data, None) is data


def test_bodies_as_shown() -> None:
    assert body_view(b"", 0, None) == {"size": 0, "truncated": False, "kind": "none"}
    assert body_view(b'{"a":1}', 7, "application/json")["text"] == '{\n  "a": 1\n}'
    assert body_view(b'{"a":1}', 7, None)["kind"] == "json"  # it looks like JSON, and is
    assert body_view(b"{not json", 9, "application/json")["kind"] == "text"
    assert body_view(b"caf\xc3\xa9", 5, "text/plain")["text"] == "café"
    assert body_view(b"\x89PNG\r\n\x1a\n\x00", 9, "image/png") == {
        "size": 9,
        "truncated": False,
        "kind": "binary",
    }
    cut = body_view('{"é": 1'.encode()[:3], 100, "application/json")
    assert cut == {"size": 100, "truncated": True, "kind": "text", "text": '{"'}


def test_the_row() -> None:
    entry = recorded(Inspector(1), "POST", "/fn/a?b=1", answer=b"ok")
    entry.exchange.status, entry.exchange.route = 201, "/fn"
    row = summary(entry)
    assert {k: row[k] for k in ("method", "path", "route", "status", "bytes", "duration_ms")} == {
        "method": "POST",
        "path": "/fn/a?b=1",
        "route": "/fn",
        "status": 201,
        "bytes": 2,
        "duration_ms": 12.3,
    }


def test_curl_lines() -> None:
    inspector = Inspector(5)
    headers = [
        ("Host", "localhost:8080"),
        ("Accept", "*/*"),
        ("X-Empty", ""),
        ("Authorization", "Bearer secret"),
        ("Cookie", "a=1"),
        ("Content-Length", "11"),
        ("X-Quote", "it's"),
    ]
    post = recorded(inspector, "POST", "/fn/a?x=1&y=2", headers, b"{'a': \"b\"}\n")
    assert curl(post, with_token=False) == (
        "curl 'http://localhost:8080/fn/a?x=1&y=2' -H 'Accept: */*' -H 'X-Empty;' "
        "-H 'X-Quote: it'\"'\"'s' --data-binary '{'\"'\"'a'\"'\"': \"b\"}\n'"
    )
    get = recorded(inspector, "GET", "/fn/b", [("Host", "127.0.0.1:9")])
    assert curl(get, with_token=True) == (
        'curl http://127.0.0.1:9/fn/b -H "X-Proxy-Token: $LAMBDA_URL_PROXY_ACCESS_TOKEN"'
    )
    assert curl(recorded(inspector, "HEAD", "/h"), False) == "curl --head http://127.0.0.1/h"
    assert curl(recorded(inspector, "DELETE", "/d"), False) == "curl -X DELETE http://127.0.0.1/d"
    binary = recorded(inspector, "PUT", "/p", body=b"\x00\x01")
    assert curl(binary, False) == "curl -X PUT http://127.0.0.1/p --data-binary @body.bin"


def test_a_curl_line_is_one_shell_command_that_sends_the_body_as_it_came() -> None:
    """The shell gives curl the exact bytes: checked with a shell, without a network."""
    body = 'line one\nit\'s "quoted" $HOME `x` \\ end'
    entry = recorded(Inspector(1), "POST", "/fn", [("Host", "h")], body.encode())
    line = curl(entry, with_token=False)
    argv = subprocess.run(
        ["bash", "-c", 'printf "%s\\0" "$@"', "--", *shlex.split(line)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")[:-1]
    shown = subprocess.run(
        ["bash", "-c", line.replace("curl", 'printf "%s\\0"', 1)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")[:-1]
    assert shown == argv[1:]
    assert shown[-2:] == ["--data-binary", body]


def test_a_refusal_is_explained_with_the_code_of_its_diagnosis_header() -> None:
    """A refusal the proxy reviewed (proxy/review.py) carries `X-Proxy-Diagnosis: <code>` and
    its explanation is the access line's: the page shows both; without the header, the upstream
    error type's hint."""
    inspector = Inspector(2)
    entry = recorded(inspector, answer=b"{}")
    entry.exchange.status, entry.exchange.error_type = 403, "InvalidSignatureException"
    assert "check the clock" in str(detail(entry, None)["diagnosis"])
    entry.capture.response_lines = (
        b"Content-Type: application/json\r\nX-Proxy-Diagnosis: clock_skew\r\n"
    )
    entry.exchange.hint = "your clock is 7 min behind"
    shown = detail(entry, None)
    assert shown["diagnosis"] == "clock_skew: your clock is 7 min behind"
    assert ["X-Proxy-Diagnosis", "clock_skew"] in shown["response_headers"]

"""InvokeWithResponseStream decoded: event-stream bytes, fed in any pieces, become one head, the
body chunks as the function wrote them, and the end (sources in proxy/lambda_stream.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import FunctionError, UpstreamUnreachable
from proxy.lambda_stream import (
    HTTP_INTEGRATION,
    MAX_PRELUDE,
    End,
    Head,
    InvokeStreamDecoder,
    Part,
    PreludeDecoder,
)
from tests import eventstream
from tests.fake_lambda_api import Streamed, http_stream

PRELUDE = b'{"statusCode": 201, "headers": {"x-a": "1"}, "cookies": ["c=1", "d=2"]}'
HEAD = Head(201, (("x-a", "1"), ("set-cookie", "c=1"), ("set-cookie", "d=2")))


def framed(*chunks: bytes, error: tuple[str, str] | None = None) -> bytes:
    """What the Lambda API sends: a PayloadChunk per chunk, then InvokeComplete."""
    end = eventstream.invoke_complete(*error) if error else eventstream.invoke_complete()
    return b"".join(eventstream.payload_chunk(chunk) for chunk in chunks) + end


def written(streamed: Streamed) -> list[bytes]:
    assert isinstance(streamed.chunks, list)
    return streamed.chunks


def decode(data: bytes, content_type: str | None = HTTP_INTEGRATION, piece: int = 0) -> list[Part]:
    decoder = InvokeStreamDecoder(content_type)
    step = piece or len(data)
    parts: list[Part] = []
    for start in range(0, len(data), step):
        parts.extend(decoder.feed(data[start : start + step]))
    return parts


def joined(parts: list[Part]) -> tuple[Head, bytes, End]:
    """The head, all the body, the end; and each in its place."""
    head, *body, end = parts
    assert isinstance(head, Head) and isinstance(end, End)
    assert all(isinstance(chunk, bytes) for chunk in body)
    return head, b"".join(chunk for chunk in body if isinstance(chunk, bytes)), end


# --- The prelude -------------------------------------------------------------------------------


def test_the_prelude_gives_the_head_and_the_rest_is_body() -> None:
    decoder = PreludeDecoder()

    assert decoder.feed(PRELUDE + b"\0" * 8 + b"body") == (HEAD, b"body")
    assert decoder.feed(b"more") == (None, b"more")


@pytest.mark.parametrize("cut", range(1, len(PRELUDE) + 8 + 4))
def test_the_prelude_may_be_split_anywhere(cut: int) -> None:
    stream = PRELUDE + b"\0" * 8 + b"body"
    decoder = PreludeDecoder()

    first_head, first_body = decoder.feed(stream[:cut])
    second_head, second_body = decoder.feed(stream[cut:])

    assert [h for h in (first_head, second_head) if h] == [HEAD]
    assert first_body + second_body == b"body"


def test_a_prelude_without_status_is_200() -> None:
    assert PreludeDecoder().feed(b'{"headers": {}}' + b"\0" * 8) == (Head(200, ()), b"")


def test_nul_bytes_in_the_body_are_body() -> None:
    decoder = PreludeDecoder()

    assert decoder.feed(b"{}" + b"\0" * 8 + b"\0" * 20) == (Head(200, ()), b"\0" * 20)


def test_a_prelude_that_never_ends_is_refused_past_16_kib() -> None:
    decoder = PreludeDecoder()
    start = b'{"headers": {"x": "'
    assert decoder.feed(start + b"a" * (MAX_PRELUDE - len(start))) == (None, b"")

    with pytest.raises(FunctionError, match="did not end"):
        decoder.feed(b"a")


@pytest.mark.parametrize(
    "prelude",
    [b"not json", b"[1]", b'{"statusCode": "x"}', b'{"headers": {"a": "b\\r\\nc: d"}}'],
)
def test_a_prelude_that_is_no_http_head_is_a_function_error(prelude: bytes) -> None:
    with pytest.raises(FunctionError) as raised:
        PreludeDecoder().feed(prelude + b"\0" * 8)

    assert raised.value.status == 502


# --- The event stream --------------------------------------------------------------------------


def test_a_streamed_http_answer_decodes_to_head_body_and_end() -> None:
    streamed = http_stream(201, [b"first ", b"second"], {"x-a": "1"}, ["c=1", "d=2"])
    data = framed(*written(streamed))

    assert decode(data) == [HEAD, b"first ", b"second", End()]


def test_chunks_come_out_as_they_come_in() -> None:
    decoder = InvokeStreamDecoder(HTTP_INTEGRATION)

    assert decoder.feed(eventstream.payload_chunk(PRELUDE)) == []
    assert decoder.feed(eventstream.payload_chunk(b"\0" * 8)) == [HEAD]
    assert decoder.feed(eventstream.payload_chunk(b"one")) == [b"one"]
    partial = eventstream.payload_chunk(b"two")
    assert decoder.feed(partial[:10]) == []  # a frame not yet whole
    assert decoder.feed(partial[10:]) == [b"two"]
    assert decoder.feed(eventstream.invoke_complete()) == [End()]
    assert decoder.ended


def test_another_content_type_is_200_with_it_and_the_bytes_as_body() -> None:
    parts = decode(framed(b"a", b"b"), "text/plain")

    assert parts == [Head(200, (("content-type", "text/plain"),)), b"a", b"b", End()]


def test_an_empty_stream_still_has_a_head() -> None:
    assert decode(framed(), HTTP_INTEGRATION) == [Head(200, ()), End()]
    assert decode(framed(), "application/octet-stream") == [
        Head(200, (("content-type", "application/octet-stream"),)),
        End(),
    ]
    assert decode(framed(), None) == [Head(200, ()), End()]


def test_a_function_error_before_the_head_is_a_502() -> None:
    details = json.dumps({"errorType": "RuntimeError", "errorMessage": "boom"})

    with pytest.raises(FunctionError) as raised:
        decode(framed(PRELUDE, error=("Unhandled", details)))

    assert raised.value.status == 502
    assert "boom" in raised.value.detail
    assert "boom" not in raised.value.message


def test_a_function_error_after_the_head_ends_the_stream_failed() -> None:
    parts = decode(framed(PRELUDE, b"\0" * 8, b"part", error=("Unhandled", "boom")))

    assert parts[:2] == [HEAD, b"part"]
    end = parts[-1]
    assert isinstance(end, End) and end.failed
    assert (end.error_code, end.error_details) == ("Unhandled", "boom")


def test_a_stream_ending_inside_its_prelude_is_a_function_error() -> None:
    with pytest.raises(FunctionError, match="ended without its 8 NUL bytes"):
        decode(framed(PRELUDE))


def test_a_service_error_message_mid_stream_ends_it_failed() -> None:
    error = eventstream.message(
        [(":message-type", "error"), (":error-code", "ServiceException")], b"internal"
    )
    data = b"".join(eventstream.payload_chunk(c) for c in (PRELUDE, b"\0" * 8, b"x")) + error

    assert decode(data)[-1] == End("ServiceException", "internal")


def test_unknown_events_are_passed_over_and_nothing_follows_the_end() -> None:
    unknown = eventstream.event("SomethingNew", b"{}", "application/json")
    data = (
        eventstream.payload_chunk(PRELUDE + b"\0" * 8)
        + unknown
        + eventstream.invoke_complete()
        + eventstream.payload_chunk(b"late")
    )

    assert decode(data) == [Head(HEAD.status, HEAD.headers), End()]


def test_a_corrupt_frame_is_a_malformed_upstream_answer() -> None:
    data = bytearray(framed(b"abc"))
    data[20] ^= 0xFF

    with pytest.raises(UpstreamUnreachable, match="malformed"):
        decode(bytes(data))


safe_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(
    st.integers(100, 599),
    st.dictionaries(st.text("abcdefgxyz-", min_size=1, max_size=10), safe_text, max_size=4),
    st.lists(safe_text, max_size=3),
    st.lists(st.binary(max_size=50), max_size=6),
    st.integers(1, 97),
)
def test_any_streamed_answer_fed_in_any_pieces_is_the_answer(
    status: int, headers: dict[str, str], cookies: list[str], body: list[bytes], piece: int
) -> None:
    streamed = http_stream(status, body, headers, cookies)
    data = framed(*written(streamed))

    head, received, end = joined(decode(data, piece=piece))

    assert head == Head(status, (*headers.items(), *(("set-cookie", cookie) for cookie in cookies)))
    assert received == b"".join(body)
    assert end == End()

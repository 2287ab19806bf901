"""The fake's event-stream encoder writes what botocore's own decoder reads, CRCs included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from tests import eventstream

# Header names are short ASCII in every AWS stream; values any text that fits a uint16 length.
names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
values = st.text(max_size=200)


def decode(data: bytes, piece: int | None = None) -> list[Any]:
    """botocore's incremental decoder, fed `piece` bytes at a time (all at once by default).
    Its messages are Any: botocore-stubs types their headers as an int."""
    buffer = EventStreamBuffer()
    messages: list[Any] = []
    step = piece or len(data) or 1
    for start in range(0, len(data), step):
        buffer.add_data(data[start : start + step])
        messages.extend(buffer)
    return messages


def test_a_message_is_what_botocore_decodes() -> None:
    data = eventstream.message([(":event-type", "PayloadChunk"), ("x", "é")], b"\0payload\xff")
    [decoded] = decode(data)
    assert decoded.headers == {":event-type": "PayloadChunk", "x": "é"}
    assert decoded.payload == b"\0payload\xff"
    assert decoded.prelude.total_length == len(data)


@pytest.mark.slow
@given(
    st.lists(st.tuples(st.dictionaries(names, values, max_size=5), st.binary(max_size=300))),
    st.integers(min_value=1, max_value=64),
)
def test_any_messages_in_any_pieces_round_trip(
    sent: list[tuple[dict[str, str], bytes]], piece: int
) -> None:
    data = b"".join(eventstream.message(headers.items(), payload) for headers, payload in sent)
    decoded = decode(data, piece)
    assert [(m.headers, m.payload) for m in decoded] == sent


def test_the_message_crc_covers_the_payload() -> None:
    data = bytearray(eventstream.payload_chunk(b"hello"))
    data[-6] ^= 0x01  # a bit of the payload, which ends just before the 4-byte CRC
    with pytest.raises(ChecksumMismatch):
        decode(bytes(data))


def test_the_prelude_crc_covers_the_lengths() -> None:
    data = bytearray(eventstream.payload_chunk(b"hello"))
    data[7] ^= 0x01  # the headers length
    with pytest.raises(ChecksumMismatch):
        decode(bytes(data))


def test_lambdas_events_carry_their_types() -> None:
    chunk, complete = decode(
        eventstream.payload_chunk(b"data") + eventstream.invoke_complete("Unhandled", "boom")
    )
    assert chunk.headers == {
        ":event-type": "PayloadChunk",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert complete.headers[":event-type"] == "InvokeComplete"
    assert json.loads(complete.payload) == {
        "ErrorCode": "Unhandled",
        "ErrorDetails": "boom",
        "LogResult": "",
    }


def test_a_header_too_long_for_its_length_field_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        eventstream.header("x" * 256, "v")
    with pytest.raises(ValueError, match="too long"):
        eventstream.header("x", "v" * 65536)

"""An encoder for `application/vnd.amazon.eventstream`, the framing of InvokeWithResponseStream's
answer, for the fake Lambda API. botocore ships only the decoder (`botocore.eventstream`), which
tests/test_eventstream.py runs on everything this writes.

A message (the framing of every AWS event stream: botocore/eventstream.py, and S3's
https://docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html):

    total length (uint32) | headers length (uint32) | prelude CRC32 (of the 8 bytes before it)
    headers | payload | message CRC32 (of every byte before it)

and a header: name length (uint8) | name | value type (uint8) | value. Lambda's events use only
string values (type 7: uint16 length, then UTF-8), so only those are written.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from typing import Final

STRING: Final = 7
PRELUDE_LENGTH: Final = 12  # the two lengths and the prelude's CRC
CRC_LENGTH: Final = 4


def header(name: str, value: str) -> bytes:
    encoded_name, encoded_value = name.encode(), value.encode()
    if len(encoded_name) > 0xFF or len(encoded_value) > 0xFFFF:
        raise ValueError(f"header {name!r} is too long for the event-stream encoding")
    return (
        struct.pack("!B", len(encoded_name))
        + encoded_name
        + struct.pack("!BH", STRING, len(encoded_value))
        + encoded_value
    )


def message(headers: Iterable[tuple[str, str]], payload: bytes) -> bytes:
    """One framed message: prelude, headers, payload, CRCs."""
    encoded_headers = b"".join(header(name, value) for name, value in headers)
    total = PRELUDE_LENGTH + len(encoded_headers) + len(payload) + CRC_LENGTH
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    framed = prelude + encoded_headers + payload
    return framed + struct.pack("!I", zlib.crc32(framed))


def event(event_type: str, payload: bytes, content_type: str) -> bytes:
    return message(
        [
            (":event-type", event_type),
            (":content-type", content_type),
            (":message-type", "event"),
        ],
        payload,
    )


def payload_chunk(data: bytes) -> bytes:
    """InvokeWithResponseStream's `PayloadChunk` event: the function's bytes, unchanged."""
    return event("PayloadChunk", data, "application/octet-stream")


def invoke_complete(
    error_code: str | None = None, error_details: str | None = None, log_result: str = ""
) -> bytes:
    """`InvokeComplete`, the last event: its fields as the service model names them."""
    fields = {"LogResult": log_result}
    if error_code is not None:
        fields["ErrorCode"] = error_code
    if error_details is not None:
        fields["ErrorDetails"] = error_details
    return event("InvokeComplete", json.dumps(fields).encode(), "application/json")

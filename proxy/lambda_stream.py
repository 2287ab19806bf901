"""InvokeWithResponseStream's answer, decoded incrementally and without I/O: event-stream bytes
in, the HTTP head and body chunks a Function URL in RESPONSE_STREAM mode would send out.

Two layers:
- the framing, `application/vnd.amazon.eventstream`, decoded by botocore's own parser
  (botocore.eventstream.EventStreamBuffer): PayloadChunk events carry the function's bytes,
  InvokeComplete ends the stream, with ErrorCode/ErrorDetails if the function failed (the
  service model, botocore/data/lambda/2015-03-31/service-2.json);
- the function's bytes: when it answered through `awslambda.HttpResponseStream.from` (the
  stream's content type is then `application/vnd.awslambda.http-integration-response`), a JSON
  prelude {statusCode, headers, cookies}, 8 NUL bytes, then the body
  (aws-lambda-nodejs-runtime-interface-client, src/HttpResponseStream.js: "Write 8 null bytes
  after the JSON prelude"; https://docs.aws.amazon.com/apigateway/latest/developerguide/
  response-transfer-mode-lambda.html: the metadata, "followed by 8 null bytes", within the
  first 16 KB). Any other content type: status 200, that content type, the bytes as the body
  (https://docs.aws.amazon.com/lambda/latest/dg/configuration-response-streaming.html).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from botocore.eventstream import EventStreamBuffer, ParserError

from proxy.errors import FunctionError, UpstreamUnreachable
from proxy.lambda_event import head_lines, status_of

HTTP_INTEGRATION: Final = "application/vnd.awslambda.http-integration-response"
DELIMITER: Final = b"\0" * 8
MAX_PRELUDE: Final = 16 * 1024
WHERE: Final = "the function's stream prelude"


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class End:
    """InvokeComplete: the stream is over; with an error code if the function failed."""

    error_code: str | None = None
    error_details: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_code is not None


Part = Head | bytes | End


def head_from_prelude(prelude: bytes) -> Head:
    """The prelude `HttpResponseStream.from(stream, metadata)` wrote: JSON.stringify(metadata)."""
    try:
        metadata = json.loads(prelude)
    except ValueError:
        raise FunctionError(
            f"{WHERE} is not JSON, so it cannot be made an HTTP answer",
            f"stream prelude not JSON: {prelude[:200]!r}",
        ) from None
    if not isinstance(metadata, dict):
        raise FunctionError(f"{WHERE} is not an object", f"stream prelude: {prelude[:200]!r}")
    status = status_of(metadata.get("statusCode", 200), WHERE)
    return Head(status, head_lines(metadata.get("headers"), metadata.get("cookies"), WHERE))


class PreludeDecoder:
    """The function's bytes, chunk by chunk, to the head once its prelude is whole, then body.
    The prelude and its delimiter may be split across chunks anywhere: JSON never holds a NUL,
    so the first 8 NULs end it."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self.head: Head | None = None

    def feed(self, chunk: bytes) -> tuple[Head | None, bytes]:
        """(the head, if this chunk completed the prelude; the body bytes in this chunk)."""
        if self.head is not None:
            return None, chunk
        self._pending += chunk
        at = self._pending.find(DELIMITER)
        if at < 0:
            if len(self._pending) > MAX_PRELUDE:
                raise FunctionError(
                    f"{WHERE} did not end within {MAX_PRELUDE} bytes",
                    f"stream prelude without its 8 NUL bytes: {bytes(self._pending[:200])!r}",
                )
            return None, b""
        self.head = head_from_prelude(bytes(self._pending[:at]))
        body = bytes(self._pending[at + len(DELIMITER) :])
        self._pending.clear()
        return self.head, body

    def finish(self) -> Head:
        """The stream ended: a function that wrote nothing never wrote its prelude either."""
        if self.head is not None:
            return self.head
        if self._pending:
            raise FunctionError(
                f"{WHERE} ended without its 8 NUL bytes",
                f"stream prelude without its 8 NUL bytes: {bytes(self._pending[:200])!r}",
            )
        self.head = Head(200, ())
        return self.head


class InvokeStreamDecoder:
    """The HTTP body of an InvokeWithResponseStream answer, fed as it arrives, to Parts: one
    Head before any body bytes, body chunks as the function wrote them, then End.

    `content_type` is the answer's Content-Type (the model's ResponseStreamContentType). A
    function error before the head is FunctionError (502: nothing reached the client yet);
    after it, an End that `failed` (the client's answer must then be cut off)."""

    def __init__(self, content_type: str | None) -> None:
        self._frames = EventStreamBuffer()
        media_type = (content_type or "").split(";")[0].strip().lower()
        self._prelude = PreludeDecoder() if media_type == HTTP_INTEGRATION else None
        self._default = Head(200, (("content-type", content_type),) if content_type else ())
        self.head: Head | None = None
        self.ended = False

    def feed(self, data: bytes) -> list[Part]:
        self._frames.add_data(data)
        parts: list[Part] = []
        try:
            for message in self._frames:
                # Any: botocore-stubs types a message's headers as an int; they are a dict.
                headers: Any = message.headers
                parts.extend(self._event(headers, message.payload))
        except ParserError as error:
            raise UpstreamUnreachable(
                f"the Lambda API's event stream is malformed ({type(error).__name__}: {error})"
            ) from None
        return parts

    def _event(self, headers: dict[str, Any], payload: bytes) -> list[Part]:
        if self.ended:
            return []
        kind = headers.get(":message-type")
        if kind in ("error", "exception"):  # the service's own failure, mid-stream
            code = headers.get(":error-code") or headers.get(":exception-type") or "error"
            return self._end(End(str(code), payload.decode("utf-8", "replace")))
        event = headers.get(":event-type")
        if event == "PayloadChunk":
            return self._chunk(payload)
        if event == "InvokeComplete":
            fields = _fields(payload)
            code = fields.get("ErrorCode")
            details = fields.get("ErrorDetails")
            return self._end(End(code and str(code), details and str(details)))
        return []  # an event this version does not know: nothing for the client

    def _chunk(self, payload: bytes) -> list[Part]:
        if self._prelude is None:
            return [*self._start(self._default), payload] if payload else []
        head, body = self._prelude.feed(payload)
        parts: list[Part] = [*self._start(head)] if head is not None else []
        if body:
            parts.append(body)
        return parts

    def _start(self, head: Head) -> list[Part]:
        if self.head is not None:
            return []
        self.head = head
        return [head]

    def _end(self, end: End) -> list[Part]:
        self.ended = True
        if end.failed and self.head is None:
            raise FunctionError(
                f"the function failed ({end.error_code}); its error is in the proxy's log",
                f"function error {end.error_code}: {end.error_details}",
            )
        head = self._prelude.finish() if self._prelude is not None else self._default
        return [*self._start(head), end]


def _fields(payload: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}

"""Requests to a function without a Function URL (issue #14): invoked through the Lambda API with
the event a Function URL would have built, and answered as a Function URL answers.

    BUFFERED         POST /2015-03-31/functions/{name}/invocations (Invoke): the result mapped
                     by lambda_event.answer_from_result, written in one piece
    RESPONSE_STREAM  POST /2021-11-15/functions/{name}/response-streaming-invocations
                     (InvokeWithResponseStream): the event stream decoded by
                     lambda_stream.InvokeStreamDecoder, each chunk passed on as it arrives

The call goes through the proxy's own upstream client and signer, as a forwarded request does:
the Lambda API is the route's Upstream, with `invoke` set (proxy/functions.py). The Lambda API's
refusals become the proxy's errors, each saying how to fix it; a function's failure is 502
function_error, with its errorType and errorMessage in the access log line only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from proxy import __version__, downstream
from proxy.cors import CorsPolicy
from proxy.deadline import Deadline
from proxy.errors import (
    BodyTooLarge,
    FunctionAccessDenied,
    FunctionNotFound,
    FunctionThrottled,
    InvokeFailed,
    ProxyError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.exchange import Exchange
from proxy.functions import Invoke
from proxy.headers import DROPPED_REQUEST
from proxy.lambda_event import Caller, HttpRequest, answer_from_result, build_event
from proxy.lambda_stream import End, InvokeStreamDecoder
from proxy.lambda_stream import Head as FunctionHead
from proxy.routing import Upstream
from proxy.signing import AmzClock, Credentials
from proxy.trace import Signed
from proxy.trace_id import HEADER as TRACE_HEADER
from proxy.trace_id import trace_header
from proxy.upstream import Head, UpstreamClient, Wire
from proxy.upstream_errors import ConnectFailed, Malformed, UpstreamBroken
from proxy.wire import NO_BODY_STATUSES, request_head

log: Final = logging.getLogger("proxy.trace")  # --log-level debug, as forwarding's trace

INVOKE_ACTION: Final = "lambda:InvokeFunction"
# Lambda's synchronous answer is at most 6 MB (the Invoke quota), its refusals a few hundred
# bytes: an endpoint sending more is not Lambda, and is not buffered.
MAX_RESULT: Final = 6 * 1024 * 1024 + 64 * 1024
MAX_REFUSAL: Final = 64 * 1024
# The client's headers reach the function as a Function URL passes them; the rest of what
# forwarding drops (proxy/headers.py) is dropped here too.
DROPPED_PREFIXES: Final = ("x-amz-", "x-forwarded-")
API_HEADERS: Final = (
    f"Content-Type: application/json\r\nUser-Agent: lambda-url-proxy/{__version__}\r\n".encode()
)
RETRY_DELAY: Final = 0.2
# RFC 9562 section 5.4: version 4 in bits 76-79, variant 0b10 in bits 62-63.
UUID_V4: Final = 0x4 << 76 | 0x2 << 62
UUID_KEPT: Final = ~(0xF << 76 | 0x3 << 62)
AMZ_CLOCK: Final = AmzClock()
FUNCTION_ERROR: Final = b"x-amz-function-error"
CONTENT_TYPE: Final = b"content-type"
# The Lambda API's refusals of the caller itself (the signature, the keys), all 403.
SIGNATURE_REFUSED: Final = frozenset(
    {
        "InvalidSignatureException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "IncompleteSignatureException",
    }
)


async def invoke(
    request: web.BaseRequest,
    client: UpstreamClient,
    upstream: Upstream,
    path: str,
    query: str,
    body: bytes,
    exchange: Exchange,
    cors: CorsPolicy,
    task: asyncio.Task[Any],
) -> web.StreamResponse:
    """proxy/forward.py's `forward`, for a route whose `upstream.invoke` is set (same
    arguments: app.py picks one of the two once per request). The route's timeout covers the
    whole exchange, streaming included."""
    plan = upstream.invoke
    assert plan is not None
    credentials = upstream.identity.current()
    deadline = Deadline(task, upstream.timeout)
    exchange.trace_id = trace_header(request.headers)[0]  # in the event, and to Lambda
    wire: Wire | None = None
    try:
        event = _event(request, upstream, credentials, path, body, exchange.trace_id)
        if client.debug:
            query = f"?{plan.query}" if plan.query else ""
            log.debug(
                "%s %s matched route %s -> %s: POST %s%s%s (event of %d bytes)",
                request.method, path, upstream.prefix, _named(upstream), plan.upstream.url,
                plan.path, query, len(event),
            )  # fmt: skip
        wire, head = await _call(client, plan, credentials, event, exchange)
        exchange.request_id = head.request_id
        exchange.error_type = head.error_type
        if head.status != 200:
            raise _refused(upstream, head, await _read(wire, MAX_REFUSAL), len(event))
        if plan.streaming:
            return await _streamed(request, wire, head, cors, exchange)
        return _buffered(request, head, await _read(wire, MAX_RESULT), cors, exchange)
    except asyncio.CancelledError:
        if not deadline.reached():
            raise
        if exchange.status == 0:
            raise UpstreamTimeout(
                f"route {upstream.prefix!r}: {_named(upstream)} did not answer within "
                f"{upstream.timeout:g} s; raise the route's timeout if the function needs longer"
            ) from None
        return downstream.abort(request, exchange, "TimeoutError")  # the head went out
    finally:
        deadline.cancel()
        if wire is not None:
            client.release(wire)  # kept for the next invoke only if the answer was all read


# --- The event ------------------------------------------------------------------------------


def _event(
    request: web.BaseRequest,
    upstream: Upstream,
    credentials: Credentials,
    path: str,
    body: bytes,
    trace_id: str,
) -> bytes:
    """The payload format 2.0 event, as JSON: the path and query as the client sent them (the
    route's prefix taken off with strip_prefix), the headers it sent that forwarding passes on,
    and the X-Amzn-Trace-Id the proxy made if the client sent none (as a Function URL's has)."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    version = request.version
    http = HttpRequest(
        request.method,
        _event_path(upstream, raw_path, path),
        raw_query,
        _headers(request, len(body), trace_id),
        body,
        request.remote or "",
        f"HTTP/{version.major}.{version.minor}",
    )
    identity = upstream.identity
    function = upstream.function.function if upstream.function is not None else ""
    event = build_event(
        http,
        request_id=_request_id(),
        now=time.time(),
        domain_name=request.host,
        account_id=_account(function) or identity.account_id or "",
        caller=Caller(credentials.access_key, identity.account_id),
    )
    return json.dumps(event, separators=(",", ":")).encode()


def _request_id() -> str:
    """A version 4 UUID, as requestContext.requestId: unique, not secret, so from `random`
    rather than uuid4's os.urandom (a system call: 2 % of an invoke's CPU, bench)."""
    bits = random.getrandbits(128) & UUID_KEPT | UUID_V4
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _event_path(upstream: Upstream, raw_path: str, path: str) -> str:
    """rawPath: the path as sent, less the route's prefix if it is stripped. The prefix matched
    the canonical path; a raw path that spells it otherwise gets the canonical one."""
    prefix = upstream.prefix
    if not upstream.strip_prefix or prefix == "/":
        return raw_path
    if raw_path.startswith(prefix) and raw_path[len(prefix) : len(prefix) + 1] in ("", "/"):
        return raw_path[len(prefix) :] or "/"
    return path[len(prefix) :] or "/"


def _headers(request: web.BaseRequest, length: int, trace_id: str) -> list[tuple[str, str]]:
    """The client's headers, in order, repeats kept, less those forwarding drops (hop-by-hop,
    Host, its own credentials, X-Forwarded-*: build_event sets the Function URL's own)."""
    named = {
        token.strip().lower()
        for value in request.headers.getall("Connection", ())
        for token in value.split(",")
    }
    kept = [
        (name, value)
        for name, value in request.headers.items()
        if (lower := name.lower()) not in DROPPED_REQUEST
        and lower not in named
        and not lower.startswith(DROPPED_PREFIXES)
    ]
    if length:
        kept.append(("content-length", str(length)))  # as the URL's front end passes it
    if TRACE_HEADER not in request.headers:  # the proxy made it
        kept.append((TRACE_HEADER.lower(), trace_id))
    return kept


def _account(function: str) -> str | None:
    """The account in a function's ARN or partial ARN (`123456789012:function:my-fn`)."""
    parts = function.split(":")
    if function.startswith("arn:") and len(parts) > 4:
        return parts[4]
    if len(parts) > 2 and parts[0].isdigit() and parts[1] == "function":
        return parts[0]
    return None


# --- The call -------------------------------------------------------------------------------


async def _call(
    client: UpstreamClient, plan: Invoke, credentials: Credentials, event: bytes, exchange: Exchange
) -> tuple[Wire, Head]:
    """POST the event, signed for the Lambda API; the answer's head. A connection that could
    not be made is tried once more, signed afresh: nothing was sent, so nothing is sent twice.
    The trace id goes with it, unsigned, as the X-Ray SDKs send it with their Invoke calls, for
    the invocation to join the trace (untested against AWS: there is no X-Ray here). The
    inspector's steps (a page watches) note what was signed and when."""
    steps, trace_id = exchange.steps, exchange.trace_id
    api = plan.upstream
    lines = API_HEADERS + f"{TRACE_HEADER}: {trace_id}\r\n".encode("latin-1", "replace")
    payload_hash = hashlib.sha256(event).hexdigest()
    for attempt in (1, 2):
        timestamp = AMZ_CLOCK()
        head = request_head(
            "POST", api, plan.path, plan.query, lines, len(event), payload_hash,
            credentials, timestamp,
        )  # fmt: skip
        if steps is not None:
            steps.signed(
                Signed("POST", api, plan.path, plan.query, payload_hash, credentials, timestamp)
            )
        try:
            wire = client.pooled(api) or await client.connect(api)
            if steps is not None:
                steps.connected = time.perf_counter()
        except ConnectFailed as error:
            if attempt == 2 or error.tls:
                raise _unreachable(api, error) from None
            client.retried("connect")
            await asyncio.sleep(RETRY_DELAY)
            continue
        try:
            wire.send(head, event)
            answer = await wire.head()
            if steps is not None:
                steps.first_byte = time.perf_counter()
            return wire, answer
        except (ConnectionError, OSError, Malformed) as error:
            wire.close()
            raise _unreachable(api, error) from None  # bytes may have gone out: no retry
        except BaseException:
            wire.close()  # cancelled: the answer will not be read
            raise
    raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


async def _read(wire: Wire, limit: int) -> bytes:
    """The whole body of the Lambda API's answer, refused past `limit` bytes."""
    try:
        parts = wire.take()
        size = sum(map(len, parts))
        while not wire.done:
            more = await wire.more()
            if not more:
                break
            parts += more
            size += sum(map(len, more))
            if size > limit:
                raise UpstreamUnreachable(
                    f"the Lambda API at {wire_origin(wire)} sent an answer over {limit} bytes, "
                    "more than Lambda ever answers an Invoke"
                )
    except (ConnectionError, OSError, Malformed) as error:
        raise UpstreamUnreachable(
            f"the Lambda API at {wire_origin(wire)} broke off its answer ({error})"
        ) from None
    return b"".join(parts)


def wire_origin(wire: Wire) -> str:
    scheme, host, port, _ = wire.origin or ("http", "?", 0, None)
    return f"{scheme}://{host}:{port}"


def _unreachable(api: Upstream, error: BaseException) -> UpstreamUnreachable:
    if isinstance(error, ConnectFailed) and error.tls:
        reason = f"TLS verification failed ({error}); for a private CA, set ca_bundle"
    elif isinstance(error, ConnectFailed):
        cause = error.cause
        reason = f"cannot connect ({cause.strerror if isinstance(cause, OSError) else cause})"
    else:
        reason = f"{type(error).__name__}: {error}"
    return UpstreamUnreachable(
        f"route {api.prefix!r}: the Lambda API at {api.url} is unreachable to invoke "
        f"{_named(api)}: {reason}; check AWS_ENDPOINT_URL_LAMBDA / AWS_ENDPOINT_URL if set"
    )


def _named(upstream: Upstream) -> str:
    return upstream.function.named if upstream.function is not None else "the function"


def _refused(upstream: Upstream, head: Head, body: bytes, event_size: int) -> ProxyError:
    """The Lambda API's refusal of an Invoke, as the proxy's error saying how to fix it
    (the errors of Invoke and InvokeWithResponseStream in botocore's service model)."""
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        fields = {}
    said = str(
        fields.get("Message") or fields.get("message") or body[:200].decode("utf-8", "replace")
    )
    # x-amzn-ErrorType may carry a URL after a colon ("AccessDeniedException:http://...").
    code = (head.error_type or "").partition(":")[0] or f"HTTP {head.status}"
    named, identity = _named(upstream), upstream.identity
    if code == "AccessDeniedException":
        return FunctionAccessDenied(
            f"identity {identity.describe()} may not call {INVOKE_ACTION} on {named} (AWS: "
            f"{said}); allow {INVOKE_ACTION} on the function for this identity"
        )
    if code in SIGNATURE_REFUSED:
        return FunctionAccessDenied(
            f"the Lambda API at {upstream.url} refused identity {identity.describe()} invoking "
            f"{named} ({code}: {said}); check its keys, its session token's expiry and the "
            "clock"
        )
    if code == "ResourceNotFoundException":
        if upstream.function is not None:
            upstream.function.look_again()  # deleted, or perhaps given a URL meanwhile
        return FunctionNotFound(
            f"{named} does not exist at {upstream.url} (AWS: {said}); check the name, the "
            "qualifier and the route's region"
        )
    if code == "TooManyRequestsException" or head.status == 429:
        reason = fields.get("Reason") or fields.get("reason")
        throttled = FunctionThrottled(
            f"Lambda throttled invoking {named} ({reason or code}: {said}); retry after a "
            "moment, or raise the function's reserved concurrency"
        )
        retry_after = _header(head, b"retry-after")
        if retry_after is not None and retry_after.isdigit():  # passed on as Lambda said it
            throttled.retry_after = retry_after
        return throttled
    if code == "RequestTooLargeException" or head.status == 413:
        return BodyTooLarge(
            f"the event for this request is {event_size} bytes, over Lambda's 6 MB limit on "
            f"an Invoke payload (AWS: {said}); send a smaller body (a binary body grows by a "
            "third as base64 in the event)"
        )
    hint = (
        "the function is being created or updated: retry shortly"
        if code in ("ResourceConflictException", "ResourceNotReadyException")
        else "retry shortly"
        if head.status >= 500
        else "see AWS's message"
    )
    return InvokeFailed(
        f"invoking {named} failed: the Lambda API answered {head.status} {code} ({said}); {hint}"
    )


def _header(head: Head, name: bytes) -> str | None:
    return next((v.decode("latin-1") for n, v in head.raw if n.lower() == name), None)


# --- The answer -----------------------------------------------------------------------------


def _client_head(status: int, lines: tuple[tuple[str, str], ...], request_id: str | None) -> Head:
    """The head for the client, as a Function URL's: the function's status and header lines
    (framing ones dropped by lambda_event.head_lines), and the invocation's x-amzn-RequestId."""
    raw = [(name.encode(), value.encode()) for name, value in lines]
    if request_id is not None:
        raw.append((b"x-amzn-RequestId", request_id.encode()))
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    has_date = any(name.lower() == b"date" for name, _ in raw)
    fields = [part for header in raw for part in header]
    return Head(status, reason, fields, has_date=has_date, request_id=request_id)


def _buffered(
    request: web.BaseRequest, head: Head, payload: bytes, cors: CorsPolicy, exchange: Exchange
) -> web.StreamResponse:
    """Invoke's result as the HTTP answer; FunctionError (502) for a function error."""
    answer = answer_from_result(payload, _header(head, FUNCTION_ERROR))
    exchange.status = answer.status
    bodiless = request.method == "HEAD" or answer.status in NO_BODY_STATUSES
    client_head = _client_head(answer.status, answer.headers, head.request_id)
    return downstream.whole(request, client_head, b"" if bodiless else answer.body, cors, exchange)


async def _streamed(
    request: web.BaseRequest, wire: Wire, head: Head, cors: CorsPolicy, exchange: Exchange
) -> web.StreamResponse:
    """InvokeWithResponseStream's answer, passed on as it arrives: the function's head once its
    prelude is whole, then each chunk; FunctionError (502) if it failed before its head."""
    decoder = InvokeStreamDecoder(_header(head, CONTENT_TYPE))
    body = FunctionStream(wire, decoder, exchange, request.method == "HEAD")
    first = await body.start()
    exchange.status = first.status
    client_head = _client_head(first.status, first.headers, head.request_id)
    written = await downstream.stream(request, client_head, body, cors, exchange)
    await body.drain()
    return written


class StreamFailed(ConnectionError):
    """The stream broke after the client's head went out: downstream.stream cuts the client's
    connection (never a clean end after a truncated body)."""


class FunctionStream:
    """The function's body out of the Lambda API's event stream, read as downstream.stream
    reads an upstream's Wire (downstream.Body): the Lambda API's connection is read only as
    fast as the client takes what came, so memory stays flat (Wire's bounded buffer)."""

    def __init__(
        self, wire: Wire, decoder: InvokeStreamDecoder, exchange: Exchange, drop_body: bool
    ) -> None:
        self._wire = wire
        self._decoder = decoder
        self._exchange = exchange
        self._drop_body = drop_body  # HEAD: the function ran, its body goes nowhere
        self._chunks: list[bytes] = []
        self._failure: End | None = None
        self.done = False

    async def start(self) -> FunctionHead:
        """Read until the function's head is known. Before it nothing reached the client: a
        failure is the proxy's error (FunctionError, UpstreamUnreachable)."""
        try:
            data = self._wire.take()
            while True:
                self._feed(data)
                if self._decoder.head is not None:
                    return self._decoder.head
                data = await self._wire.more()
                if not data:
                    raise UpstreamBroken("it ended before the function's answer began")
        except (ConnectionError, OSError, Malformed) as error:
            raise UpstreamUnreachable(
                f"the Lambda API's event stream from {wire_origin(self._wire)} broke off ({error})"
            ) from None

    def take(self) -> list[bytes]:
        self._feed_after_head(self._wire.take())
        return self._hand_over()

    async def more(self) -> list[bytes]:
        while True:
            chunks = self._hand_over()
            if chunks or self.done:
                return chunks
            data = await self._wire.more()
            if not data:
                raise StreamFailed("the Lambda API's event stream ended before InvokeComplete")
            self._feed_after_head(data)

    async def drain(self) -> None:
        """After InvokeComplete, the HTTP body's own end: the connection can then be kept."""
        try:
            while self.done and not self._wire.done and await self._wire.more():
                pass
        except (ConnectionError, OSError, Malformed):
            pass  # the client has its whole answer; the connection is simply not kept

    def _feed(self, data: list[bytes]) -> None:
        for piece in data:
            for part in self._decoder.feed(piece):
                if isinstance(part, bytes):
                    if not self._drop_body:
                        self._chunks.append(part)
                elif isinstance(part, End) and part.failed:
                    self._failure = part

    def _feed_after_head(self, data: list[bytes]) -> None:
        try:
            self._feed(data)
        except ProxyError as error:  # a malformed event stream, after the head went out
            self._exchange.detail = error.detail
            raise StreamFailed(error.message) from None

    def _hand_over(self) -> list[bytes]:
        chunks, self._chunks = self._chunks, []
        if chunks:
            return chunks
        failure = self._failure
        if failure is not None:  # what came before the failure went out first
            self._exchange.detail = f"function error {failure.error_code}: {failure.error_details}"
            raise StreamFailed(f"the function failed mid-stream ({failure.error_code})")
        self.done = self._decoder.ended
        return chunks

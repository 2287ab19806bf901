"""A fake AWS Lambda Function URL with auth type AWS_IAM, for the tests.

It checks every request the way AWS does (see ../shared/README.md, "Facts about the real AWS") and
recomputes each SigV4 signature with awscrt, AWS's own C signer, so that a mistake shared by the
proxy and botocore cannot make the proxy's tests pass.

Run it alone: python tests/fake_function_url.py --port 0 --key AKID:SECRET[:TOKEN]
(--host ADDRESS: another address than 127.0.0.1, such as a test's own docker bridge gateway;
--clock-offset SECONDS: AWS's clock that far ahead of this machine's, or behind if negative)

Its clock (`clock=`) is AWS's: the signature's time is checked against it and every answer's
`Date` tells it, as AWS's do.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import hmac
import json
import logging
import re
import signal
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import formatdate
from typing import TYPE_CHECKING, Final, NamedTuple, Self
from urllib.parse import parse_qs, unquote

from aiohttp import web
from awscrt.auth import (
    AwsCredentialsProvider,
    AwsSignatureType,
    AwsSignedBodyHeaderType,
    AwsSigningAlgorithm,
    AwsSigningConfig,
    aws_sign_request,
)
from awscrt.exceptions import AwsCrtError
from awscrt.http import HttpHeaders, HttpRequest

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from types import TracebackType

    from multidict import CIMultiDictProxy

log = logging.getLogger(__name__)

# AWS Lambda's request payload quota.
MAX_REQUEST_BODY: Final = 6 * 1024 * 1024
MAX_CLOCK_SKEW: Final = 5 * 60.0
ECHO_BODY_LIMIT: Final = 64 * 1024
GZIP_BODY: Final = gzip.compress(b'{"compressed": true}', mtime=0)
REDIRECT_LOCATION: Final = "https://example.com/elsewhere"
SET_COOKIES: Final = ("a=1; Path=/", "b=2; Path=/", "c=3; Path=/; HttpOnly")
FUNCTION_CORS_HEADERS: Final = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", "x-from-function"),
    ("x-from-function", "yes"),
)

SIGNATURE_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. Check your"
    " AWS Secret Access Key and signing method. Consult the service documentation for details."
)
FORBIDDEN: Final = (
    "Forbidden. For troubleshooting Function URL authorization issues, see:"
    " https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
)
INVALID_TOKEN: Final = "The security token included in the request is invalid."
# What a Function URL answers when its function failed or timed out (502, text/plain), and the
# Lambda API's documented TooManyRequestsException for a function out of reserved concurrency.
FUNCTION_FAILED: Final = "Internal Server Error"
THROTTLED: Final = {
    "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
    "Type": "User",
    "message": "Rate Exceeded.",
}
EXPIRED_TOKEN: Final = "The security token included in the request is expired"

_AUTHORIZATION: Final = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)"
    r"/(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_AMZ_DATE: Final = re.compile(r"\d{8}T\d{6}Z")
_AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"

# awscrt refuses to sign a request that already carries these
# (AWS_AUTH_SIGNING_ILLEGAL_REQUEST_HEADER): it adds them itself, from the signing config.
_SIGNER_ADDED: Final = frozenset(
    {
        "authorization",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "x-amz-region-set",
    }
)

# The pattern byte at offset i is i % 251: a prime period never lines up with chunk sizes, so a
# dropped, repeated or reordered piece shows.
_PERIOD: Final = 251
_PIECE: Final = 64 * 1024
_CYCLE: Final = bytes(range(_PERIOD)) * (_PIECE // _PERIOD + 2)


@dataclass
class KeyRecord:
    secret_key: str
    session_token: str | None = None
    expires_at: float | None = None  # epoch seconds
    allowed: bool = True


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes  # over the size limit: only what was read before giving up, just past the limit
    verified: bool
    error_type: str | None


class Signature(NamedTuple):
    signed_headers: str  # as in the Authorization header: "host;x-amz-date"
    signature: str


class AwsError(Exception):
    """An answer AWS gives instead of invoking the function."""

    def __init__(self, error_type: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status

    def response(self) -> web.Response:
        # The two shapes AWS documents: AccessDenied says "Message", the signature errors "message".
        key = "Message" if self.error_type == "AccessDeniedException" else "message"
        return _json({key: self.message}, self.status, [("x-amzn-ErrorType", self.error_type)])


def crt_signature(
    method: str,
    raw_target: str,
    headers: Iterable[tuple[str, str]],
    *,
    signed_headers: Sequence[str],
    body_sha256: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    region: str,
    service: str,
    when: datetime,
) -> Signature:
    """Sign the request again with awscrt, over exactly the headers the client declared signed."""
    signed = frozenset(signed_headers)
    kept = [(n, v) for n, v in headers if n.lower() in signed and n.lower() not in _SIGNER_ADDED]
    config = AwsSigningConfig(
        algorithm=AwsSigningAlgorithm.V4,
        signature_type=AwsSignatureType.HTTP_REQUEST_HEADERS,
        # awscrt signs the token of the credentials, never the header: a token travelling unsigned
        # (AWS's post-sts-header-after case) is signed by giving awscrt no token at all.
        credentials_provider=AwsCredentialsProvider.new_static(
            access_key, secret_key, session_token if "x-amz-security-token" in signed else None
        ),
        region=region,
        service=service,
        date=when,
        use_double_uri_encode=True,
        should_normalize_uri_path=True,
        signed_body_value=body_sha256,
        # awscrt will only sign x-amz-content-sha256 if it adds the header itself.
        signed_body_header_type=AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256
        if "x-amz-content-sha256" in signed
        else AwsSignedBodyHeaderType.NONE,
        omit_session_token=False,
    )
    request = HttpRequest(method, raw_target, HttpHeaders(kept))
    signed_request = aws_sign_request(request, config).result(timeout=10)
    authorization = _AUTHORIZATION.fullmatch(signed_request.headers.get("Authorization"))
    assert authorization is not None, "awscrt wrote an Authorization header we cannot parse"
    return Signature(authorization["signed"], authorization["signature"])


def pattern(start: int, length: int) -> Iterator[bytes]:
    """Bytes start..start+length of the endless pattern i % 251, in pieces of at most 64 KiB."""
    end = start + length
    while start < end:
        size = min(_PIECE, end - start)
        offset = start % _PERIOD
        yield _CYCLE[offset : offset + size]
        start += size


class FakeFunctionUrl:
    # What a body over Lambda's quota is answered with (the Lambda API's Invoke names it
    # RequestTooLargeException: tests/fake_lambda_api.py).
    too_large_error = "RequestEntityTooLargeException"

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        service: str = "lambda",
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.region = region
        self.service = service
        self.payload_hash_required = service == "lambda"
        # "NONE": a Function URL with AuthType NONE, which answers anyone and checks nothing.
        self.auth_type = "AWS_IAM"
        self.keys: dict[str, KeyRecord] = {}
        self.received: list[ReceivedRequest] = []
        self.stream_cancelled = 0
        self.peers: set[tuple[str, int]] = set()  # client (host, port)s seen: one per connection
        self.host = "127.0.0.1"
        self.port = 0
        self.url = ""
        self._ssl_context = ssl_context
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._stream_cut = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._stopping = False
        self.host = host
        app = web.Application()
        # [\s\S]*, not .*: a path whose decoded form holds a newline must reach us, to be recorded.
        app.router.add_route("*", r"/{path:[\s\S]*}", self._handle)
        app.on_response_prepare.append(_add_request_id)
        app.on_response_prepare.append(self._add_date)
        # handler_cancellation: a peer hanging up cancels the handler at once, so a cut stream is
        # counted even while it sleeps. shutdown_timeout: stop() does not wait on slow streams.
        # auto_decompress off: AWS hashes the body bytes as sent, whatever Content-Encoding says.
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=0.25,
            access_log=None,
            auto_decompress=False,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        scheme = "https" if self._ssl_context else "http"
        self.url = f"{scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            self._stopping = True
            await self._runner.cleanup()
            self._runner = None

    async def _add_date(self, request: web.Request, response: web.StreamResponse) -> None:
        # AWS's clock, not this machine's (aiohttp only sets Date where none is).
        response.headers["Date"] = formatdate(self._clock(), usegmt=True)

    async def wait_stream_cancelled(self, count: int = 1) -> None:
        """Wait until `count` slow streams were cut off by their peer; bound it with a timeout."""
        while self.stream_cancelled < count:
            self._stream_cut.clear()
            await self._stream_cut.wait()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            host, port, *_ = request.transport.get_extra_info("peername")
            self.peers.add((host, port))
        body = await _read_body(request)
        record = ReceivedRequest(
            request.method, request.raw_path, list(request.headers.items()), body, True, None
        )
        try:
            if len(body) > MAX_REQUEST_BODY:
                # Checked first: the signature covers the whole body, which we refuse to buffer.
                raise AwsError(
                    self.too_large_error,
                    f"Request must be smaller than {MAX_REQUEST_BODY} bytes for the"
                    " InvokeFunction operation",
                    413,
                )
            access_key = (
                ""
                if self.auth_type == "NONE"
                else self._verify(request.method, request.raw_path, request.headers, body)
            )
        except AwsError as error:
            log.info("%s %s -> %s: %s", request.method, request.raw_path, error.error_type, error)
            self.received.append(replace(record, verified=False, error_type=error.error_type))
            return error.response()
        self.received.append(record)
        return await self._invoke(request, body, access_key)

    def _verify(
        self, method: str, raw_path: str, headers: CIMultiDictProxy[str], body: bytes
    ) -> str:
        """Authenticate and authorize the request as AWS does; return its access key."""
        authorization = headers.get("Authorization")
        if authorization is None:
            # What AWS answers a call to an AWS_IAM Function URL that carries no signature at all.
            raise AwsError("AccessDeniedException", "Forbidden")
        auth = _AUTHORIZATION.fullmatch(authorization)
        if auth is None:
            raise AwsError(
                "IncompleteSignatureException",
                f"Authorization header {authorization!r} is not"
                " 'AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...'",
            )
        signed = auth["signed"].split(";")
        when = self._check_scope_and_date(headers.get("X-Amz-Date", ""), auth)
        record = self._check_key(auth["key"], headers, signed)
        body_sha256 = hashlib.sha256(body).hexdigest()
        _check_signed_headers(
            headers,
            signed,
            body_sha256,
            expected_host=f"{self.host}:{self.port}",
            payload_hash_required=self.payload_hash_required,
        )
        try:
            computed = crt_signature(
                method,
                raw_path,
                headers.items(),
                signed_headers=signed,
                body_sha256=body_sha256,
                access_key=auth["key"],
                secret_key=record.secret_key,
                session_token=record.session_token,
                region=self.region,
                service=self.service,
                when=when,
            )
        except AwsCrtError as error:
            raise AwsError(
                "InvalidSignatureException",
                f"{SIGNATURE_MISMATCH} (awscrt cannot sign it: {error})",
            ) from error
        if computed.signed_headers != auth["signed"]:
            # awscrt never signs user-agent, expect, transfer-encoding, upgrade, x-amzn-trace-id
            # or sec-websocket-*, and always signs x-amz-date: headers nobody should sign anyway.
            raise AwsError(
                "InvalidSignatureException",
                f"{SIGNATURE_MISMATCH} (the request declared SignedHeaders={auth['signed']},"
                f" awscrt signed {computed.signed_headers})",
            )
        if not hmac.compare_digest(computed.signature, auth["signature"]):
            raise AwsError("InvalidSignatureException", SIGNATURE_MISMATCH)
        if not record.allowed:
            raise AwsError("AccessDeniedException", FORBIDDEN)
        return auth["key"]

    def _check_scope_and_date(self, amz_date: str, auth: re.Match[str]) -> datetime:
        if not _AMZ_DATE.fullmatch(amz_date):
            raise AwsError(
                "IncompleteSignatureException",
                f"Authorization header requires a valid 'X-Amz-Date' header, got {amz_date!r}",
            )
        if auth["region"] != self.region:
            # Lambda's own words, trailing space included (jetbridge/cdk-nextjs#116); other
            # services add ", not '<region>'".
            raise AwsError(
                "InvalidSignatureException", "Credential should be scoped to a valid region. "
            )
        if auth["service"] != self.service:
            raise AwsError(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: '{self.service}'.",
            )
        if auth["date"] != amz_date[:8]:
            raise AwsError(
                "InvalidSignatureException",
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date"
                f" from HTTP: '{auth['date']}' != '{amz_date[:8]}', from 'X-Amz-Date'.",
            )
        when = datetime.strptime(amz_date, _AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        now = self._clock()
        if when.timestamp() < now - MAX_CLOCK_SKEW:
            raise AwsError(
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is now earlier than"
                f" {_amz_date(now - MAX_CLOCK_SKEW)} ({_amz_date(now)} - 5 min.)",
            )
        if when.timestamp() > now + MAX_CLOCK_SKEW:
            raise AwsError(
                "InvalidSignatureException",
                f"Signature not yet current: {amz_date} is still later than"
                f" {_amz_date(now + MAX_CLOCK_SKEW)} ({_amz_date(now)} + 5 min.)",
            )
        return when

    def _check_key(
        self, access_key: str, headers: CIMultiDictProxy[str], signed: list[str]
    ) -> KeyRecord:
        record = self.keys.get(access_key)
        if record is None:
            raise AwsError("UnrecognizedClientException", INVALID_TOKEN)
        if record.expires_at is not None and record.expires_at <= self._clock():
            raise AwsError("ExpiredTokenException", EXPIRED_TOKEN)
        tokens = headers.getall("X-Amz-Security-Token", [])
        if record.session_token is None:
            if tokens:
                raise AwsError("UnrecognizedClientException", INVALID_TOKEN)
        elif len(tokens) != 1 or not hmac.compare_digest(tokens[0], record.session_token):
            raise AwsError("UnrecognizedClientException", INVALID_TOKEN)
        elif "x-amz-security-token" not in signed:
            raise AwsError(
                "IncompleteSignatureException", "'x-amz-security-token' must be a SignedHeader."
            )
        return record

    async def _invoke(
        self, request: web.Request, body: bytes, access_key: str
    ) -> web.StreamResponse:
        """Answer as the function would, by the path it receives."""
        raw_path, _, query = request.raw_path.partition("?")
        match unquote(raw_path).split("/")[1:]:
            case ["stream", n, chunks] if n.isdigit() and chunks.isdigit() and int(chunks) > 0:
                delay = float(parse_qs(query).get("delay", ["0"])[0])
                return await _stream(request, int(n), int(chunks), delay)
            case ["bytes", n] if n.isdigit():
                return await _send_bytes(request, int(n))
            case ["gzip"]:
                return web.Response(
                    body=GZIP_BODY,
                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                )
            case ["cookies"]:
                cookies = [("Set-Cookie", cookie) for cookie in SET_COOKIES]
                return _json({"cookies": len(cookies)}, 200, cookies)
            case ["cors"]:
                # A function that sets its own CORS headers, as many do.
                return _json({"cors": "function"}, 200, FUNCTION_CORS_HEADERS)
            case ["status", code] if code.isdigit() and 200 <= int(code) <= 599:
                return _status(int(code))
            case ["fail"]:
                return web.Response(status=502, text=FUNCTION_FAILED)
            case ["throttle"]:
                return _json(THROTTLED, 429, [("x-amzn-ErrorType", "TooManyRequestsException")])
            case ["redirect"]:
                return web.Response(status=302, headers={"Location": REDIRECT_LOCATION})
            case ["slow-headers", seconds] if _is_number(seconds):
                await asyncio.sleep(float(seconds))
                return _json({"slept": float(seconds)})
            case ["truncate", n] if n.isdigit():
                return await _truncate(request, int(n), chunked=False)
            case ["truncate-chunked", n] if n.isdigit():
                return await _truncate(request, int(n), chunked=True)
            case ["slow-stream", chunks, delay] if chunks.isdigit() and _is_number(delay):
                return await self._slow_stream(request, int(chunks), float(delay))
        return _echo(request, body, access_key, self.region)

    async def _slow_stream(
        self, request: web.Request, chunks: int, delay: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for i in range(chunks):
                if i:
                    await asyncio.sleep(delay)
                await response.write(b"tick\n")
        except (asyncio.CancelledError, ConnectionResetError):
            # Cancelled: the peer hung up while we slept. ConnectionResetError: while we wrote.
            if not self._stopping:
                self.stream_cancelled += 1
                self._stream_cut.set()
            raise
        await response.write_eof()
        return response


def _check_signed_headers(
    headers: CIMultiDictProxy[str],
    signed: list[str],
    body_sha256: str,
    expected_host: str,
    payload_hash_required: bool,
) -> None:
    """Refuse what AWS refuses before it even compares signatures."""
    if "host" not in signed:
        raise AwsError(
            "IncompleteSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        )
    # AWS routes on Host: a request signed for another host never reaches this function.
    if headers.getall("Host", []) != [expected_host]:
        raise AwsError(
            "InvalidSignatureException",
            f"Host {headers.getall('Host', [])!r} is not this Function URL's {expected_host!r}",
        )
    # Lambda accepts no UNSIGNED-PAYLOAD: the body must be covered by the signature. Other
    # services (STS) hash the body into the canonical request without the header.
    declared = headers.getall("X-Amz-Content-SHA256", [])
    if not payload_hash_required and not declared:
        return
    if "x-amz-content-sha256" not in signed or declared != [body_sha256]:
        raise AwsError(
            "InvalidSignatureException",
            f"x-amz-content-sha256 must be signed and be the SHA-256 of the body received"
            f" ({body_sha256}), got {declared!r}",
        )


async def _read_body(request: web.Request) -> bytes:
    # Stop one chunk past the limit; aiohttp drains the rest after we answer (lingering close).
    body = bytearray()
    while len(body) <= MAX_REQUEST_BODY and (chunk := await request.content.readany()):
        body += chunk
    return bytes(body)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["x-amzn-RequestId"] = str(uuid.uuid4())


def _json(data: object, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    # Built by hand: web.json_response would add "; charset=utf-8", which AWS does not send.
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers=list(headers),
    )


def _echo(request: web.Request, body: bytes, access_key: str, region: str) -> web.Response:
    path, _, query = request.raw_path.partition("?")
    return _json(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "path": path,
            "query": query,
            "headers": list(request.headers.items()),
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode(errors="replace") if len(body) <= ECHO_BODY_LIMIT else None,
            "access_key": access_key,
            "region": region,
        }
    )


def _status(code: int) -> web.Response:
    headers = [("x-fake-status", str(code))]
    if code in (204, 304):
        return web.Response(status=code, headers=headers)
    return _json({"status": code}, code, headers)


async def _stream(
    request: web.Request, total: int, chunks: int, delay: float
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    start = 0
    for i in range(chunks):
        if i and delay:
            await asyncio.sleep(delay)
        size = total // chunks + (i < total % chunks)
        for piece in pattern(start, size):
            await response.write(piece)
        start += size
    await response.write_eof()
    return response


async def _send_bytes(request: web.Request, n: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = n
    await response.prepare(request)
    for piece in pattern(0, n):
        await response.write(piece)
    await response.write_eof()
    return response


async def _truncate(request: web.Request, n: int, *, chunked: bool) -> web.StreamResponse:
    """Half of n bytes, then the connection ends: declared by Content-Length, or a chunked body
    whose terminating chunk never comes."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = n
    await response.prepare(request)
    for piece in pattern(0, n // 2):
        await response.write(piece)
    # close(), not abort(): close still flushes what was written, so the client gets exactly the
    # first n // 2 bytes before the connection ends. aiohttp then ignores the failed write_eof().
    assert request.transport is not None
    request.transport.close()
    return response


def _is_number(text: str) -> bool:
    return text.replace(".", "", 1).isdigit()


def _amz_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(_AMZ_DATE_FORMAT)


def parse_key(text: str) -> tuple[str, KeyRecord]:
    access_key, _, rest = text.partition(":")
    secret_key, _, token = rest.partition(":")
    if not access_key or not secret_key:
        raise argparse.ArgumentTypeError(f"key {text!r} is not AKID:SECRET[:TOKEN]")
    return access_key, KeyRecord(secret_key, token or None)


async def serve_until_signalled(make: Callable[[], FakeFunctionUrl], host: str, port: int) -> None:
    """Run a fake made by `make` until SIGINT or SIGTERM (the fakes' standalone mode)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    fake = make()
    await fake.start(port, host)
    try:
        print(f"listening on {fake.url}", flush=True)
        await stop.wait()
    finally:
        await fake.stop()


def standalone_parser(description: str) -> argparse.ArgumentParser:
    """The options every fake takes when run alone: where to listen, its region, its keys."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="AWS's clock this far ahead of this machine's (behind: negative)",
    )
    parser.add_argument(
        "--key", type=parse_key, action="append", default=[], metavar="AKID:SECRET[:TOKEN]"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = standalone_parser("A fake AWS Lambda Function URL (AWS_IAM auth).").parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    def make() -> FakeFunctionUrl:
        offset = args.clock_offset
        fake = FakeFunctionUrl(region=args.region, clock=lambda: time.time() + offset)
        fake.keys.update(dict(args.key))
        return fake

    asyncio.run(serve_until_signalled(make, args.host, args.port))


if __name__ == "__main__":
    main()

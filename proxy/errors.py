"""The proxy's own errors and their one JSON shape.

ProxyError                      every error the proxy answers itself
├── NoRoute                     404 no_route
├── BadRequest                  400 bad_request
├── Unauthorized                401 unauthorized            (access_token)
├── ClientNotAllowed            403 client_not_allowed      (allowed_clients)
├── HostNotAllowed              403 host_not_allowed        (DNS rebinding, loopback binds)
├── OriginNotAllowed            403 origin_not_allowed      (remote pages, CORS)
├── BodyTooLarge                413 body_too_large          (max_body_size, max_buffered_bodies)
├── ExpectationFailed           417 expectation_failed      (an Expect other than 100-continue)
├── HeadTooLarge                431 head_too_large          (max_head_size)
├── RequestTimeout              408 request_timeout
├── TooManyConnections          503 too_many_connections
├── HttpVersionNotSupported     505 http_version_not_supported  (HTTP/2.0 and above on a 1.1 port)
├── BodyBufferFull              503 body_buffer_full        (max_buffered_bodies, for body_timeout)
├── UpstreamUnreachable         502 upstream_unreachable
├── UpstreamTimeout             504 upstream_timeout
├── CredentialsUnavailable      503 credentials_unavailable
├── FunctionNotFound            502 function_not_found      (a route's function or alias)
├── FunctionAccessDenied        502 function_access_denied  (the Lambda API refused the identity)
├── FunctionThrottled           429 function_throttled      (TooManyRequestsException)
├── FunctionUnresolved          503 function_unresolved     (its URL not looked up yet)
├── InvokeFailed                502 invoke_failed           (the Lambda API refused an Invoke)
└── FunctionError               502 function_error          (the function failed, or its answer
                                                             cannot be made an HTTP answer)

Upstream answers, 403 included, are never turned into ProxyErrors: they pass through unchanged.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import ClassVar, Final

ERROR_HEADER: Final = "X-Proxy-Error"


class ProxyError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    # Retry-After, when the cause said when to try again (Lambda's throttling does).
    retry_after: str | None = None

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # For the log only, when it says more than the client may be told (a function's
        # error message): the message otherwise.
        self.detail = detail or message

    def body(self) -> bytes:
        return json.dumps({"error": self.code, "message": self.message}).encode()

    def answer(self) -> bytes:
        """The whole HTTP/1.1 answer, ending the connection: for the few that go straight to the
        socket, where aiohttp's response machinery cannot write them."""
        body = self.body()
        return (
            f"HTTP/1.1 {self.status} {HTTPStatus(self.status).phrase}\r\n"
            f"Content-Type: application/json\r\n{ERROR_HEADER}: {self.code}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body


class NoRoute(ProxyError):
    code = "no_route"
    status = 404


class MethodNotAllowed(ProxyError):
    """A method the admin listener (read-only) or an inspector endpoint does not serve."""

    code = "method_not_allowed"
    status = 405


class BadRequest(ProxyError):
    code = "bad_request"
    status = 400


class Unauthorized(ProxyError):
    code = "unauthorized"
    status = 401


class ClientNotAllowed(ProxyError):
    code = "client_not_allowed"
    status = 403


class HostNotAllowed(ProxyError):
    code = "host_not_allowed"
    status = 403


class OriginNotAllowed(ProxyError):
    code = "origin_not_allowed"
    status = 403


class BodyTooLarge(ProxyError):
    code = "body_too_large"
    status = 413


class HeadTooLarge(ProxyError):
    code = "head_too_large"
    status = 431


class ExpectationFailed(ProxyError):
    code = "expectation_failed"
    status = 417


class UpstreamUnreachable(ProxyError):
    code = "upstream_unreachable"
    status = 502


class UpstreamTimeout(ProxyError):
    code = "upstream_timeout"
    status = 504


class RequestTimeout(ProxyError):
    code = "request_timeout"
    status = 408


class TooManyConnections(ProxyError):
    code = "too_many_connections"
    status = 503


class HttpVersionNotSupported(ProxyError):
    code = "http_version_not_supported"
    status = 505


class CredentialsUnavailable(ProxyError):
    code = "credentials_unavailable"
    status = 503


class BodyBufferFull(ProxyError):
    code = "body_buffer_full"
    status = 503


class FunctionNotFound(ProxyError):
    code = "function_not_found"
    status = 502


class FunctionAccessDenied(ProxyError):
    code = "function_access_denied"
    status = 502


class FunctionThrottled(ProxyError):
    code = "function_throttled"
    status = 429


class FunctionUnresolved(ProxyError):
    code = "function_unresolved"
    status = 503


class InvokeFailed(ProxyError):
    code = "invoke_failed"
    status = 502


class FunctionError(ProxyError):
    code = "function_error"
    status = 502


class NotReplayable(ProxyError):
    code = "not_replayable"
    status = 409

"""The access record of one request: what the access log line is made of, and what the
inspector (proxy/inspector.py) keeps of it.

Its own module so that the log (proxy/logs.py) needs nothing of the request path: `--help` and
`check` load neither aiohttp nor the upstream client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the types only
    from proxy.signing import Credentials


class Capture:
    """What the inspector shows of a request beyond its access line, filled on the request path
    only when the inspector is on: references to what the path already holds (the request body,
    the answer's header lines and whole body), clock readings, the signature's inputs. Nothing
    is copied here; the ring caps the bodies when it records the exchange. The part of a
    streamed answer kept is at most `room` bytes. Strings and bytes, no containers: the ring
    keeps 200 of these, and objects the garbage collector must track cost it on every pass."""

    __slots__ = (
        "connected",
        "credentials",
        "credentials_ready",
        "credentials_wait",
        "duration",
        "first_byte",
        "id",
        "payload_hash",
        "raw_headers",
        "request_body",
        "request_size",
        "response_body",
        "response_lines",
        "response_size",
        "room",
        "signed",
        "signed_path",
        "signed_query",
        "signing_started",
        "target",
        "time",
        "timestamp",
        "upstream",
        "version",
    )

    # Set when the ring records the exchange (proxy/inspector.py).
    id: int
    time: float
    duration: float
    target: str
    version: tuple[int, int]
    raw_headers: tuple[tuple[bytes, bytes], ...]
    request_size: int
    response_size: int
    # perf_counter() readings, set as the request reaches each: read with getattr (reached())
    credentials_wait: float
    credentials_ready: float
    signing_started: float
    signed: float
    connected: float
    first_byte: float
    # What was signed, for the canonical request and string to sign shown: the route's
    # Upstream, the credentials, and the path, query, payload hash, x-amz-date signed. Set
    # together, once signed: `credentials` unset means never signed.
    upstream: Any
    credentials: Credentials
    signed_path: str
    signed_query: str
    payload_hash: str
    timestamp: str

    def __init__(self, room: int) -> None:
        # Only what is read whatever happens: a Capture is made for every request, and the
        # other slots are set as the request reaches them (unset slots cost nothing).
        self.room = room
        self.request_body = b""
        self.response_body: bytes | bytearray = b""
        self.response_lines = b""  # the answer's header lines as the client got them

    def reached(self, moment: str) -> float:
        """A clock reading (`signed`, ...), or 0.0 if the request never got there."""
        value: float = getattr(self, moment, 0.0)
        return value

    def keep(self, parts: list[bytes]) -> None:
        """Keep the beginning of a streamed answer, up to `room` bytes in all."""
        for part in parts:
            if self.room <= 0:
                return
            if not isinstance(self.response_body, bytearray):
                self.response_body = bytearray(self.response_body)
            self.response_body += part[: self.room]
            self.room -= len(part)


@dataclass(slots=True)
class Exchange:
    """What one request did, for the access log."""

    method: str
    path: str
    route: str = "-"
    status: int = 0
    bytes_sent: int = 0
    request_id: str | None = None
    error_type: str | None = None
    outcome: str | None = None  # the error code, or how a stream ended abnormally
    detail: str | None = None  # what the proxy told the client, for its own 5xx errors
    hint: str | None = None  # what an upstream failure's body says it means (a 403's region)
    quiet: bool = False  # no access line: an answer of /_proxy/* (a refused one is logged)
    capture: Capture | None = None  # the inspector's, when it is on

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

    def __init__(self, room: int) -> None:
        self.room = room
        # Set when the ring records the exchange (proxy/inspector.py).
        self.id = self.request_size = self.response_size = 0
        self.time = self.duration = 0.0
        self.target = ""
        self.version: tuple[int, int] = (1, 1)
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.request_body = b""
        self.response_body: bytes | bytearray = b""
        self.response_lines = b""  # the answer's header lines as the client got them
        # perf_counter() readings; 0.0: not reached
        self.credentials_wait = self.credentials_ready = 0.0
        self.signing_started = self.signed = self.connected = self.first_byte = 0.0
        # What was signed, for the canonical request and string to sign shown: the route's
        # Upstream, the credentials, and the path, query, payload hash, x-amz-date signed.
        self.upstream: Any = None
        self.credentials: Credentials | None = None
        self.signed_path = self.signed_query = self.payload_hash = self.timestamp = ""

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

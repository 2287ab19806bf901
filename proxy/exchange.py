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
    the answer's head and whole body), clock readings, the signature's inputs. Nothing is
    copied here; the ring caps the bodies when it records the exchange. The part of a streamed
    answer kept is at most `room` bytes."""

    __slots__ = (
        "connected",
        "credentials_ready",
        "credentials_wait",
        "duration",
        "first_byte",
        "head",
        "id",
        "own_lines",
        "raw_headers",
        "request_body",
        "request_size",
        "response_body",
        "response_size",
        "room",
        "signed",
        "signing",
        "signing_started",
        "target",
        "time",
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
        self.head: Any = None  # proxy.upstream.Head of an upstream answer
        self.own_lines: bytes | None = None  # the header lines of one of the proxy's own answers
        # perf_counter() readings; 0.0: not reached
        self.credentials_wait = self.credentials_ready = 0.0
        self.signing_started = self.signed = self.connected = self.first_byte = 0.0
        # (upstream, path, query, payload hash, credentials, x-amz-date) as signed
        self.signing: tuple[Any, str, str, str, Credentials, str] | None = None

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

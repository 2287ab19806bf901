"""The access record of one request: what the access log line is made of, and what the
inspector (proxy/inspector.py) keeps of it.

Its own module so that the log (proxy/logs.py) needs nothing of the request path: `--help` and
`check` load neither aiohttp nor the upstream client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the types only
    from proxy.trace import Signed


class Capture:
    """What the inspector's ring keeps of a request beyond its access line, filled on the
    request path only when the inspector is on: references to what the path already holds (the
    request body, the answer's header lines and whole body). Nothing is copied here; the ring
    caps the bodies when it records the exchange. The part of a streamed answer kept is at most
    `room` bytes. Strings and bytes, no containers: the ring keeps 200 of these, and objects the
    garbage collector must track cost it on every pass. The clock readings and what was signed
    are not here: only while a page watches (Steps)."""

    __slots__ = (
        "duration",
        "id",
        "raw_headers",
        "request_body",
        "request_size",
        "response_body",
        "response_lines",
        "response_size",
        "room",
        "target",
        "time",
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

    def __init__(self, room: int) -> None:
        # Only what is read whatever happens: a Capture is made for every request.
        self.room = room
        self.request_body = b""
        self.response_body: bytes | bytearray = b""
        self.response_lines = b""  # the answer's header lines as the client got them

    def keep(self, parts: list[bytes]) -> None:
        """Keep the beginning of a streamed answer, up to `room` bytes in all."""
        for part in parts:
            if self.room <= 0:
                return
            if not isinstance(self.response_body, bytearray):
                self.response_body = bytearray(self.response_body)
            self.response_body += part[: self.room]
            self.room -= len(part)


class Steps:
    """A request's steps as the inspector's page shows them: perf_counter() readings and what
    was signed. Made only while a page watches (Inspector.watched): with none open, the request
    path takes no clock reading and keeps no signature input for the inspector.

    It follows the request where the debug Trace (proxy/trace.py) does, through the same
    `if trace is not None` hooks: proxy/forward.py passes it as its trace when debug is off
    (with debug on, the Trace fills it too)."""

    __slots__ = ("connected", "first_byte", "ready", "signed_as", "signed_at", "started", "waited")

    def __init__(self, started: float) -> None:
        self.started = started  # the request arrived (app.handle's reading)
        self.waited = 0.0  # for the first credentials (a route's first request only)
        self.ready = 0.0  # its body read, when it had one
        self.connected: float | None = None  # a connection to the upstream in hand
        self.signed_at = 0.0
        self.signed_as: Signed | None = None  # None: never signed
        self.first_byte: float | None = None  # the answer's head arrived

    def signed(self, signed: Signed) -> None:
        """The request's head has been signed (again, after a review: the last one counts)."""
        self.signed_at = time.perf_counter()
        self.signed_as = signed

    def done(self, status: int, outcome: str | None) -> None:
        """Nothing to do at the end (the Trace's interface, proxy/trace.py Observer)."""


@dataclass(slots=True)
class Exchange:
    """What one request did, for the access log and the metrics (proxy/metrics.py)."""

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
    capture: Capture | None = None  # the inspector's ring's, when it is on
    steps: Steps | None = None  # the inspector's clock readings, while a page watches
    trace_id: str | None = None  # X-Amzn-Trace-Id, the client's or the proxy's (forwarded)
    bytes_received: int = 0  # the request body forwarded
    started: float = 0.0  # perf_counter() readings: when the request arrived,
    first_byte: float = 0.0  # and when the upstream's answer began (0: it never did)

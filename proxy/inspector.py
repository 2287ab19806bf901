"""The inspector's memory: the last requests as their access records saw them, in a ring, and
the pages watching it (issue #15).

Recording costs a few attribute stores: the ring keeps the Exchange itself, whose Capture holds
references to what the request path already had (the raw request headers as parsed, the
answer's head, the bodies), and copies a body only to cut it at the cap (one within it is kept
as it is). Everything a page sees is made only when it asks (proxy/inspector_view.py, through
Entry); bodies live only here, only in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from proxy.exchange import Capture, Exchange, Steps

if TYPE_CHECKING:  # for the types only: `check` runs without aiohttp
    from aiohttp.web import BaseRequest

BODY_CAP: Final = 64 * 1024
# Events a watching page may fall behind by before it is dropped (it reconnects and reloads).
BACKLOG: Final = 1000


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")  # as aiohttp decodes header values


class Entry:
    """One recorded request, as the page's views read it (made when a page asks)."""

    __slots__ = ("capture", "exchange", "steps")

    def __init__(self, exchange: Exchange) -> None:
        assert exchange.capture is not None, "only captured exchanges are recorded"
        self.exchange = exchange
        self.capture: Capture = exchange.capture
        self.steps: Steps | None = exchange.steps  # None: no page watched as it passed

    @property
    def id(self) -> int:
        return self.capture.id

    @property
    def time(self) -> float:  # the wall clock when it ended
        return self.capture.time

    @property
    def duration(self) -> float:  # seconds
        return self.capture.duration

    @property
    def target(self) -> str:  # the request target as it came: path and query
        return self.capture.target

    @property
    def version(self) -> tuple[int, int]:
        return self.capture.version

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The request's headers as they came, every repeated one, in order."""
        return [(_text(name), _text(value)) for name, value in self.capture.raw_headers]

    @property
    def host(self) -> str:  # how the client addressed the proxy
        return next((value for name, value in self.headers if name.lower() == "host"), "")

    @property
    def request_size(self) -> int:  # of the whole body (the ring keeps at most the cap)
        return self.capture.request_size

    @property
    def response_size(self) -> int:  # of the whole answer body as the proxy sent it
        return self.capture.response_size


class Inspector:
    """The ring of the last `size` requests and the queues of the pages watching it."""

    def __init__(self, size: int, body_cap: int = BODY_CAP) -> None:
        self.body_cap = body_cap
        self.ring: deque[Exchange] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self._watchers: set[asyncio.Queue[Entry | None]] = set()
        # A page watches: the requests take their clock readings and keep what was signed
        # (proxy/app.py reads it once per request; nothing else on the path asks).
        self.watched = False

    def record(self, exchange: Exchange, request: BaseRequest, duration: float) -> None:
        """Keep a finished request (called with its access line)."""
        capture = exchange.capture
        if capture is None:
            return
        capture.id = next(self._ids)
        capture.time = time.time()
        capture.duration = duration
        capture.target = request.raw_path
        capture.version = request.version
        capture.raw_headers = request.raw_headers
        cap = self.body_cap
        capture.request_size = len(capture.request_body)
        if capture.request_size > cap:
            capture.request_body = capture.request_body[:cap]
        # A streamed answer kept no more than the cap (room went below 0 if it was longer).
        kept = len(capture.response_body)
        capture.response_size = exchange.bytes_sent if capture.room < 0 else kept
        if kept > cap:
            capture.response_body = capture.response_body[:cap]
        self.ring.append(exchange)
        if self._watchers:  # only while a page is open
            self._tell(Entry(exchange))

    def _tell(self, entry: Entry) -> None:
        for queue in list(self._watchers):
            if queue.qsize() >= BACKLOG:
                self.unwatch(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(entry)

    def find(self, entry_id: int) -> Entry | None:
        for exchange in self.ring:
            if exchange.capture is not None and exchange.capture.id == entry_id:
                return Entry(exchange)
        return None

    def entries(self) -> list[Entry]:
        """Oldest first."""
        return [Entry(exchange) for exchange in self.ring]

    def newest_first(self) -> Iterator[Entry]:
        return (Entry(exchange) for exchange in reversed(self.ring))

    def watch(self) -> asyncio.Queue[Entry | None]:
        """A queue of the requests recorded from now on; None when the page must go (the proxy
        stops, or the page fell too far behind)."""
        queue: asyncio.Queue[Entry | None] = asyncio.Queue()
        self._watchers.add(queue)
        self.watched = True
        return queue

    def unwatch(self, queue: asyncio.Queue[Entry | None]) -> None:
        self._watchers.discard(queue)
        self.watched = bool(self._watchers)

    def close(self) -> None:
        """The proxy stops: every page's stream ends, so the drain need not wait for them."""
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()
        self.watched = False


def body_read(exchange: Exchange, body: bytes) -> None:
    """A request's body has been read (proxy/app.py, only for a request with one): the ring
    keeps it (capped when recorded); the steps, while a page watches, note when."""
    if exchange.capture is not None:
        exchange.capture.request_body = body
    if exchange.steps is not None:
        exchange.steps.ready = time.perf_counter()

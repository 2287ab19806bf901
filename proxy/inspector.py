"""The inspector's memory: the last requests as their access records saw them, in a ring, and
the pages watching it (issue #15).

Recording is the access line's cost plus a reference: the ring keeps the Exchange itself (with
its Capture) and the request's parsed headers, and copies only the part of a body beyond the
cap away (a body within it is kept as it is). Only while a page watches is anything rendered
for it (proxy/inspector_view.py); bodies live only here, only in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from proxy.exchange import Capture, Exchange

if TYPE_CHECKING:  # for the types only: `check` runs without aiohttp
    from aiohttp.web import BaseRequest

BODY_CAP: Final = 64 * 1024
# Events a watching page may fall behind by before it is dropped (it reconnects and reloads).
BACKLOG: Final = 1000


@dataclass(slots=True)
class Entry:
    """One request in the ring."""

    id: int
    time: float  # the wall clock when it ended
    duration: float  # seconds
    exchange: Exchange
    target: str  # the request target as it came: path and query
    version: tuple[int, int]
    headers: Mapping[str, str]  # the request's, as parsed (a multidict: items() repeats names)
    host: str  # how the client addressed the proxy
    request_size: int  # of the whole request body (the Capture keeps at most the cap)
    response_size: int  # of the whole answer body as the inspector saw it

    @property
    def capture(self) -> Capture:
        assert self.exchange.capture is not None, "only captured exchanges are recorded"
        return self.exchange.capture


class Inspector:
    """The ring of the last `size` requests and the queues of the pages watching it."""

    def __init__(self, size: int, body_cap: int = BODY_CAP) -> None:
        self.body_cap = body_cap
        self.ring: deque[Entry] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self._watchers: set[asyncio.Queue[Entry | None]] = set()

    def record(self, exchange: Exchange, request: BaseRequest, duration: float) -> None:
        """Keep a finished request (called with its access line)."""
        capture = exchange.capture
        if capture is None:
            return
        cap = self.body_cap
        request_size = len(capture.request_body)
        if request_size > cap:
            capture.request_body = capture.request_body[:cap]
        # A streamed answer kept no more than the cap (room went below 0 if it was longer).
        response_size = exchange.bytes_sent if capture.room < 0 else len(capture.response_body)
        if len(capture.response_body) > cap:
            capture.response_body = capture.response_body[:cap]
        entry = Entry(
            next(self._ids),
            time.time(),
            duration,
            exchange,
            request.raw_path,
            (request.version.major, request.version.minor),
            request.headers,
            request.headers.get("Host", ""),
            request_size,
            response_size,
        )
        self.ring.append(entry)
        for queue in list(self._watchers):  # none, unless a page is open
            if queue.qsize() >= BACKLOG:
                self._watchers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(entry)

    def find(self, entry_id: int) -> Entry | None:
        for entry in self.ring:
            if entry.id == entry_id:
                return entry
        return None

    def newest_first(self) -> Iterator[Entry]:
        return reversed(self.ring)

    def watch(self) -> asyncio.Queue[Entry | None]:
        """A queue of the requests recorded from now on; None when the page must go (the proxy
        stops, or the page fell too far behind)."""
        queue: asyncio.Queue[Entry | None] = asyncio.Queue()
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[Entry | None]) -> None:
        self._watchers.discard(queue)

    @property
    def watched(self) -> bool:
        return bool(self._watchers)

    def close(self) -> None:
        """The proxy stops: every page's stream ends, so the drain need not wait for them."""
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()

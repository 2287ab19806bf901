"""How many bytes of request bodies the process holds at once, across all requests.

Each request body is read whole before it is signed (SigV4 hashes it), so without a bound,
concurrent uploads hold as much memory as clients care to send: 300 uploads of 6 MiB took the
proxy to 2 GiB (issue #12). A request takes its share of `max_buffered_bodies` before its body
is read and gives it back when it is done. When there is no room it waits its turn, first come
first served, so that a large body is not starved by a stream of small ones; meanwhile its
unread body stays in the client's socket (aiohttp stops reading a request whose buffer is full).
"""

from __future__ import annotations

import asyncio
from collections import deque


class BodyBudget:
    __slots__ = ("_line", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._line: deque[tuple[int, asyncio.Future[None]]] = deque()

    def take_now(self, size: int) -> bool:
        """Take `size` bytes if there is room and nobody is waiting for it; the common case."""
        if self._line or self.held + size > self.limit:
            return False
        self.held += size
        return True

    async def take(self, size: int) -> None:
        """Take `size` bytes (at most `limit`), waiting for room in line. Cancelled, the request
        leaves the line, and gives back what it was granted in the meantime."""
        if self.take_now(size):
            return
        turn = (size, asyncio.get_running_loop().create_future())
        self._line.append(turn)
        try:
            await turn[1]
        except asyncio.CancelledError:
            if turn[1].cancelled():
                if turn in self._line:  # (_serve_line may have dropped it already)
                    self._line.remove(turn)
                self._serve_line()  # the next in line may fit where this one did not
            else:  # granted just as it was cancelled
                self.give_back(size)
            raise

    def give_back(self, size: int) -> None:
        self.held -= size
        if self._line:
            self._serve_line()

    def _serve_line(self) -> None:
        while self._line:
            size, future = self._line[0]
            if future.cancelled():  # its request is leaving the line: CancelledError is on its way
                self._line.popleft()
                continue
            if self.held + size > self.limit:
                return
            self._line.popleft()
            self.held += size
            future.set_result(None)

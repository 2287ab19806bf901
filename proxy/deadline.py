"""A deadline for one task: cancelled when it passes, and able to tell that cancel apart."""

from __future__ import annotations

import asyncio
from typing import Any


class Deadline:
    """What asyncio.timeout() does, at half its cost per request: one timer, no context
    manager, no state machine. The caller catches CancelledError and asks reached()."""

    __slots__ = ("_cancelling", "_handle", "_reached", "_task")

    def __init__(self, task: asyncio.Task[Any], seconds: float | None) -> None:
        self._reached = False
        self._task = task
        self._cancelling = task.cancelling()  # cancels already asked for: none of ours
        self._handle = (
            None if seconds is None else task.get_loop().call_later(seconds, self._expire)
        )

    def _expire(self) -> None:
        self._reached = True
        self._task.cancel()

    def reached(self) -> bool:
        """True once, in the CancelledError the deadline caused, unless something else asked to
        cancel the task too (a shutdown, a client gone) in the same turn: then that cancel is
        not swallowed. The deadline's own cancel is undone either way (asyncio.timeout's rule)."""
        if not self._reached:
            return False
        self._reached = False
        return self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

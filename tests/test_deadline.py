"""Deadline: cancels its task when it passes, and tells its own cancel from any other."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadline import Deadline


async def test_the_deadline_cancels_and_owns_that_cancel() -> None:
    task = asyncio.current_task()
    assert task is not None
    deadline = Deadline(task, 0.05)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    assert deadline.reached()
    assert task.cancelling() == 0  # undone: the task goes on as if never cancelled
    assert not deadline.reached()  # once only
    await asyncio.sleep(0)


async def test_another_cancel_is_not_the_deadlines() -> None:
    async def guarded() -> str:
        task = asyncio.current_task()
        assert task is not None
        deadline = Deadline(task, 5)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "deadline" if deadline.reached() else "other"
        finally:
            deadline.cancel()
        return "finished"

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "other"


async def test_a_cancelled_deadline_never_fires() -> None:
    task = asyncio.current_task()
    assert task is not None
    deadline = Deadline(task, 0.02)
    deadline.cancel()
    await asyncio.sleep(0.05)  # would raise CancelledError had the timer fired
    assert not deadline.reached()


async def test_an_outside_cancel_in_the_same_turn_is_not_swallowed() -> None:
    """The deadline fires and, before the task runs again, a shutdown cancels it too: the
    caller must see a cancel that is not the deadline's, as asyncio.timeout would."""
    deadlines: list[Deadline] = []

    async def guarded() -> str:
        task = asyncio.current_task()
        assert task is not None
        deadlines.append(deadline := Deadline(task, 60))
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "deadline" if deadline.reached() else "other"
        return "finished"

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0)  # it started and waits
    deadlines[0]._expire()  # the deadline's timer fires...
    task.cancel()  # ...and in the same turn of the loop, a shutdown's cancel
    assert await task == "other"
    assert task.cancelling() == 1  # the outside request is still there for the caller

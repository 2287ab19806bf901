"""Deadline: cancels its task when it passes, and tells its own cancel from any other."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.deadline import TICK, Deadline


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
    deadlines[0].expire()  # the deadline's timer fires...
    task.cancel()  # ...and in the same turn of the loop, a shutdown's cancel
    assert await task == "other"
    assert task.cancelling() == 1  # the outside request is still there for the caller


async def test_a_deadline_fires_never_early_and_at_most_a_tick_late() -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    started = loop.time()
    Deadline(task, 0.12)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    waited = loop.time() - started
    assert task.uncancel() == 0
    assert 0.12 <= waited < 0.12 + TICK + 0.5  # the slack: a busy machine's turn of the loop


@pytest.mark.slow
async def test_deadlines_due_together_share_one_timer_and_fire_alone() -> None:
    """A thousand requests with one timeout arm one timer per tick, not a thousand; each one
    cancelled early is never fired, each one left is."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    outcomes: list[str] = []

    async def guarded(index: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        deadline = Deadline(task, 1.0)
        try:
            await asyncio.sleep(0.01 if index % 2 else 5)
            outcomes.append("finished")
        except asyncio.CancelledError:
            outcomes.append("deadline" if deadline.reached() else "other")
        finally:
            deadline.cancel()

    loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
    try:
        await asyncio.gather(*(guarded(index) for index in range(1000)))
    finally:
        del loop.call_at
    assert outcomes.count("finished") == 500
    assert outcomes.count("deadline") == 500
    # asyncio.sleep's own timers are counted too: 1,000 of them, and the deadlines' ticks
    assert len(armed) - 1000 <= 3  # the ticks the 1,000 starts spread over, on a slow machine


async def test_each_event_loop_keeps_its_own_deadlines() -> None:
    """A second loop (another thread, or a test's) gets timers of its own."""

    def in_another_loop() -> str:
        async def guarded() -> str:
            task = asyncio.current_task()
            assert task is not None
            deadline = Deadline(task, 0.05)
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                return "deadline" if deadline.reached() else "other"
            return "finished"

        return asyncio.run(guarded())

    task = asyncio.current_task()
    assert task is not None
    mine = Deadline(task, 5)
    assert await asyncio.to_thread(in_another_loop) == "deadline"
    mine.cancel()
    await asyncio.sleep(0.1)  # this loop's deadline, cancelled, never fires here

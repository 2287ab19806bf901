"""BodyBudget: the bytes of request bodies held at once, taken in turn and always given back."""

from __future__ import annotations

import asyncio

import pytest

from proxy.budget import BodyBudget


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_room_is_taken_at_once_and_given_back() -> None:
    budget = BodyBudget(100)
    assert budget.take_now(60) and budget.take_now(40)
    assert not budget.take_now(1)
    budget.give_back(100)
    assert budget.held == 0 and budget.take_now(100)


async def test_waiters_are_served_first_come_first_served() -> None:
    budget = BodyBudget(100)
    budget.take_now(100)
    served: list[str] = []

    async def wait(name: str, size: int) -> None:
        await budget.take(size)
        served.append(name)

    big = asyncio.create_task(wait("big", 90))
    await settle()
    small = asyncio.create_task(wait("small", 10))
    await settle()
    assert not budget.take_now(1)  # someone is waiting: no overtaking, even when it would fit
    budget.give_back(50)  # room for the small one, not yet for the big one ahead of it
    await settle()
    assert served == []
    budget.give_back(50)
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert served == ["big", "small"] and budget.held == 100


async def test_a_cancelled_waiter_leaves_the_line_and_lets_the_next_in() -> None:
    budget = BodyBudget(100)
    budget.take_now(60)
    first = asyncio.create_task(budget.take(50))
    await settle()
    second = asyncio.create_task(budget.take(40))  # would fit, but waits behind the first
    await settle()
    assert not second.done()
    first.cancel()
    await asyncio.wait_for(second, 1)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert budget.held == 100


async def test_room_granted_to_a_waiter_cancelled_meanwhile_is_given_back() -> None:
    budget = BodyBudget(100)
    budget.take_now(100)
    waiter = asyncio.create_task(budget.take(30))
    await settle()
    budget.give_back(100)  # grants the waiter its 30...
    waiter.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.held == 0

"""The push budget reserves a slot before the await that enqueues: 100 concurrent commits
against 10 slots enqueue exactly 10, and a failed enqueue gives its slot back."""

from __future__ import annotations

import asyncio

import pytest

from daemons.email_reactor.budget import CycleBudget


def test_a_hundred_concurrent_spends_enqueue_exactly_the_budget() -> None:
    enqueued: list[int] = []

    async def go() -> list[bool]:
        budget = CycleBudget(10)

        async def one(i: int) -> bool:
            async def enqueue() -> None:
                await asyncio.sleep(0)  # every commit in flight at once
                enqueued.append(i)

            return await budget.spend(enqueue)

        results = await asyncio.gather(*(one(i) for i in range(100)))
        assert budget.left == 0
        return results

    results = asyncio.run(go())
    assert results.count(True) == 10 and len(enqueued) == 10


def test_a_failed_enqueue_gives_its_slot_back() -> None:
    async def go() -> int:
        budget = CycleBudget(1)

        async def broken() -> None:
            raise OSError("outbox unavailable")

        with pytest.raises(OSError):
            await budget.spend(broken)
        return budget.left

    assert asyncio.run(go()) == 1
    assert CycleBudget(0).take() is False and CycleBudget(-3).left == 0

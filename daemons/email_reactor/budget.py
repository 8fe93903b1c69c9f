"""The #ceo push budget of one cycle (``pushes_per_cycle``).

Decisions commit concurrently (the LLM tasks), so a slot is taken before the await that
enqueues the push and given back if that enqueue fails: checking first and counting after the
await let every commit in flight through (40 of 40 pushes against a budget of 10). ``take`` has
no await, so on one event loop it is atomic. No I/O of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["PushBudget"]


class PushBudget:
    def __init__(self, slots: int) -> None:
        self.left = max(0, slots)

    def take(self) -> bool:
        """Reserve one push; False when the budget is spent (the push waits, deferred)."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        """Return a slot taken for a push that was not enqueued."""
        self.left += 1

    async def spend(self, enqueue: Callable[[], Awaitable[None]]) -> bool:
        """Run ``enqueue`` on a reserved slot; False (not run) when the budget is spent."""
        if not self.take():
            return False
        try:
            await enqueue()
        except BaseException:
            self.give_back()
            raise
        return True

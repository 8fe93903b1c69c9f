"""A per-cycle budget of one kind of effect: #ceo pushes (``pushes_per_cycle``) and new
Mission Control tasks (``max_tasks_per_cycle``). What the budget refuses waits for the next
cycle, never dropped: a push stays owed in ``reactor_decisions``, a task's email stays
undecided.

Decisions commit concurrently (the LLM tasks), so a slot is taken before the await that does
the work and given back if that work fails: checking first and counting after the await let
every commit in flight through (40 of 40 pushes against a budget of 10). ``take`` has no await,
so on one event loop it is atomic. No I/O of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = ["CycleBudget"]


class CycleBudget:
    def __init__(self, slots: int) -> None:
        self.left = max(0, slots)
        self.refused = 0  # effects turned away this cycle (they wait for the next)

    def take(self) -> bool:
        """Reserve one slot; False when the budget is spent (the effect waits)."""
        if self.spent():
            return False
        self.left -= 1
        return True

    def spent(self) -> bool:
        """True (and one more refused) when no slot is left."""
        if self.left > 0:
            return False
        self.refused += 1
        return True

    def give_back(self) -> None:
        """Return a slot taken for an effect that did not happen."""
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

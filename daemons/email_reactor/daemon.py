"""The email-reactor daemon (skeleton: the cycle does nothing yet)."""

from __future__ import annotations

from shared.runtime import CycleResult, Daemon

__all__ = ["EmailReactor"]


class EmailReactor(Daemon):
    name = "email-reactor"

    async def cycle(self) -> CycleResult:
        return CycleResult()

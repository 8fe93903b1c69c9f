"""The restore-loop daemon (skeleton: the cycle does nothing yet)."""

from __future__ import annotations

from shared.runtime import CycleResult, Daemon

__all__ = ["RestoreLoop"]


class RestoreLoop(Daemon):
    name = "restore-loop"

    async def cycle(self) -> CycleResult:
        return CycleResult()

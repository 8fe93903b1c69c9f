"""The heartbeat daemon (skeleton: the cycle does nothing yet)."""

from __future__ import annotations

from shared.runtime import CycleResult, Daemon

__all__ = ["Heartbeat"]


class Heartbeat(Daemon):
    name = "heartbeat"

    async def cycle(self) -> CycleResult:
        return CycleResult()

"""The blueprint-watchdog daemon (skeleton: the cycle does nothing yet)."""

from __future__ import annotations

from shared.runtime import CycleResult, Daemon

__all__ = ["BlueprintWatchdog"]


class BlueprintWatchdog(Daemon):
    name = "blueprint-watchdog"

    async def cycle(self) -> CycleResult:
        return CycleResult()

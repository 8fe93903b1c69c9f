"""The ollama-health daemon (skeleton: the cycle does nothing yet)."""

from __future__ import annotations

from shared.runtime import CycleResult, Daemon

__all__ = ["OllamaHealth"]


class OllamaHealth(Daemon):
    name = "ollama-health"

    async def cycle(self) -> CycleResult:
        return CycleResult()

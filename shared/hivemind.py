"""The HiveMind notification sink (skeleton): delivers outbox rows with ``sink="hivemind"``
as rows in hivemind.db ``messages`` or as an HTTP POST to ``hivemind_url``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.notify import OutboxRow, SinkError

if TYPE_CHECKING:
    from shared.config import FleetConfig

__all__ = ["HiveMindSink"]


class HiveMindSink:
    name = "hivemind"

    def __init__(self) -> None:
        pass

    @classmethod
    def from_config(cls, config: FleetConfig) -> HiveMindSink:
        return cls()

    @property
    def available(self) -> bool:
        return False

    async def send(self, row: OutboxRow) -> None:
        raise SinkError("not_configured")

    async def close(self) -> None:
        return None

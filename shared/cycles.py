"""What a cycle reports: ``CycleOutcome`` (the ``outcome`` label of ``fleet_cycles_total``) and
``CycleResult``. Plain data, standard library only."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CycleOutcome", "CycleResult"]


class CycleOutcome(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass
class CycleResult:
    """What a cycle reports. ``more``: work remains, run the next cycle without waiting."""

    more: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

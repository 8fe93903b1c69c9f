"""The plain data of notifications: a ``Message`` a daemon asks to have delivered, the
``OutboxRow`` it becomes once stored, and the outbox's ``Silence``.

Values only: nothing here reads a clock, touches a database or talks to a sink (``from_db``
converts a selected tuple).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MAX_SILENCE_S", "ROW_COLUMNS", "Kind", "Message", "OutboxRow", "Silence"]

#: the longest silence ``fleet silence set`` accepts: a drill or a maintenance, not "forever"
MAX_SILENCE_S = 30 * 86400.0

#: the columns ``OutboxRow.from_db`` reads, in its order (the same on both outbox backends)
ROW_COLUMNS = "id, dedup_key, sink, channel, kind, text, payload, daemon, created_at, attempts"

#: ``alert``: may be silenced and collapsed; ``push`` (e.g. #ceo): never is;
#: ``summary``: made by the outbox from collapsed alerts.
Kind = Literal["alert", "push", "summary"]


@dataclass(frozen=True)
class Message:
    """What a daemon asks to have delivered. ``dedup_key`` makes a repeat a no-op.
    ``kind="push"`` (e.g. #ceo) is never silenced or collapsed; ``"alert"`` is."""

    channel: str
    text: str
    dedup_key: str
    kind: Kind = "alert"
    sink: str = "slack"
    daemon: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxRow:
    """A stored message as a sender (or the collapse plan) sees it."""

    id: int
    dedup_key: str
    sink: str
    channel: str
    kind: str
    text: str
    payload: dict[str, Any]
    daemon: str
    created_at: float
    attempts: int

    @classmethod
    def from_db(cls, r: Sequence[Any]) -> OutboxRow:
        """From a row selected as ``ROW_COLUMNS`` (either backend)."""
        return cls(
            id=int(r[0]),
            dedup_key=str(r[1]),
            sink=str(r[2]),
            channel=str(r[3]),
            kind=str(r[4]),
            text=str(r[5]),
            payload=json.loads(r[6] or "{}"),
            daemon=str(r[7]),
            created_at=float(r[8]),
            attempts=int(r[9]),
        )


@dataclass(frozen=True)
class Silence:
    """Alerts are held (pushes are not) for ``until - set_at`` seconds. Measured on the
    monotonic clock when it was set in this boot (``set_mono``, ``boot``), so a wall-clock
    step neither stretches nor cuts it; else (another boot, an older row) until ``until``."""

    until: float
    reason: str
    set_at: float
    set_mono: float | None = None
    boot: str | None = None

    @property
    def duration_s(self) -> float:
        return self.until - self.set_at

    def active(self, now: float, mono: float | None = None, boot: str | None = None) -> bool:
        """Still in force at wall time ``now`` / monotonic ``mono`` in boot ``boot``."""
        same_boot = boot is not None and boot == self.boot and self.set_mono is not None
        if same_boot and mono is not None and self.set_mono is not None and mono >= self.set_mono:
            return mono - self.set_mono < self.duration_s
        return self.until > now

"""The plain data of notifications: a ``Message`` a daemon asks to have delivered, the
``OutboxRow`` it becomes once stored, and the outbox's ``Silence``.

Values only: nothing here reads a clock, touches a database or talks to a sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Kind", "Message", "OutboxRow", "Silence"]

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


@dataclass(frozen=True)
class Silence:
    """Alerts are held (pushes are not) until ``until``."""

    until: float
    reason: str
    set_at: float

    def active(self, now: float) -> bool:
        return self.until > now

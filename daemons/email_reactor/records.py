"""The reactor's records: a decision before its effects, what ``InboxStore.record`` committed,
a stored decision (and its audit line), a digest row; plus the JSON readers for the inbox's
list/dict columns, which other tools fill (anything unreadable reads as empty, never raises).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemons.email_reactor.actions import EmailAction

__all__ = [
    "Decision",
    "DigestRow",
    "Recorded",
    "StoredDecision",
    "json_dict",
    "json_list",
    "stored",
]


@dataclass(frozen=True)
class Decision:
    """What the pipeline decided for one email (before any side effect)."""

    action: EmailAction
    reason: str
    source: str  # override | paperless | db | llm | heuristic | security | legacy | cutover
    creates_task: bool = False
    push_channel: str | None = None
    push_text: str | None = None
    partner_tier: int = 0
    task_title: str = ""
    task_description: str = ""
    priority: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What ``InboxStore.record`` committed."""

    inserted: bool  # False: decided earlier; nothing changed
    push: bool  # a push is owed (its key stored); False also when the ingest path pushed


@dataclass(frozen=True)
class StoredDecision:
    email_id: int
    action: EmailAction
    reason: str
    source: str
    mc_task_id: int | None
    decided_at: str
    sender_hash: str

    def audit_record(self) -> dict[str, Any]:
        return {
            "ts": self.decided_at,
            "email_id": self.email_id,
            "action": self.action,
            "reason": self.reason,
            "source": self.source,
            "mc_task_id": self.mc_task_id,
            "sender": self.sender_hash,
        }


@dataclass(frozen=True)
class DigestRow:
    id: int
    account: str
    from_name: str
    from_domain: str
    subject: str
    created_at: str
    partner_tier: int


def stored(row: Sequence[Any]) -> StoredDecision:
    """A ``reactor_decisions`` row (email_id, action, reason, source, mc_task_id, decided_at,
    sender_hash); only this reactor writes the table, so its action is always an EmailAction."""
    return StoredDecision(int(row[0]), EmailAction(row[1]), row[2], row[3], row[4], row[5], row[6])


def json_list(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return (str(value),)  # not JSON: one opaque name, still scanned
    if isinstance(data, list):
        return tuple(str(x.get("name", x)) if isinstance(x, dict) else str(x) for x in data)
    return (str(data),)


def json_dict(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    try:
        data = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

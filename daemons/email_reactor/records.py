"""The reactor's records: a decision before its effects, what ``InboxStore.record`` committed,
a stored decision (and its audit line), a digest row. (Inbox rows are typed in ``rows.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemons.email_reactor.actions import EmailAction

__all__ = [
    "Decision",
    "DigestRow",
    "Recorded",
    "StoredDecision",
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

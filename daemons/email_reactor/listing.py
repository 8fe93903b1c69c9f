"""``fleet email list``: the inbox's emails with their status and the reactor's decision, newest
first, so an operator can pick the id ``fleet email explain`` takes.

Read-only: the database is opened ``mode=ro`` (no migration, no WAL switch), columns another
tool's schema lacks read as empty, and text that is not UTF-8 or holds control characters is
shown as the characters a reader sees. It never prints a sender's address.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemons.email_reactor.rows import decode_text
from shared.sqlite import connect_sync, table_columns
from shared.text import visible_text

__all__ = ["EmailListing", "InboxUnavailable", "list_emails"]

_SUBJECT_CHARS = 80


class InboxUnavailable(Exception):
    """The inbox database is missing, locked past its busy timeout, or not an inbox."""


@dataclass(frozen=True)
class EmailListing:
    id: int
    created_at: str
    status: str
    classification: str
    subject: str
    decision: str | None  # the reactor's action, None while undecided
    reason: str | None
    decided_at: str | None
    mc_task_id: int | None
    set_aside: str | None  # why the row cannot be read (a poison row), else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any, limit: int | None = None) -> str:
    text = "" if value is None else visible_text(str(value), newlines=False).replace("\t", " ")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def list_emails(path: Path, *, limit: int, undecided: bool = False) -> list[EmailListing]:
    """Up to ``limit`` emails, newest (highest id) first; ``undecided``: only those the reactor
    has not decided. Raises InboxUnavailable."""
    if not path.is_file():
        raise InboxUnavailable(f"no inbox database at {path}")
    try:
        conn = connect_sync(path, readonly=True, busy_timeout_ms=2000)
    except sqlite3.Error as exc:
        raise InboxUnavailable(f"{path}: {exc}") from None
    try:
        conn.text_factory = decode_text
        return _query(conn, path, limit, undecided)
    except sqlite3.Error as exc:
        raise InboxUnavailable(f"{path}: {exc}") from None
    finally:
        conn.close()


def _query(conn: sqlite3.Connection, path: Path, limit: int, undecided: bool) -> list[EmailListing]:
    have = table_columns(conn, "emails")
    if "id" not in have:
        raise InboxUnavailable(f"{path} has no emails table")
    cols = ", ".join(
        f"e.{c}" if c in have else f"NULL AS {c}"
        for c in ("created_at", "status", "classification", "subject")
    )
    decided = bool(table_columns(conn, "reactor_decisions"))
    poison = bool(table_columns(conn, "reactor_poison_rows"))
    decision_cols = (
        "d.action, d.reason, d.decided_at, d.mc_task_id" if decided else "NULL, NULL, NULL, NULL"
    )
    sql = (
        f"SELECT e.id, {cols}, {decision_cols}, {'p.reason' if poison else 'NULL'} FROM emails e"
        + (" LEFT JOIN reactor_decisions d ON d.email_id = e.id" if decided else "")
        + (" LEFT JOIN reactor_poison_rows p ON p.email_id = e.id" if poison else "")
        + (" WHERE d.email_id IS NULL" if undecided and decided else "")
        + " ORDER BY e.id DESC LIMIT ?"
    )
    out = []
    for row in conn.execute(sql, (limit,)):
        email_id = _int_or_none(row[0])
        if email_id is None:
            continue  # not a row the reactor can name either
        out.append(
            EmailListing(
                id=email_id,
                created_at=_text(row[1]),
                status=_text(row[2]),
                classification=_text(row[3]),
                subject=_text(row[4], _SUBJECT_CHARS),
                decision=_text(row[5]) if row[5] is not None else None,
                reason=_text(row[6]) if row[6] is not None else None,
                decided_at=_text(row[7]) if row[7] is not None else None,
                mc_task_id=_int_or_none(row[8]),
                set_aside=_text(row[9]) if row[9] is not None else None,
            )
        )
    return out

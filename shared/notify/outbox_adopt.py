"""Moving what a host's SQLite outbox still holds undelivered into the Postgres outbox, when the
host switches to ``[notify] url`` (``PostgresOutbox.open`` does it on every start).

Two phases, so a row is never lost nor left for both outboxes to send: the undelivered rows
(``pending``) are first marked ``moving`` in one IMMEDIATE transaction (no SQLite sender claims
them any more), then inserted into Postgres (``ON CONFLICT (dedup_key) DO NOTHING``: a repeat is
a no-op), then marked ``dead`` with ``last_error`` saying where they went, so they are pruned
like any finished row. A run stopped between the phases leaves them ``moving``; the next one
takes them again; a host that goes back to its SQLite outbox instead gets them back as
``pending`` when that outbox opens (``restore_moving``), so they are sent from the file. It never
creates the SQLite file or its table, and never touches rows that
are sending, sent, collapsed or dead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.sqlite import connect_sync, transaction_sync

__all__ = ["MOVED_NOTE", "mark_moved", "restore_moving", "take_undelivered"]

MOVED_NOTE = "moved to the Postgres outbox ([notify] url)"

#: the columns carried over, in this order (``PostgresOutbox`` inserts them as they are)
COLUMNS = (
    "dedup_key, sink, channel, kind, text, payload, daemon, created_at, attempts,"
    " next_attempt_at, held"
)


def take_undelivered(path: Path) -> list[tuple[Any, ...]]:
    """Mark the undelivered rows of the SQLite outbox at ``path`` ``moving`` and return them
    (with any a stopped run left ``moving``); [] when there is no such file or table."""
    if not path.exists():
        return []
    conn = connect_sync(path, create=False)
    try:
        if not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
        ).fetchall():
            return []
        if not conn.execute(
            "SELECT 1 FROM outbox WHERE status IN ('pending', 'moving') LIMIT 1"
        ).fetchall():
            return []
        with transaction_sync(conn):
            conn.execute("UPDATE outbox SET status = 'moving' WHERE status = 'pending'")
            return list(
                conn.execute(
                    f"SELECT {COLUMNS} FROM outbox WHERE status = 'moving' ORDER BY id"
                ).fetchall()
            )
    finally:
        conn.close()


def mark_moved(path: Path, dedup_keys: Sequence[str]) -> None:
    """Phase two: the rows now in Postgres become finished rows of the SQLite outbox."""
    conn = connect_sync(path, create=False)
    try:
        with transaction_sync(conn):
            for start in range(0, len(dedup_keys), 500):
                chunk = list(dedup_keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    "UPDATE outbox SET status = 'dead', last_error = ?"
                    f" WHERE status = 'moving' AND dedup_key IN ({marks})",
                    [MOVED_NOTE, *chunk],
                )
    finally:
        conn.close()


def restore_moving(conn: Any) -> int:
    """Rows a stopped move left ``moving`` become ``pending`` again: called by the SQLite outbox
    when it opens, i.e. when the host is (back) on SQLite and no move is under way. Returns
    how many; the caller's connection, which must have migrated the outbox table."""
    with transaction_sync(conn):
        return int(
            conn.execute("UPDATE outbox SET status = 'pending' WHERE status = 'moving'").rowcount
        )

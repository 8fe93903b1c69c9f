"""Read-only lookups in Mission Control for the registry gate: a task's text (title and
description), to check that the CEO approval token lives in the task, whether a task exists
(for ``BLUEPRINT_OVERRIDE=ceo-approved-<MC_ID>``), and where it came from: a task created from
mail (``source = 'email'``) carries a stranger's subject, so it never approves anything.

Standard library ``sqlite3`` only, opened ``mode=ro`` with a short busy timeout: this runs in
the pre-write hook and must never write, create or migrate mission-control.db, nor stall a
session on a locked database (it answers "unavailable" instead).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAIL_SOURCES", "TaskLookup", "TaskReader"]

# tasks.source values of tasks created from mail (compared stripped and case-folded).
MAIL_SOURCES = frozenset({"email"})


@dataclass(frozen=True)
class TaskLookup:
    """``available`` False: the DB could not be read (missing, locked, not a DB); then
    ``text`` is None and ``problem`` says why. Available and ``text`` None: no such task."""

    available: bool
    text: str | None = None
    problem: str = ""
    source: str | None = None  # tasks.source (None: no such column, or NULL)

    @property
    def from_mail(self) -> bool:
        return self.source is not None and self.source.strip().casefold() in MAIL_SOURCES


class TaskReader:
    """Looks tasks up in one mission-control.db; each call opens and closes its own
    read-only connection (a hook makes one or two lookups; the daemon a handful a night)."""

    def __init__(self, db: Path | None, *, busy_timeout_ms: int = 500) -> None:
        self.db = db
        self.busy_timeout_ms = busy_timeout_ms

    def task_text(self, task_id: int) -> TaskLookup:
        if self.db is None:
            return TaskLookup(False, problem="no Mission Control database configured")
        if not self.db.is_file():
            what = "is not a regular file" if self.db.exists() else "does not exist"
            return TaskLookup(False, problem=f"{self.db} {what}")
        try:
            uri = self.db.absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            return TaskLookup(False, problem=f"cannot open {self.db}: {exc}")
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
            if "id" not in columns:
                return TaskLookup(False, problem=f"{self.db} has no tasks table")
            wanted = [c for c in ("title", "description") if c in columns] or ["id"]
            select = ", ".join(f"coalesce(CAST({c} AS TEXT), '')" for c in wanted)
            source = "CAST(source AS TEXT)" if "source" in columns else "NULL"
            row = conn.execute(
                f"SELECT {source}, {select} FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            return TaskLookup(False, problem=f"cannot read {self.db}: {exc}")
        finally:
            conn.close()
        if row is None:
            return TaskLookup(True, None)
        return TaskLookup(True, "\n".join(str(v) for v in row[1:]), source=row[0])

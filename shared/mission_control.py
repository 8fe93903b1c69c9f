"""Mission Control task store: tasks, idempotent task creation, and the lease claim protocol.

``mission-control.db`` belongs to Mission Control; the fleet creates the ``tasks`` table when it
is missing and otherwise only adds the columns and indexes it needs. Every lease change is one
compare-and-set UPDATE checked by rowcount, so concurrent claimers in any number of processes
never both win. Timestamps are stored as SQLite's ``YYYY-MM-DD HH:MM:SS`` UTC text (so
``lease_until > datetime('now')`` is correct) and shown as ISO-8601 ``...Z``. Synchronous
stdlib sqlite3 on purpose: the ``fleet mc`` verbs run inside pre-tool hooks and must start
fast; daemons call it through a worker thread. It must never drop or rewrite foreign data.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from shared.clock import Clock
from shared.sqlite import (
    StoreError,
    add_missing_columns,
    apply_migrations,
    connect_sync,
    retry_busy,
    schema_version,
)

__all__ = [
    "ExpiredLease",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseNotHeld",
    "MissionControl",
    "NoSuchTask",
    "StoreError",
    "TaskRef",
    "format_iso",
    "format_sql_ts",
    "parse_ts",
]

COMPONENT = "mission_control"
_T = TypeVar("_T")

TASK_COLUMNS: list[tuple[str, str]] = [
    ("title", "TEXT"),
    ("description", "TEXT"),
    ("status", "TEXT DEFAULT 'open'"),
    ("priority", "TEXT"),
    ("source", "TEXT"),
    ("source_ref", "TEXT"),
    ("created_at", "TEXT"),
    ("updated_at", "TEXT"),
    ("lease_holder", "TEXT"),
    ("lease_until", "TEXT"),
]


def _migration_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tasks ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " title TEXT NOT NULL DEFAULT '',"
        " description TEXT,"
        " status TEXT NOT NULL DEFAULT 'open',"
        " priority TEXT,"
        " source TEXT,"
        " source_ref TEXT,"
        " created_at TEXT NOT NULL DEFAULT (datetime('now')),"
        " updated_at TEXT NOT NULL DEFAULT (datetime('now')),"
        " lease_holder TEXT,"
        " lease_until TEXT)"
    )
    add_missing_columns(conn, "tasks", TASK_COLUMNS)
    # Partial index: the sweep and the held count only ever look at leased rows.
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_tasks_lease_until ON tasks(lease_until)"
        " WHERE lease_holder IS NOT NULL"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_tasks_source_ref ON tasks(source, source_ref)"
        " WHERE source_ref IS NOT NULL"
    )


MIGRATIONS = [_migration_1]


def format_sql_ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text: str) -> datetime:
    """Parse SQLite ``YYYY-MM-DD HH:MM:SS`` or ISO-8601 (``T``, ``Z``, offsets) as UTC."""
    value = text.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(value)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class NoSuchTask(LookupError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"no such task: {task_id}")
        self.task_id = task_id


class LeaseHeld(Exception):
    """The task is leased by someone else; the message is the protocol's stderr line."""

    def __init__(self, task_id: int, holder: str, until: datetime) -> None:
        self.task_id = task_id
        self.holder = holder
        self.until = until
        super().__init__(f"Task {task_id} held by {holder} until {format_iso(until)}")


class LeaseNotHeld(Exception):
    """extend on a task nobody holds: there is no lease to extend; claim it instead."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        super().__init__(f"Task {task_id} is not claimed; claim it first")


@dataclass(frozen=True)
class TaskRef:
    id: int
    created: bool  # False: an existing task for the same (source, source_ref) was relinked


@dataclass(frozen=True)
class LeaseInfo:
    id: int
    holder: str | None
    lease_until: datetime | None
    expired: bool

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "holder": self.holder,
            "lease_until": format_iso(self.lease_until) if self.lease_until else None,
            "expired": self.expired,
        }


@dataclass(frozen=True)
class ExpiredLease:
    id: int
    title: str
    holder: str
    lease_until: datetime
    raw_lease_until: str  # exactly as stored: the CAS release compares against it
    expired_for_s: float

    def to_json(self, released: bool) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "holder": self.holder,
            "lease_until": format_iso(self.lease_until),
            "expired_for_s": round(self.expired_for_s, 1),
            "released": released,
        }


def holder_of(actor: str, session: str) -> str:
    return f"{actor}:{session}"


class MissionControl:
    """One open connection to mission-control.db. Use ``open()``/``close()`` or ``with``."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = time.time,
        create: bool = True,
        migrate: bool = True,
        busy_timeout_ms: int = 5000,
        attempts: int = 5,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._create = create
        self._migrate = migrate
        self._busy_timeout_ms = busy_timeout_ms
        self._attempts = attempts
        self._conn: sqlite3.Connection | None = None

    # lifecycle -------------------------------------------------------------------------------
    def open(self) -> MissionControl:
        # Idempotent: ``with MissionControl(...).open() as mc`` must not open a second
        # connection (and run the migration check twice) over the first.
        if self._conn is not None:
            return self
        if not self._create and not self.path.exists():
            raise StoreError(f"database not found: {self.path}")

        def _open() -> sqlite3.Connection:
            conn = connect_sync(
                self.path, busy_timeout_ms=self._busy_timeout_ms, create=self._create
            )
            try:
                if self._migrate and schema_version(conn, COMPONENT) < len(MIGRATIONS):
                    apply_migrations(conn, COMPONENT, MIGRATIONS)
                conn.execute("SELECT 1 FROM tasks LIMIT 1").fetchall()
            except BaseException:
                conn.close()
                raise
            return conn

        self._conn = self._retry(_open)
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> MissionControl:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("MissionControl is not open")
        return self._conn

    def _retry(self, fn: Callable[[], _T]) -> _T:
        return retry_busy(fn, attempts=self._attempts)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def now(self) -> datetime:
        """The clock's Unix seconds as a UTC datetime, whole seconds (what the columns hold)."""
        return datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0)

    # tasks -----------------------------------------------------------------------------------
    def create_task(
        self,
        title: str,
        *,
        description: str = "",
        priority: str | None = None,
        source: str | None = None,
        source_ref: str | None = None,
    ) -> TaskRef:
        """Create a task; with (source, source_ref) set, a second call returns the first task."""

        def _do() -> TaskRef:
            now = format_sql_ts(self.now())
            with self._write() as conn:
                if source is not None and source_ref is not None:
                    row = conn.execute(
                        "SELECT id FROM tasks WHERE source = ? AND source_ref = ?"
                        " ORDER BY id LIMIT 1",
                        (source, source_ref),
                    ).fetchone()
                    if row is not None:
                        return TaskRef(int(row[0]), created=False)
                cur = conn.execute(
                    "INSERT INTO tasks(title, description, status, priority, source, source_ref,"
                    " created_at, updated_at) VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
                    (title, description, priority, source, source_ref, now, now),
                )
                return TaskRef(int(cur.lastrowid or 0), created=True)

        return self._retry(_do)

    # leases ----------------------------------------------------------------------------------
    def _lease_row(self, task_id: int) -> tuple[str | None, str | None]:
        row = self.conn.execute(
            "SELECT lease_holder, lease_until FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise NoSuchTask(task_id)
        return row[0], row[1]

    def _info(
        self, task_id: int, holder: str | None, until: str | None, now: datetime | None = None
    ) -> LeaseInfo:
        if not holder:
            return LeaseInfo(task_id, None, None, False)
        try:
            until_dt = parse_ts(until) if until else None
        except ValueError:
            raise StoreError(f"task {task_id}: unreadable lease_until {until!r}") from None
        expired = until_dt is None or until_dt <= (now or self.now())
        return LeaseInfo(task_id, holder, until_dt, expired)

    def status(self, task_id: int) -> LeaseInfo:
        return self._retry(lambda: self._info(task_id, *self._lease_row(task_id)))

    def claim(
        self, task_id: int, actor: str, session: str, ttl_minutes: int = 10, *, enforce: bool = True
    ) -> LeaseInfo:
        """Take the lease if it is free, expired or already ours (CAS). Raises LeaseHeld."""
        holder = holder_of(actor, session)

        def _do() -> LeaseInfo:
            now = self.now()
            until = now + timedelta(minutes=ttl_minutes)
            params = {
                "id": task_id,
                "h": holder,
                "until": format_sql_ts(until),
                "now": format_sql_ts(now),
            }
            guard = (
                ""
                if not enforce
                else " AND (lease_holder IS NULL OR lease_holder = '' OR lease_until IS NULL"
                " OR datetime(lease_until) <= :now OR lease_holder = :h)"
            )
            # The CAS and, when it loses, the read that explains why share one transaction:
            # read separately, the holder could release (or its lease lapse) in between and
            # the refusal would have no holder to name.
            with self._write() as conn:
                cur = conn.execute(
                    "UPDATE tasks SET lease_holder = :h, lease_until = :until, updated_at = :now"
                    " WHERE id = :id" + guard,
                    params,
                )
                if cur.rowcount == 1:
                    return LeaseInfo(task_id, holder, until, False)
                current_holder, current_until = self._lease_row(task_id)  # raises NoSuchTask
            info = self._info(task_id, current_holder, current_until, now)
            raise LeaseHeld(task_id, info.holder or "nobody", info.lease_until or now)

        return self._retry(_do)

    def extend(self, task_id: int, actor: str, session: str, ttl_minutes: int = 10) -> LeaseInfo:
        """Holder only: push lease_until to now + ttl. Raises LeaseHeld, LeaseNotHeld or
        NoSuchTask."""
        holder = holder_of(actor, session)

        def _do() -> LeaseInfo:
            now = self.now()
            until = now + timedelta(minutes=ttl_minutes)
            cur = self.conn.execute(
                "UPDATE tasks SET lease_until = ?, updated_at = ?"
                " WHERE id = ? AND lease_holder = ?",
                (format_sql_ts(until), format_sql_ts(now), task_id, holder),
            )
            if cur.rowcount == 1:
                return LeaseInfo(task_id, holder, until, False)
            current_holder, current_until = self._lease_row(task_id)
            info = self._info(task_id, current_holder, current_until)
            if info.holder is None:
                raise LeaseNotHeld(task_id)
            raise LeaseHeld(task_id, info.holder, info.lease_until or now)

        return self._retry(_do)

    def release(
        self, task_id: int, actor: str = "", session: str = "", *, force: bool = False
    ) -> bool:
        """Clear the lease (holder only unless ``force``). Releasing a free lease is a no-op
        success; returns whether a lease was actually cleared."""
        holder = holder_of(actor, session)

        def _do() -> bool:
            now = format_sql_ts(self.now())
            if force:
                cur = self.conn.execute(
                    "UPDATE tasks SET lease_holder = NULL, lease_until = NULL, updated_at = ?"
                    " WHERE id = ? AND lease_holder IS NOT NULL",
                    (now, task_id),
                )
            else:
                cur = self.conn.execute(
                    "UPDATE tasks SET lease_holder = NULL, lease_until = NULL, updated_at = ?"
                    " WHERE id = ? AND lease_holder = ?",
                    (now, task_id, holder),
                )
            if cur.rowcount == 1:
                return True
            current_holder, current_until = self._lease_row(task_id)
            info = self._info(task_id, current_holder, current_until)
            if info.holder is None:
                return False
            raise LeaseHeld(task_id, info.holder, info.lease_until or self.now())

        return self._retry(_do)

    def lease_counts(self) -> tuple[int, int]:
        """(held and live, held but expired) lease counts."""

        def _do() -> tuple[int, int]:
            now = format_sql_ts(self.now())
            live = self.conn.execute(
                "SELECT count(*) FROM tasks WHERE lease_holder IS NOT NULL AND lease_until > ?",
                (now,),
            ).fetchone()[0]
            expired = self.conn.execute(
                "SELECT count(*) FROM tasks WHERE lease_holder IS NOT NULL AND lease_until <= ?",
                (now,),
            ).fetchone()[0]
            return int(live), int(expired)

        return self._retry(_do)

    def expired_leases(self, limit: int | None = None) -> list[ExpiredLease]:
        """Leases past their expiry, oldest first (uses idx_tasks_lease_until)."""

        def _do() -> list[ExpiredLease]:
            now = self.now()
            sql = (
                "SELECT id, title, lease_holder, lease_until FROM tasks"
                " WHERE lease_holder IS NOT NULL AND lease_until <= ? ORDER BY lease_until"
            )
            params: tuple[object, ...] = (format_sql_ts(now),)
            if limit is not None:
                sql += " LIMIT ?"
                params += (limit,)
            out: list[ExpiredLease] = []
            for task_id, title, holder, until in self.conn.execute(sql, params):
                try:
                    until_dt = parse_ts(until)
                except (ValueError, TypeError):
                    continue  # foreign garbage: cannot be compared, never released by us
                out.append(
                    ExpiredLease(
                        int(task_id),
                        title or "",
                        holder,
                        until_dt,
                        until,
                        (now - until_dt).total_seconds(),
                    )
                )
            return out

        return self._retry(_do)

    def release_expired(self, lease: ExpiredLease) -> bool:
        """CAS release: only if the lease is still exactly the one that was read as expired."""

        def _do() -> bool:
            cur = self.conn.execute(
                "UPDATE tasks SET lease_holder = NULL, lease_until = NULL, updated_at = ?"
                " WHERE id = ? AND lease_holder = ? AND lease_until = ?",
                (format_sql_ts(self.now()), lease.id, lease.holder, lease.raw_lease_until),
            )
            return cur.rowcount == 1

        return self._retry(_do)

"""Mission Control on SQLite (``mission-control.db``, the default store): tasks, idempotent
task creation, and the lease claim protocol.

``mission-control.db`` belongs to Mission Control (mc.js). The fleet creates the ``tasks`` table
only when there is none (``create``, a fresh machine); it alters an existing one only with
``migrate=True``, which only ``fleet db migrate --apply`` (``fleet mc migrate --apply``) passes.
Otherwise it changes no schema and names a missing column. A store that creates tasks
(``creates_tasks``, the email-reactor) checks the ``TASKS_CREATE`` contract at open and whenever
``PRAGMA schema_version`` moves: it fills the columns of the fleet's the table has, plus the
operator's ``task_defaults``, and refuses (``ContractViolation``) a NOT NULL column without
default that neither fills.
Every lease change is a compare-and-set: an UPDATE checked by rowcount, or (claim) a read and
an UPDATE in one IMMEDIATE transaction, so concurrent claimers in any number of processes never
both win. Timestamps are stored as SQLite's ``YYYY-MM-DD HH:MM:SS`` UTC text (so
``lease_until > datetime('now')`` is correct) and shown as ISO-8601 ``...Z``; what other tools
wrote (ISO, epoch) is read through ``shared.timestamps``, never compared as text. Synchronous
stdlib sqlite3 on purpose: the ``fleet mc`` verbs run inside pre-tool hooks and must start
fast; daemons call it through a worker thread. It must never drop or rewrite foreign data.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from shared.clock import Clock
from shared.leases import (
    ExpiredLease,
    LeaseHeld,
    LeaseInfo,
    LeaseNotHeld,
    LeaseUnreadable,
    MissingColumns,
    NoSuchTask,
    RawTs,
    TaskRef,
    TaskView,
    UnreadableLease,
    holder_of,
)
from shared.schema_contract import (
    ContractReport,
    ContractUse,
    ContractViolation,
    check_contract,
    schema_cookie,
)
from shared.shared_tables import TASKS_CREATE
from shared.sqlite import (
    StoreError,
    add_missing_columns,
    apply_migrations,
    connect_sync,
    retry_busy,
    schema_version,
    table_columns,
    transaction_sync,
)
from shared.timestamps import (
    CANONICAL_GLOB,
    TimestampError,
    format_iso,
    format_sql_ts,
    parse_timestamp,
)

__all__ = [
    "ExpiredLease",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseNotHeld",
    "LeaseUnreadable",
    "MissingColumns",
    "MissionControl",
    "NoSuchTask",
    "StoreError",
    "TaskRef",
    "TaskView",
    "UnreadableLease",
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


#: columns every lease verb needs; the rest of the fleet's columns are optional to them
LEASE_COLUMNS = ("id", "lease_holder", "lease_until")


def parse_ts(value: object) -> datetime:
    """Kept for callers of the old name: ``shared.timestamps.parse_timestamp``."""
    return parse_timestamp(value)


def pending_schema_changes(conn: sqlite3.Connection) -> list[str]:
    """What ``migrate`` would change, as SQL-ish lines (for the operator to read first)."""
    if not table_columns(conn, "tasks"):
        return ["CREATE TABLE tasks (...the fleet's columns...)"]
    have = table_columns(conn, "tasks")
    out = [f"ALTER TABLE tasks ADD COLUMN {n} {d}" for n, d in TASK_COLUMNS if n not in have]
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(tasks)")}
    for name in ("idx_tasks_lease_until", "idx_tasks_source_ref"):
        if name not in indexes:
            out.append(f"CREATE INDEX {name}")
    return out


class MissionControl:
    """One open connection to mission-control.db. Use ``open()``/``close()`` or ``with``."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = time.time,
        create: bool = True,
        migrate: bool = False,
        creates_tasks: bool = False,
        task_defaults: Mapping[str, object] | None = None,
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
        self._dropped = False  # the connection was closed after a failed rollback
        self._columns: set[str] = set()
        self._create_use = (
            ContractUse(self.path, TASKS_CREATE, "email-reactor", dict(task_defaults or {}))
            if creates_tasks
            else None
        )
        self.report: ContractReport | None = None
        self._cookie = -1

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
                fresh = self._create and not table_columns(conn, "tasks")
                if (fresh or self._migrate) and schema_version(conn, COMPONENT) < len(MIGRATIONS):
                    apply_migrations(conn, COMPONENT, MIGRATIONS)
                self._columns = table_columns(conn, "tasks")
                if self._create_use is not None:
                    self._check_create(conn)
                if not self._columns:
                    raise MissingColumns(self.path, "tasks", ["*"])
                missing = [c for c in LEASE_COLUMNS if c not in self._columns]
                if missing:
                    raise MissingColumns(self.path, "tasks", missing)
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
            if not self._dropped:
                raise RuntimeError("MissionControl is not open")
            self._dropped = False
            self.open()  # the last connection was left unusable: a fresh one
        assert self._conn is not None
        return self._conn

    def _retry(self, fn: Callable[[], _T]) -> _T:
        return retry_busy(fn, attempts=self._attempts)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with transaction_sync(self.conn, on_broken=self._drop) as conn:
            yield conn

    def _drop(self, conn: sqlite3.Connection) -> None:
        """A failed rollback closed ``conn``: the next use opens a fresh connection."""
        if self._conn is conn:
            self._conn, self._dropped = None, True

    def now(self) -> datetime:
        """The clock's Unix seconds as a UTC datetime, whole seconds (what the columns hold)."""
        return datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0)

    # tasks -----------------------------------------------------------------------------------
    def _check_create(self, conn: sqlite3.Connection) -> ContractReport:
        """Check the TASKS_CREATE contract (raises ContractViolation); remember the cookie."""
        assert self._create_use is not None
        cookie = schema_cookie(conn)
        report = check_contract(conn, self._create_use)
        if not report.ok:
            raise ContractViolation(report)
        self.report, self._cookie = report, cookie
        self._columns = set(report.names)
        return report

    def recheck(self) -> ContractReport | None:
        """For a task-creating store: the new contract report when the schema moved since the
        last check (None: unchanged). Raises ContractViolation when tasks became unusable."""
        if self._create_use is None or schema_cookie(self.conn) == self._cookie:
            return None
        return self._retry(lambda: self._check_create(self.conn))

    def create_task(
        self,
        title: str,
        *,
        description: str = "",
        priority: str | None = None,
        source: str | None = None,
        source_ref: str | None = None,
    ) -> TaskRef:
        """Create a task; with (source, source_ref) set, a second call returns the first task.
        Fills the fleet's columns the table has and the configured ``task_defaults``."""

        def _do() -> TaskRef:
            now = format_sql_ts(self.now())
            if self._create_use is not None and schema_cookie(self.conn) != self._cookie:
                self._check_create(self.conn)
            ours: dict[str, object] = {
                "title": title,
                "description": description,
                "status": "open",
                "priority": priority,
                "source": source,
                "source_ref": source_ref,
                "created_at": now,
                "updated_at": now,
            }
            values = {k: v for k, v in ours.items() if k in self._columns}
            if self._create_use is not None:
                for key, value in self._create_use.defaults.items():
                    if key in self._columns and key not in values:
                        values[key] = value
            names = ", ".join(f'"{k}"' for k in values)
            marks = ", ".join("?" for _ in values)
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
                    f"INSERT INTO tasks({names}) VALUES ({marks})", tuple(values.values())
                )
                return TaskRef(int(cur.lastrowid or 0), created=True)

        return self._retry(_do)

    # leases ----------------------------------------------------------------------------------
    def _touch(self) -> str:
        """``, updated_at = :now`` when the table has that column (mc.js's may not)."""
        return ", updated_at = :now" if "updated_at" in self._columns else ""

    def _lease_row(self, task_id: int) -> tuple[str | None, RawTs | None]:
        row = self.conn.execute(
            "SELECT lease_holder, lease_until FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
        if row is None:
            raise NoSuchTask(task_id)
        return row[0], row[1]

    def _info(
        self,
        task_id: int,
        holder: str | None,
        until: RawTs | None,
        now: datetime | None = None,
    ) -> LeaseInfo:
        if not holder:
            return LeaseInfo(task_id, None, None, False)
        if until is None or until == "":
            # A holder without an expiry: claim treats it as free, so it is expired.
            return LeaseInfo(task_id, holder, None, True, until)
        try:
            until_dt = parse_timestamp(until)
        except TimestampError as exc:
            return LeaseInfo(task_id, holder, None, False, until, exc.reason)
        return LeaseInfo(task_id, holder, until_dt, until_dt <= (now or self.now()), until)

    def _refuse(self, info: LeaseInfo, now: datetime) -> Exception:
        """The error for a lease someone else holds (exit 1), or one nobody can read."""
        assert info.holder is not None
        if info.unreadable is not None:
            return LeaseUnreadable(info.id, info.holder, info.raw_lease_until, info.unreadable)
        return LeaseHeld(info.id, info.holder, info.lease_until or now)

    def status(self, task_id: int) -> LeaseInfo:
        return self._retry(lambda: self._info(task_id, *self._lease_row(task_id)))

    def show(self, task_id: int) -> TaskView:
        """The task as Mehanik reads it; title/status are None where the table lacks them."""
        cols = ", ".join(
            c if c in self._columns else f"NULL AS {c}"
            for c in ("id", "title", "status", "lease_holder", "lease_until")
        )

        def _do() -> TaskView:
            row = self.conn.execute(f"SELECT {cols} FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise NoSuchTask(task_id)
            info = self._info(task_id, row[3], row[4])
            return TaskView(
                int(row[0]), row[1], row[2], row[3], info.lease_until, row[4], info.unreadable
            )

        return self._retry(_do)

    def claim(
        self, task_id: int, actor: str, session: str, ttl_minutes: int = 10, *, enforce: bool = True
    ) -> LeaseInfo:
        """Take the lease if it is free, expired or already ours. Raises LeaseHeld, or
        LeaseUnreadable when another holder's lease_until cannot be read."""
        holder = holder_of(actor, session)

        def _do() -> LeaseInfo:
            now = self.now()
            until = now + timedelta(minutes=ttl_minutes)
            # Read, decide in Python (every timestamp form) and write inside one IMMEDIATE
            # transaction: it holds SQLite's write lock, so no other claimer can change the
            # lease between the read and the UPDATE; the refusal names the holder it read.
            with self._write() as conn:
                info = self._info(task_id, *self._lease_row(task_id), now)  # raises NoSuchTask
                if enforce and info.holder not in (None, holder) and not info.expired:
                    raise self._refuse(info, now)
                conn.execute(
                    "UPDATE tasks SET lease_holder = :h, lease_until = :until"
                    + self._touch()
                    + " WHERE id = :id",
                    {
                        "id": task_id,
                        "h": holder,
                        "until": format_sql_ts(until),
                        "now": format_sql_ts(now),
                    },
                )
            return LeaseInfo(task_id, holder, until, False, format_sql_ts(until))

        return self._retry(_do)

    def extend(self, task_id: int, actor: str, session: str, ttl_minutes: int = 10) -> LeaseInfo:
        """Holder only: push lease_until to now + ttl. Raises LeaseHeld, LeaseNotHeld,
        LeaseUnreadable or NoSuchTask."""
        holder = holder_of(actor, session)

        def _do() -> LeaseInfo:
            now = self.now()
            until = now + timedelta(minutes=ttl_minutes)
            cur = self.conn.execute(
                "UPDATE tasks SET lease_until = :until"
                + self._touch()
                + " WHERE id = :id AND lease_holder = :h",
                {
                    "until": format_sql_ts(until),
                    "now": format_sql_ts(now),
                    "id": task_id,
                    "h": holder,
                },
            )
            if cur.rowcount == 1:
                return LeaseInfo(task_id, holder, until, False, format_sql_ts(until))
            info = self._info(task_id, *self._lease_row(task_id), now)
            if info.holder is None:
                raise LeaseNotHeld(task_id)
            raise self._refuse(info, now)

        return self._retry(_do)

    def release(
        self, task_id: int, actor: str = "", session: str = "", *, force: bool = False
    ) -> bool:
        """Clear the lease (holder only unless ``force``). Releasing a free lease is a no-op
        success; returns whether a lease was actually cleared."""
        holder = holder_of(actor, session)

        def _do() -> bool:
            now = self.now()
            guard = "lease_holder IS NOT NULL" if force else "lease_holder = :h"
            cur = self.conn.execute(
                "UPDATE tasks SET lease_holder = NULL, lease_until = NULL"
                + self._touch()
                + " WHERE id = :id AND "
                + guard,
                {"now": format_sql_ts(now), "id": task_id, "h": holder},
            )
            if cur.rowcount == 1:
                return True
            info = self._info(task_id, *self._lease_row(task_id), now)
            if info.holder is None:
                return False
            raise self._refuse(info, now)

        return self._retry(_do)

    # sweep -----------------------------------------------------------------------------------
    # Leases in the canonical form compare correctly as text, so they are found through
    # idx_tasks_lease_until; every other form (ISO with T, offsets, epoch numbers) compares
    # wrongly as text ('T' > ' ', INTEGER < TEXT) and is read in Python instead. That second
    # scan touches only non-canonical leased rows, which the fleet itself never writes.
    _HELD = "lease_holder IS NOT NULL AND lease_holder != ''"
    _CANONICAL = f"typeof(lease_until) = 'text' AND lease_until GLOB '{CANONICAL_GLOB}'"

    def _foreign_leases(self) -> list[tuple[int, str, str, RawTs]]:
        title = "title" if "title" in self._columns else "NULL"
        return [
            (int(r[0]), r[1] or "", r[2], r[3])
            for r in self.conn.execute(
                f"SELECT id, {title}, lease_holder, lease_until FROM tasks WHERE {self._HELD}"
                f" AND lease_until IS NOT NULL AND lease_until != ''"
                f" AND NOT ({self._CANONICAL})"
            )
        ]

    def lease_counts(self) -> tuple[int, int]:
        """(held and live, held but expired) lease counts; unreadable leases are in neither
        (``unreadable_leases`` lists them)."""

        def _do() -> tuple[int, int]:
            now = self.now()
            counts = [
                int(
                    self.conn.execute(
                        f"SELECT count(*) FROM tasks WHERE {self._HELD} AND lease_until {op} ?"
                        f" AND {self._CANONICAL}",
                        (format_sql_ts(now),),
                    ).fetchone()[0]
                )
                for op in (">", "<=")
            ]
            live, expired = counts
            for _id, _title, _holder, raw in self._foreign_leases():
                try:
                    until = parse_timestamp(raw)
                except TimestampError:
                    continue
                if until > now:
                    live += 1
                else:
                    expired += 1
            return int(live), int(expired)

        return self._retry(_do)

    def expired_leases(self, limit: int | None = None) -> list[ExpiredLease]:
        """Leases past their expiry, oldest first (canonical rows through
        idx_tasks_lease_until, other forms parsed here)."""

        def _do() -> list[ExpiredLease]:
            now = self.now()
            sql = (
                f"SELECT id, {'title' if 'title' in self._columns else 'NULL'}, lease_holder,"
                f" lease_until FROM tasks WHERE {self._HELD} AND lease_until <= ?"
                f" AND {self._CANONICAL} ORDER BY lease_until"
            )
            params: tuple[object, ...] = (format_sql_ts(now),)
            if limit is not None:
                sql += " LIMIT ?"
                params += (limit,)
            rows = [
                (int(r[0]), r[1] or "", r[2], r[3]) for r in self.conn.execute(sql, params)
            ] + self._foreign_leases()
            out: list[ExpiredLease] = []
            for task_id, title, holder, raw in rows:
                try:
                    until = parse_timestamp(raw)
                except TimestampError:
                    continue  # reported by unreadable_leases, never released
                if until <= now:
                    out.append(
                        ExpiredLease(
                            task_id, title, holder, until, raw, (now - until).total_seconds()
                        )
                    )
            out.sort(key=lambda lease: (lease.lease_until, lease.id))
            return out if limit is None else out[:limit]

        return self._retry(_do)

    def unreadable_leases(self) -> list[UnreadableLease]:
        """Held leases whose lease_until cannot be read: nobody can tell if they are live."""

        def _do() -> list[UnreadableLease]:
            out = []
            for task_id, title, holder, raw in self._foreign_leases():
                try:
                    parse_timestamp(raw)
                except TimestampError as exc:
                    out.append(UnreadableLease(task_id, title, holder, raw, exc.reason))
            return out

        return self._retry(_do)

    def release_expired(self, lease: ExpiredLease) -> bool:
        """CAS release: only if the lease is still exactly the one that was read as expired."""

        def _do() -> bool:
            cur = self.conn.execute(
                "UPDATE tasks SET lease_holder = NULL, lease_until = NULL"
                + self._touch()
                + " WHERE id = :id AND lease_holder = :h AND lease_until = :raw",
                {
                    "now": format_sql_ts(self.now()),
                    "id": lease.id,
                    "h": lease.holder,
                    "raw": lease.raw_lease_until,
                },
            )
            return cur.rowcount == 1

        return self._retry(_do)

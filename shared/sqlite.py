"""SQLite helpers: WAL connections with busy_timeout, bounded retry on SQLITE_BUSY, and the
``fleet_schema`` table that versions what the fleet owns inside any database.

Two flavours over the same pragmas: ``connect_sync`` (stdlib sqlite3, for CLI paths that must
start fast and for short-lived migration runs) and ``connect`` (aiosqlite, for daemons). The
fleet only ever ADDs its own columns, tables and indexes; nothing here drops or rewrites what
another program owns.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from shared.backoff import backoff_delay

__all__ = [
    "AsyncDatabase",
    "Migration",
    "StoreError",
    "apply_migrations",
    "connect",
    "connect_sync",
    "is_busy",
    "retry_busy",
    "retry_busy_async",
]

T = TypeVar("T")

# A migration is SQL text or a callable given the open connection (inside the transaction).
Migration = str | Callable[[sqlite3.Connection], None]

DEFAULT_BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """A database could not be used after bounded retries (locked, unreadable, corrupt)."""


def is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _prepare_parent(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)


def connect_sync(
    path: str | os.PathLike[str],
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    create: bool = True,
    wal: bool = True,
    readonly: bool = False,
) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with WAL and busy_timeout set. ``readonly`` opens it
    without any write (no WAL switch), for --dry-run and inspection."""
    p = Path(path)
    if readonly:
        create = wal = False
        uri = f"file:{p}?mode=ro"
    elif create:
        _prepare_parent(p)
        uri = f"file:{p}?mode=rwc"
    else:
        uri = f"file:{p}?mode=rw"
    conn = sqlite3.connect(
        uri,
        uri=True,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if wal:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    if create and p.exists():
        try:
            if p.stat().st_size == 0 or (p.stat().st_mode & 0o077):
                os.chmod(p, 0o600)
        except OSError:
            pass
    return conn


async def connect(
    path: str | os.PathLike[str],
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    create: bool = True,
    readonly: bool = False,
) -> aiosqlite.Connection:
    """aiosqlite connection with the same pragmas as ``connect_sync`` (autocommit mode)."""
    p = Path(path)
    if readonly:
        create = False
    if create:
        await asyncio.to_thread(_prepare_parent, p)
    uri = f"file:{p}?mode={'ro' if readonly else 'rwc' if create else 'rw'}"
    conn = await aiosqlite.connect(
        uri, uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None
    )
    try:
        await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not readonly:
            async with conn.execute("PRAGMA journal_mode") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        await conn.close()
        raise
    if create:
        await asyncio.to_thread(_make_private, p)
    return conn


def _make_private(path: Path) -> None:
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except OSError:
        pass


def _busy_delay(attempt: int, base_delay_s: float) -> float:
    # Doubling from base_delay_s, uncapped (attempts bound it), times 0.5..1.5.
    return backoff_delay(attempt, base_delay_s, math.inf, jitter=0.5)


def retry_busy(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``; on SQLITE_BUSY/locked retry with jittered backoff, then raise StoreError."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts:
                raise StoreError(f"database unavailable after {attempt} attempt(s): {exc}") from exc
            sleep(_busy_delay(attempt, base_delay_s))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database error: {exc}") from exc
    raise AssertionError("unreachable")


async def retry_busy_async(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.05,
) -> T:
    """Async ``retry_busy``: the sleep between attempts yields to the event loop."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts:
                raise StoreError(f"database unavailable after {attempt} attempt(s): {exc}") from exc
            await asyncio.sleep(_busy_delay(attempt, base_delay_s))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"database error: {exc}") from exc
    raise AssertionError("unreachable")


SCHEMA_TABLE_SQL = (
    "CREATE TABLE IF NOT EXISTS fleet_schema ("
    " component TEXT PRIMARY KEY, version INTEGER NOT NULL, updated_at TEXT NOT NULL)"
)


def schema_version(conn: sqlite3.Connection, component: str) -> int:
    conn.execute(SCHEMA_TABLE_SQL)
    row = conn.execute(
        "SELECT version FROM fleet_schema WHERE component = ?", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def apply_migrations(
    conn: sqlite3.Connection, component: str, migrations: Sequence[Migration]
) -> int:
    """Run the forward migrations ``component`` has not run yet; return the new version.

    Each migration runs in its own IMMEDIATE transaction together with the version bump, so a
    crash leaves the database at a whole version. Two processes migrating at once serialize on
    the write lock and the loser finds nothing left to do.
    """
    conn.execute(SCHEMA_TABLE_SQL)
    target = len(migrations)
    for index in range(target):
        version = index + 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn, component)
            if current >= version:
                conn.execute("COMMIT")
                continue
            step = migrations[index]
            if callable(step):
                step(conn)
            else:
                for statement in _split_sql(step):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO fleet_schema(component, version, updated_at)"
                " VALUES (?, ?, datetime('now'))"
                " ON CONFLICT(component) DO UPDATE SET version = excluded.version,"
                " updated_at = excluded.updated_at",
                (component, version),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return target


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def add_missing_columns(
    conn: sqlite3.Connection, table: str, columns: Sequence[tuple[str, str]]
) -> list[str]:
    """ALTER TABLE ADD COLUMN for each (name, decl) the table lacks; return what was added."""
    have = table_columns(conn, table)
    added = []
    for name, decl in columns:
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            added.append(name)
    return added


class AsyncDatabase:
    """One aiosqlite connection with the fleet's pragmas and bounded busy retry. Adapters that
    own a database (the outbox, the inbox store) subclass it and add their queries; they open
    it with ``_connect`` after their migrations and close it with ``close`` (idempotent)."""

    label = "database"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        attempts: int = 5,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._attempts = attempts
        self._db: aiosqlite.Connection | None = None

    async def _connect(self, *, readonly: bool = False) -> None:
        self._db = await connect(
            self.path, busy_timeout_ms=self._busy_timeout_ms, readonly=readonly
        )

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.label} is not open")
        return self._db

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (autocommit) and return its rowcount."""

        async def _do() -> int:
            cur = await self.db.execute(sql, params)
            return int(cur.rowcount)

        return await retry_busy_async(_do, attempts=self._attempts)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async def _do() -> list[Any]:
            async with self.db.execute(sql, params) as cur:
                return list(await cur.fetchall())

        return await retry_busy_async(_do, attempts=self._attempts)

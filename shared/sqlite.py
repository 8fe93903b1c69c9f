"""SQLite helpers: WAL connections with busy_timeout, bounded retry on SQLITE_BUSY, the one
transaction helper every write path uses, and the ``fleet_schema`` table that versions what
the fleet owns inside any database.

Two flavours over the same pragmas: ``connect_sync`` (stdlib sqlite3, for CLI paths that must
start fast and for short-lived migration runs) and ``connect`` (aiosqlite, for daemons); and
two of the transaction, ``transaction_sync`` and ``transaction``. A transaction's BEGIN is
inside its protected block, its ROLLBACK runs on any exit but a clean one (cancellation
included, to the end: ``shared.shield.complete``), and a connection still inside a
transaction after that is closed, never reused. The fleet only ever ADDs its own columns,
tables and indexes; nothing here drops or rewrites what another program owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from shared.backoff import backoff_delay
from shared.shield import complete

__all__ = [
    "AsyncDatabase",
    "Migration",
    "StoreError",
    "apply_migrations",
    "connect",
    "connect_sync",
    "is_busy",
    "is_store_error",
    "retry_busy",
    "retry_busy_async",
    "store_errors_in",
    "transaction",
    "transaction_sync",
]

T = TypeVar("T")

# A migration is SQL text or a callable given the open connection (inside the transaction).
Migration = str | Callable[[sqlite3.Connection], None]

DEFAULT_BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """A database could not be used after bounded retries (locked, unreadable, corrupt).
    ``db`` names the database file when known (the ``db`` label of
    ``fleet_store_errors_total``)."""

    def __init__(self, message: str, *, db: str = "") -> None:
        super().__init__(message)
        self.db = db


def is_store_error(exc: BaseException) -> bool:
    """A database that could not be used (``StoreError`` or a raw ``sqlite3.Error``): a
    failed cycle or sender step to back off from, never a reason for a task to end."""
    return isinstance(exc, StoreError | sqlite3.Error)


def store_errors_in(exc: BaseException) -> list[str]:
    """The database file named by each store error in ``exc`` (itself, or inside exception
    groups, as a TaskGroup raises them); "" where the file is not known."""
    if isinstance(exc, BaseExceptionGroup):
        return [db for inner in exc.exceptions for db in store_errors_in(inner)]
    if isinstance(exc, StoreError):
        return [exc.db]
    return [""] if isinstance(exc, sqlite3.Error) else []


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


def _gave_up(exc: sqlite3.Error, attempt: int, db: str) -> StoreError:
    where = f"{db}: " if db else ""
    if isinstance(exc, sqlite3.OperationalError):
        what = f"database unavailable after {attempt} attempt(s): {exc}"
    else:
        what = f"database error: {exc}"
    return StoreError(where + what, db=db)


def retry_busy(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
    db: str = "",
) -> T:
    """Run ``fn``; on SQLITE_BUSY/locked retry with jittered backoff, then raise StoreError
    (naming ``db``, the database file, when given)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts:
                raise _gave_up(exc, attempt, db) from exc
            sleep(_busy_delay(attempt, base_delay_s))
        except sqlite3.DatabaseError as exc:
            raise _gave_up(exc, attempt, db) from exc
    raise AssertionError("unreachable")


async def retry_busy_async(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.05,
    db: str = "",
) -> T:
    """Async ``retry_busy``: the sleep between attempts yields to the event loop."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts:
                raise _gave_up(exc, attempt, db) from exc
            await asyncio.sleep(_busy_delay(attempt, base_delay_s))
        except sqlite3.DatabaseError as exc:
            raise _gave_up(exc, attempt, db) from exc
    raise AssertionError("unreachable")


# transactions ----------------------------------------------------------------------------
TransactionMode = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"]


def _rollback_sync(conn: sqlite3.Connection) -> bool:
    """Roll back whatever ``conn`` has open; True if it is usable afterwards (open and
    outside any transaction)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.ProgrammingError:
        return False  # closed
    except sqlite3.Error:
        pass  # judged below: still inside the transaction or not
    try:
        return not conn.in_transaction
    except sqlite3.ProgrammingError:
        return False


@contextlib.contextmanager
def transaction_sync(
    conn: sqlite3.Connection,
    *,
    mode: TransactionMode = "IMMEDIATE",
    on_broken: Callable[[sqlite3.Connection], None] | None = None,
) -> Iterator[sqlite3.Connection]:
    """``BEGIN <mode>`` ... ``COMMIT`` on an autocommit connection (``connect_sync``), with
    ROLLBACK on any exception, the BEGIN's own included (a busy BEGIN propagates as it is:
    there is nothing to roll back, and nothing hides the busy error). If the connection is
    still inside a transaction afterwards (the ROLLBACK failed), it is closed, so the lock it
    holds is released and it is never reused; ``on_broken(conn)`` then lets its owner open a
    fresh one."""
    try:
        conn.execute(f"BEGIN {mode}")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if not _rollback_sync(conn):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            if on_broken is not None:
                on_broken(conn)
        raise


async def _rollback(conn: aiosqlite.Connection) -> bool:
    """Roll back ``conn``; True if it is usable afterwards. The ROLLBACK is queued behind
    every operation already on the connection's thread (a BEGIN or COMMIT whose caller was
    cancelled still runs), so ``in_transaction`` is read once they are all done."""
    try:
        await conn.execute("ROLLBACK")
    except ValueError:
        return False  # the connection is closed
    except sqlite3.Error:
        pass  # "no transaction is active" (BEGIN failed or never ran), or a failed rollback
    try:
        return not conn.in_transaction
    except ValueError:
        return False


async def _abort(
    conn: aiosqlite.Connection,
    on_broken: Callable[[aiosqlite.Connection], Awaitable[None]] | None,
) -> None:
    if await _rollback(conn):
        return
    if on_broken is not None:
        await on_broken(conn)
    else:
        with contextlib.suppress(Exception):
            await conn.close()


@contextlib.asynccontextmanager
async def transaction(
    conn: aiosqlite.Connection,
    *,
    mode: TransactionMode = "IMMEDIATE",
    on_broken: Callable[[aiosqlite.Connection], Awaitable[None]] | None = None,
) -> AsyncIterator[aiosqlite.Connection]:
    """``transaction_sync`` for an aiosqlite connection (``connect``). On any exit but a clean
    one, cancellation at any await point included, the ROLLBACK runs to its end before the
    exception goes on (``shared.shield.complete``), so the database is never left locked by a
    cancelled write. A connection still inside a transaction after that is handed to
    ``on_broken`` (which must close it; the owner reopens) or, without one, closed."""
    try:
        await conn.execute(f"BEGIN {mode}")
        yield conn
        await conn.execute("COMMIT")
    except BaseException:
        await complete(_abort(conn, on_broken))
        raise


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
    the write lock and the loser finds nothing left to do. A database already at the version
    is only read: opening it needs no write lock (a daemon starting while another program
    holds one is not held up).
    """
    conn.execute(SCHEMA_TABLE_SQL)
    target = len(migrations)
    if schema_version(conn, component) >= target:
        return target
    for index in range(target):
        version = index + 1
        with transaction_sync(conn):
            if schema_version(conn, component) >= version:
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
    it with ``_connect`` after their migrations and close it with ``close`` (idempotent).

    Writes go through ``_execute`` (one autocommit statement) or ``_transaction`` (a body run
    inside ``transaction``); both are serialized on this connection by one lock, so a write
    never lands inside another task's transaction (and is never rolled back with it). A
    connection a failed rollback left inside its transaction is closed; the next use opens a
    fresh one (``_prepare`` first, functions registered with ``_create_function`` again), as
    does the next use after an open that failed. Either raises StoreError while it cannot.
    What was set up on the connection (``_create_function``, ``_set_text_factory``) is set up
    again on every new one."""

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
        self._wanted = False  # opened and not closed: (re)connect on use
        self._readonly = False
        self._functions: list[tuple[str, int, Callable[..., Any], bool]] = []
        self._text_factory: Callable[[bytes], Any] | None = None
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()

    async def _prepare(self) -> None:
        """Run before every (re)connect, off the event loop; the outbox brings its schema up
        to date here."""

    async def _connect(self, *, readonly: bool = False) -> None:
        self._wanted, self._readonly = True, readonly
        await self._open_connection()

    async def _open_connection(self) -> aiosqlite.Connection:
        await self._prepare()
        db = await connect(
            self.path, busy_timeout_ms=self._busy_timeout_ms, readonly=self._readonly
        )
        if self._text_factory is not None:
            db.text_factory = self._text_factory
        try:
            for name, nargs, fn, deterministic in self._functions:
                await db.create_function(name, nargs, fn, deterministic=deterministic)
        except BaseException:
            await complete(db.close())
            raise
        self._db = db
        return db

    async def _create_function(
        self, name: str, nargs: int, fn: Callable[..., Any], *, deterministic: bool = False
    ) -> None:
        """Register an SQL function on the connection, and on every one opened after it."""
        self._functions.append((name, nargs, fn, deterministic))
        await self.db.create_function(name, nargs, fn, deterministic=deterministic)

    def _set_text_factory(self, factory: Callable[[bytes], Any]) -> None:
        """Decode TEXT with ``factory`` on the connection, and on every one opened after it."""
        self._text_factory = factory
        self.db.text_factory = factory

    async def close(self) -> None:
        self._wanted = False
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.label} is not open")
        return self._db

    async def _connection(self) -> aiosqlite.Connection:
        """The open connection, opening a fresh one if the last was dropped or never came up
        (StoreError while that fails)."""
        if self._db is not None:
            return self._db
        if not self._wanted:
            raise RuntimeError(f"{self.label} is not open")
        async with self._open_lock:
            if self._db is not None:
                return self._db
            try:
                return await self._open_connection()
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(
                    f"{self.path.name}: cannot open {self.label}: {exc}", db=self.path.name
                ) from exc

    async def _drop(self, conn: aiosqlite.Connection) -> None:
        """``transaction``'s ``on_broken``: close a connection left inside a transaction (that
        rolls it back and releases the lock); the next use opens a fresh one."""
        if self._db is conn:
            self._db = None
        from shared.logging import get_logger

        get_logger().warning(
            "database connection left inside a transaction; closed, reopening on next use",
            db=self.path.name,
        )
        with contextlib.suppress(Exception):
            await conn.close()

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement (autocommit) and return its rowcount."""

        async def _do() -> int:
            async with self._write_lock:
                cur = await (await self._connection()).execute(sql, params)
                return int(cur.rowcount)

        return await retry_busy_async(_do, attempts=self._attempts, db=self.path.name)

    async def _transaction(
        self,
        body: Callable[[aiosqlite.Connection], Awaitable[T]],
        *,
        attempts: int | None = None,
    ) -> T:
        """``body(conn)`` inside one IMMEDIATE ``transaction``, serialized with this store's
        other writes, retried whole on a busy database; StoreError after bounded retries."""

        async def _do() -> T:
            async with self._write_lock:
                conn = await self._connection()
                async with transaction(conn, on_broken=self._drop):
                    return await body(conn)

        return await retry_busy_async(_do, attempts=attempts or self._attempts, db=self.path.name)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async def _do() -> list[Any]:
            async with (await self._connection()).execute(sql, params) as cur:
                return list(await cur.fetchall())

        return await retry_busy_async(_do, attempts=self._attempts, db=self.path.name)

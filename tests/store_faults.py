"""Fault injection for the fleet's databases (helpers, no tests): cancel the calling task at its
Nth round trip to the database, or make one statement fail, and check from another connection
that the database is not left locked; ``LockHolder`` (system tests only) holds a database's
write lock from another process.

Every aiosqlite operation (``execute``, a cursor's ``fetchone``/``fetchall``/``close``,
``executemany``, ``commit``) is one round trip through ``Connection._execute``: the function is
queued for the connection's thread and the caller awaits its future. So wrapping that method
on one connection visits every await point of a write, in order.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

__all__ = [
    "CancelAt",
    "FailStatement",
    "LockHolder",
    "Submitted",
    "is_write_locked",
    "statement_of",
]


def statement_of(args: tuple[Any, ...]) -> str:
    """The SQL text of a queued ``execute``/``executemany`` call ("" for other operations)."""
    return args[0].strip().upper() if args and isinstance(args[0], str) else ""


class CancelAt:
    """Cancels the task making the ``n``-th round trip on ``conn``.

    ``queued=True``: the operation reaches the connection's thread first and the task is
    cancelled while it awaits the result, so the statement still runs after the caller saw
    CancelledError (what a cycle timeout does to a task waiting in ``BEGIN`` on a busy
    database). ``queued=False``: CancelledError is raised before the operation is queued.
    """

    def __init__(self, conn: aiosqlite.Connection, n: int, *, queued: bool) -> None:
        self.conn, self.n, self.queued = conn, n, queued
        self.calls = 0
        self.fired = False
        self.statement = ""
        self._real: Callable[..., Awaitable[Any]] = conn._execute
        conn._execute = self  # type: ignore[method-assign]

    def remove(self) -> None:
        self.conn._execute = self._real  # type: ignore[method-assign]

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls != self.n or self.fired:
            return await self._real(fn, *args, **kwargs)
        self.fired = True
        self.statement = statement_of(args) or getattr(fn, "__name__", "?")
        if not self.queued:
            raise asyncio.CancelledError()
        work = asyncio.ensure_future(self._real(fn, *args, **kwargs))
        await asyncio.sleep(0)  # ``work`` has put the call on the connection's queue
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        return await work  # cancelled here; the statement runs on in the thread


class FailStatement:
    """Makes every queued statement starting with ``prefix`` raise ``error`` instead of
    running (``ROLLBACK``: a rollback that fails, leaving the transaction open)."""

    def __init__(self, conn: aiosqlite.Connection, prefix: str, error: BaseException) -> None:
        self.conn, self.prefix, self.error = conn, prefix.upper(), error
        self.hits = 0
        self._real: Callable[..., Awaitable[Any]] = conn._execute
        conn._execute = self  # type: ignore[method-assign]

    def remove(self) -> None:
        self.conn._execute = self._real  # type: ignore[method-assign]

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if statement_of(args).startswith(self.prefix):
            self.hits += 1
            raise self.error
        return await self._real(fn, *args, **kwargs)


class Submitted:
    """Sets ``event`` once a statement starting with ``prefix`` has been queued on ``conn``
    (the caller is then waiting for the connection's thread to run it)."""

    def __init__(self, conn: aiosqlite.Connection, prefix: str) -> None:
        self.conn, self.prefix = conn, prefix.upper()
        self.event = asyncio.Event()
        self._real: Callable[..., Awaitable[Any]] = conn._execute
        conn._execute = self  # type: ignore[method-assign]

    def remove(self) -> None:
        self.conn._execute = self._real  # type: ignore[method-assign]

    async def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        work = asyncio.ensure_future(self._real(fn, *args, **kwargs))
        if statement_of(args).startswith(self.prefix):
            await asyncio.sleep(0)  # ``work`` has queued it
            self.event.set()
        return await work


def is_write_locked(path: Path) -> bool:
    """True if another connection cannot take the write lock on ``path`` right now."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    else:
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


class LockHolder:
    """Another process (a real python) holding the write lock on ``path`` (``BEGIN EXCLUSIVE``)
    from ``__enter__`` until ``release()``; system tests only. Creates the file if missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None
        self.locked_at = 0.0

    def __enter__(self) -> LockHolder:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"
        self.locked_at = time.monotonic()
        assert is_write_locked(self.path)
        return self

    def held_for(self) -> float:
        return time.monotonic() - self.locked_at

    def release(self, *, after_s: float = 0.0) -> None:
        """Let go once the lock has been held ``after_s`` seconds in all (the scenario's
        duration, not a wait for anything)."""
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        assert self.proc.poll() is None, "the lock holder died: the lock was not held"
        remaining = after_s - self.held_for()
        if remaining > 0:
            time.sleep(remaining)
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        self.proc.wait(timeout=30)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

"""The one transaction helper (``shared.sqlite.transaction`` / ``transaction_sync``): BEGIN
inside the protected block, ROLLBACK on any exit, a busy BEGIN reported as such, a connection
that stays inside its transaction closed (its owner reopens), and no write path around it.
Real SQLite files; faults from a connection subclass or ``tests/store_faults.py``."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shared.mission_control import MissionControl, NoSuchTask
from shared.sqlite import (
    apply_migrations,
    connect,
    connect_sync,
    transaction,
    transaction_sync,
)
from tests.store_faults import FailStatement, is_write_locked

REPO = Path(__file__).resolve().parents[2]


class RollbackFails(sqlite3.Connection):
    """A connection whose ROLLBACK fails (the disk went away under it, say)."""

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.strip().upper().startswith("ROLLBACK"):
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


def table(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    conn.close()


def count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        n = int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    conn.close()
    return n


def test_sync_commits_or_rolls_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    table(path)
    conn = connect_sync(path)
    with transaction_sync(conn):
        conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(KeyError), transaction_sync(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        raise KeyError("boom")
    assert not conn.in_transaction and not is_write_locked(path)
    assert count(path) == 1
    conn.close()


def test_sync_busy_begin_is_reported_as_busy(tmp_path: Path) -> None:
    """BEGIN inside the protected block must not turn "locked" into "cannot rollback"."""
    path = tmp_path / "x.db"
    table(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    conn = connect_sync(path, busy_timeout_ms=10)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"), transaction_sync(conn):
            raise AssertionError("the body must not run without the lock")
        assert not conn.in_transaction
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        conn.close()


def test_sync_failed_rollback_closes_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    table(path)
    conn = sqlite3.connect(path, isolation_level=None, factory=RollbackFails)
    dropped: list[sqlite3.Connection] = []
    with pytest.raises(ZeroDivisionError), transaction_sync(conn, on_broken=dropped.append):
        conn.execute("INSERT INTO t VALUES (1)")
        _ = 1 / 0
    assert dropped == [conn]
    assert not is_write_locked(path), "the lock of the stuck transaction was released"
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")  # closed, never reused
    assert count(path) == 0


def test_mission_control_reopens_after_a_failed_rollback(tmp_path: Path) -> None:
    path = tmp_path / "mission-control.db"
    with MissionControl(path, clock=lambda: 1_750_000_000.0) as mc:
        task = mc.create_task("first").id
        stuck = sqlite3.connect(path, isolation_level=None, factory=RollbackFails)
        mc._conn = stuck
        with pytest.raises(NoSuchTask):
            mc.claim(999999, "pi", "s1")  # fails inside the transaction
        assert not is_write_locked(path)
        assert mc.conn is not stuck
        assert mc.claim(task, "pi", "s1").holder == "pi:s1"


def test_migrations_of_an_up_to_date_database_need_no_write_lock(tmp_path: Path) -> None:
    """A daemon starting while another program holds the write lock opens its (migrated)
    database at once instead of failing its start-up."""
    path = tmp_path / "m.db"
    steps = ["CREATE TABLE t (x INTEGER)", "CREATE INDEX i_t ON t(x)"]
    conn = connect_sync(path)
    assert apply_migrations(conn, "comp", steps) == 2
    conn.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        again = connect_sync(path, busy_timeout_ms=10)
        assert apply_migrations(again, "comp", steps) == 2
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            apply_migrations(again, "comp", [*steps, "CREATE TABLE u (y INTEGER)"])
        assert not again.in_transaction
        again.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_async_rolls_back_on_error_and_on_cancel(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    table(path)
    conn = await connect(path)
    try:
        with pytest.raises(KeyError):
            async with transaction(conn):
                await conn.execute("INSERT INTO t VALUES (1)")
                raise KeyError("boom")
        entered = asyncio.Event()

        async def stuck() -> None:
            async with transaction(conn):
                await conn.execute("INSERT INTO t VALUES (2)")
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(stuck())
        await entered.wait()
        task.cancel()
        await asyncio.wait({task})
        assert task.cancelled() and not conn.in_transaction and not is_write_locked(path)
        async with transaction(conn):
            await conn.execute("INSERT INTO t VALUES (3)")
        assert count(path) == 1
    finally:
        await conn.close()


async def test_async_failed_rollback_hands_the_connection_over(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    table(path)
    conn = await connect(path)
    fault = FailStatement(conn, "ROLLBACK", sqlite3.OperationalError("disk I/O error"))
    broken: list[object] = []

    async def on_broken(c: object) -> None:
        broken.append(c)
        fault.remove()
        await conn.close()

    with pytest.raises(KeyError):
        async with transaction(conn, on_broken=on_broken):
            await conn.execute("INSERT INTO t VALUES (1)")
            raise KeyError("boom")
    assert broken == [conn] and not is_write_locked(path) and count(path) == 0


def test_every_transaction_goes_through_the_helper() -> None:
    """No write path opens a transaction of its own (the pattern that wedged the inbox)."""
    pattern = re.compile(r"""["'](BEGIN|ROLLBACK|COMMIT)\b""")
    offenders = []
    for top in ("shared", "daemons", "fleet"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path == REPO / "shared" / "sqlite.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == [], "use shared.sqlite.transaction(_sync):\n" + "\n".join(offenders)

"""SQLite helpers: pragmas, fleet_schema migrations (idempotent, concurrent, crash-safe),
adding only missing columns, and bounded retry on a locked database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from shared.sqlite import (
    StoreError,
    add_missing_columns,
    apply_migrations,
    connect,
    connect_sync,
    retry_busy,
    schema_version,
)


def test_connect_sets_wal_busy_timeout_and_private_mode(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "d" / "x.db", busy_timeout_ms=1234)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    conn.close()
    assert (tmp_path / "d" / "x.db").stat().st_mode & 0o777 == 0o600


def test_connect_without_create_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        connect_sync(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


async def test_async_connect_same_pragmas(tmp_path: Path) -> None:
    db = await connect(tmp_path / "a.db")
    async with db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"
    await db.close()


def test_migrations_run_once_and_forward(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "m.db")
    v1 = ["CREATE TABLE t (id INTEGER PRIMARY KEY)"]
    assert apply_migrations(conn, "comp", v1) == 1
    assert apply_migrations(conn, "comp", v1) == 1  # nothing re-run
    v2 = [*v1, "ALTER TABLE t ADD COLUMN name TEXT; CREATE INDEX i_t_name ON t(name)"]
    assert apply_migrations(conn, "comp", v2) == 2
    assert schema_version(conn, "comp") == 2
    assert schema_version(conn, "other") == 0


def test_failed_migration_rolls_back_whole(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "m.db")
    bad = ["CREATE TABLE t (id INTEGER); CREATE TABLE t (id INTEGER)"]
    with pytest.raises(sqlite3.OperationalError):
        apply_migrations(conn, "comp", bad)
    assert schema_version(conn, "comp") == 0
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone() is None


def test_concurrent_migrations_serialize(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    connect_sync(path).close()
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            conn = connect_sync(path)
            apply_migrations(conn, "comp", ["CREATE TABLE t (id INTEGER)"])
            conn.close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert schema_version(connect_sync(path), "comp") == 1


def test_add_missing_columns_keeps_foreign_data(tmp_path: Path) -> None:
    conn = connect_sync(tmp_path / "f.db")
    conn.execute("CREATE TABLE emails (id INTEGER PRIMARY KEY, subject TEXT, extra BLOB)")
    conn.execute("INSERT INTO emails VALUES (1, 'hello', x'00ff')")
    added = add_missing_columns(conn, "emails", [("subject", "TEXT"), ("tier", "INTEGER")])
    assert added == ["tier"]
    assert conn.execute("SELECT id, subject, extra, tier FROM emails").fetchall() == [
        (1, "hello", b"\x00\xff", None)
    ]


def test_retry_busy_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    conn = sqlite3.connect(path, timeout=0.01, isolation_level=None)
    sleeps: list[float] = []
    with pytest.raises(StoreError, match="after 4 attempt"):
        retry_busy(
            lambda: conn.execute("SELECT * FROM t").fetchall(), attempts=4, sleep=sleeps.append
        )
    assert len(sleeps) == 3
    holder.execute("ROLLBACK")
    assert retry_busy(lambda: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 0

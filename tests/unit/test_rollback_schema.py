"""Rollback (docs/operations.md, "Rollback"): a release older than the one that last migrated
a database leaves the newer ``fleet_schema`` version and what its migrations added alone, and
runs on it; upgrading again does not re-run those migrations, so rows the older release wrote
in between keep the added columns' defaults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from shared.notify import Message, Outbox
from shared.notify.outbox import COMPONENT, MIGRATIONS
from shared.sqlite import apply_migrations, connect_sync, schema_version, table_columns


def _from_a_newer_release(conn: sqlite3.Connection) -> None:
    """What a later release may add (the fleet only adds): a column with a default, an index."""
    conn.execute("ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX idx_outbox_priority ON outbox(priority)")


NEWER = [*MIGRATIONS, _from_a_newer_release]


async def test_this_release_runs_on_an_outbox_a_newer_release_migrated(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    conn = connect_sync(path)
    assert apply_migrations(conn, COMPONENT, NEWER) == len(NEWER)
    conn.close()

    # This code plays the older release: it opens, migrates (nothing to do), writes, sends.
    outbox = await Outbox(path).open()
    try:
        assert await outbox.enqueue(Message("#ops", "written after the rollback", "k1"))
        (row,) = await outbox.ready(include_alerts=True, limit=10)
        assert await outbox.claim(row.id, "sender", 30.0)
        await outbox.mark_sent(row.id, "sender")
        assert await outbox.counts() == {"sent": 1}
    finally:
        await outbox.close()

    conn = connect_sync(path)
    try:
        assert schema_version(conn, COMPONENT) == len(NEWER)  # not lowered
        assert "priority" in table_columns(conn, "outbox")  # not dropped
        # Upgrading again: the newer migration is recorded as done and is not re-run (it would
        # fail on the existing column); the row written in between has the column's default.
        assert apply_migrations(conn, COMPONENT, NEWER) == len(NEWER)
        assert conn.execute("SELECT priority FROM outbox WHERE dedup_key = 'k1'").fetchall() == [
            (0,)
        ]
    finally:
        conn.close()

"""The HiveMind sink against a `messages` table HiveMind made itself (its own NOT NULL columns,
constraints and triggers): a message the table cannot take is a failed send, counted and logged
with a reason naming the table and columns, never marked sent; the table's schema is never
changed. Real SQLite files, the real outbox and sender."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.hivemind import HiveMindSink
from shared.notify import Message, NotifyMetrics, Outbox, OutboxRow, OutboxSender, SinkError
from shared.sections import NotifySection
from tests.notify_support import drain, row_by_key
from tests.recording_log import RecordingLog

# HiveMind's own layout: agent_id and kind are NOT NULL without default.
HIVEMIND_NOT_NULL = """
CREATE TABLE messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  ts TEXT, source TEXT, topic TEXT, severity TEXT, body TEXT,
  read_at TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
)
"""
HIVEMIND_UNIQUE = """
CREATE TABLE messages (
  id INTEGER PRIMARY KEY, ts TEXT, source TEXT, topic TEXT UNIQUE, severity TEXT, body TEXT
)
"""
HIVEMIND_COMPATIBLE = """
CREATE TABLE messages (
  id INTEGER PRIMARY KEY, ts TEXT NOT NULL, source TEXT, body TEXT NOT NULL,
  agent_id TEXT NOT NULL DEFAULT 'fleet', read_at TEXT
)
"""


def schema(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        info = conn.execute("PRAGMA table_info(messages)").fetchall()
        indexes = conn.execute("PRAGMA index_list(messages)").fetchall()
    conn.close()
    return [*info, *indexes]


def hivemind_db(tmp_path: Path, ddl: str, *rows: str) -> Path:
    db = tmp_path / "hivemind.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(ddl)
        for sql in rows:
            conn.execute(sql)
    conn.close()
    return db


async def send_through_outbox(
    tmp_path: Path, db: Path, key: str = "bp:1"
) -> tuple[dict[str, object], CollectorRegistry, RecordingLog]:
    outbox = await Outbox(tmp_path / "outbox.db").open()
    registry, log = CollectorRegistry(), RecordingLog()
    sender = OutboxSender(
        outbox,
        {"hivemind": HiveMindSink(db=db)},
        NotifySection(outbox_db=outbox.path),
        log=log,
        metrics=NotifyMetrics(registry),
        owner="sender-a",
        rand=None,
    )
    try:
        await outbox.enqueue(
            Message(
                channel="blueprint-liveness",
                text="3 blueprints stale",
                dedup_key=key,
                sink="hivemind",
                daemon="blueprint-watchdog",
                payload={"severity": "warning"},
            )
        )
        await drain(sender)
    finally:
        await outbox.close()
    return row_by_key(outbox.path, key), registry, log


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_not_null_columns_it_does_not_fill_are_a_failed_send(tmp_path: Path) -> None:
    """Why-bullet: INSERT OR IGNORE wrote nothing into HiveMind's own table and the outbox
    marked the message sent."""
    db = hivemind_db(tmp_path, HIVEMIND_NOT_NULL)
    before = schema(db)
    row, registry, log = await send_through_outbox(tmp_path, db)
    assert row["sent_at"] is None, "nothing was written: the message is not sent"
    assert row["status"] == "dead", "a schema mismatch is permanent"
    assert "agent_id" in str(row["last_error"]) and "kind" in str(row["last_error"])
    assert sample(registry, "fleet_notifications_sent_total", sink="hivemind") == 0
    assert (
        sample(
            registry,
            "fleet_notifications_failed_total",
            sink="hivemind",
            reason="schema_mismatch",
        )
        == 1
    )
    (failed,) = log.events("notification failed")
    assert failed["permanent"] and "messages" in failed["error"] and "agent_id" in failed["error"]
    assert schema(db) == before, "HiveMind's messages table is never altered"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    conn.close()


async def test_a_conflicting_row_is_a_failed_send(tmp_path: Path) -> None:
    db = hivemind_db(
        tmp_path,
        HIVEMIND_UNIQUE,
        "INSERT INTO messages(ts, source, topic, body) VALUES"
        " ('2026-11-18T11:06:40Z', 'hivemind', 'blueprint-liveness', 'theirs')",
    )
    outbox_row, registry, _log = await send_through_outbox(tmp_path, db)
    assert outbox_row["sent_at"] is None and outbox_row["status"] == "dead"
    assert "UNIQUE" in str(outbox_row["last_error"])
    labels = {"sink": "hivemind", "reason": "not_written"}
    assert sample(registry, "fleet_notifications_failed_total", **labels) == 1


async def test_an_ignoring_trigger_is_a_failed_send(tmp_path: Path) -> None:
    db = hivemind_db(
        tmp_path,
        HIVEMIND_COMPATIBLE,
        "CREATE TRIGGER no_fleet BEFORE INSERT ON messages BEGIN SELECT RAISE(IGNORE); END",
    )
    row, registry, _log = await send_through_outbox(tmp_path, db)
    assert row["status"] == "dead" and "changed no row" in str(row["last_error"])
    labels = {"sink": "hivemind", "reason": "not_written"}
    assert sample(registry, "fleet_notifications_failed_total", **labels) == 1


async def test_missing_body_column_is_named(tmp_path: Path) -> None:
    db = hivemind_db(tmp_path, "CREATE TABLE messages (id INTEGER PRIMARY KEY, text TEXT)")
    before = schema(db)
    with pytest.raises(SinkError) as info:
        await HiveMindSink(db=db).send(outbox_row())
    assert info.value.reason == "schema_mismatch" and info.value.permanent
    assert "messages" in str(info.value) and "body" in str(info.value)
    assert schema(db) == before


async def test_compatible_foreign_table_is_written_once_and_never_altered(
    tmp_path: Path,
) -> None:
    db = hivemind_db(tmp_path, HIVEMIND_COMPATIBLE)
    before = schema(db)
    sink = HiveMindSink(db=db)
    await sink.send(outbox_row())
    await sink.send(outbox_row())  # a resend after a crash: one row
    with sqlite3.connect(db) as conn:
        got = conn.execute("SELECT ts, source, body, agent_id FROM messages").fetchall()
    conn.close()
    assert got == [("2026-11-18T11:06:40Z", "blueprint-watchdog", "3 blueprints stale", "fleet")]
    assert schema(db) == before


def outbox_row(key: str = "k1") -> OutboxRow:
    return OutboxRow(
        id=1,
        dedup_key=key,
        sink="hivemind",
        channel="blueprint-liveness",
        kind="alert",
        text="3 blueprints stale",
        payload={"severity": "warning", "source": "blueprint-watchdog"},
        daemon="blueprint-watchdog",
        created_at=1_795_000_000.0,
        attempts=0,
    )

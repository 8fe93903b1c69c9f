"""The HiveMind sink: rows in a real hivemind.db (created, migrated, idempotent, never
altering a foreign table) and JSON POSTs to a fake HiveMind on 127.0.0.1 with every fault
classified as the outbox expects (retry vs permanent, Retry-After)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daemons.blueprint_watchdog.config import BlueprintWatchdogSection
from daemons.blueprint_watchdog.manifest import MANIFEST as WATCHDOG
from fleet.config import load_config
from shared.config import FleetConfig
from shared.hivemind import HiveMindSink
from shared.notify import OutboxRow, SinkError
from tests.fakes.hivemind import FakeHiveMind


def row(key: str = "k1", text: str = "3 blueprints stale", **payload: str) -> OutboxRow:
    return OutboxRow(
        id=1,
        dedup_key=key,
        sink="hivemind",
        channel="blueprint-liveness",
        kind="alert",
        text=text,
        payload=payload or {"severity": "warning", "source": "blueprint-watchdog"},
        daemon="blueprint-watchdog",
        created_at=1_795_000_000.0,
        attempts=0,
    )


def messages(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT ts, source, topic, severity, body FROM messages ORDER BY id"
        ).fetchall()


async def test_db_mode_creates_table_and_writes_once(tmp_path: Path) -> None:
    db = tmp_path / "databases/hivemind.db"
    sink = HiveMindSink(db=db)
    assert sink.available and sink.mode == "db"
    await sink.send(row())
    await sink.send(row())  # a resend after a crash: same dedup key, one row
    await sink.send(row("k2", "another run", severity="critical"))
    assert messages(db) == [
        (
            "2026-11-18T11:06:40Z",
            "blueprint-watchdog",
            "blueprint-liveness",
            "warning",
            "3 blueprints stale",
        ),
        (
            "2026-11-18T11:06:40Z",
            "blueprint-watchdog",
            "blueprint-liveness",
            "critical",
            "another run",
        ),
    ]
    assert db.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(db) as conn:
        version = conn.execute(
            "SELECT version FROM fleet_schema WHERE component = 'hivemind_sink'"
        ).fetchone()
    assert version == (2,)
    await sink.close()


async def test_existing_foreign_table_is_written_never_altered(tmp_path: Path) -> None:
    db = tmp_path / "hivemind.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, ts TEXT, source TEXT, body TEXT,"
            " agent_note TEXT)"
        )
        conn.execute(
            "INSERT INTO messages(ts, source, body, agent_note) VALUES ('t', 's', 'b', 'mine')"
        )
        before = conn.execute("PRAGMA table_info(messages)").fetchall()
    await HiveMindSink(db=db).send(row())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT source, body, agent_note FROM messages ORDER BY id").fetchall()
        after = conn.execute("PRAGMA table_info(messages)").fetchall()
        indexes = conn.execute("PRAGMA index_list(messages)").fetchall()
    assert rows == [("s", "b", "mine"), ("blueprint-watchdog", "3 blueprints stale", None)]
    assert after == before and indexes == []  # the fleet's bookkeeping is in its own table


async def test_rows_an_earlier_version_wrote_are_not_written_again(tmp_path: Path) -> None:
    """A table the fleet created before fleet_hivemind_sent existed: its fleet_dedup_key
    still makes a resend a no-op."""
    db = tmp_path / "hivemind.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL,"
            " source TEXT NOT NULL, topic TEXT NOT NULL, severity TEXT NOT NULL,"
            " body TEXT NOT NULL, fleet_dedup_key TEXT)"
        )
        conn.execute(
            "CREATE UNIQUE INDEX idx_messages_fleet_dedup_key ON messages(fleet_dedup_key)"
            " WHERE fleet_dedup_key IS NOT NULL"
        )
        conn.execute(
            "INSERT INTO messages(ts, source, topic, severity, body, fleet_dedup_key)"
            " VALUES ('t', 's', 'c', 'warning', 'b', 'k1')"
        )
    await HiveMindSink(db=db).send(row())
    await HiveMindSink(db=db).send(row("k2"))
    with sqlite3.connect(db) as conn:
        keys = conn.execute("SELECT fleet_dedup_key FROM messages ORDER BY id").fetchall()
    assert keys == [("k1",), ("k2",)]


async def test_bad_db_is_a_retryable_error(tmp_path: Path) -> None:
    db = tmp_path / "hivemind.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SinkError) as info:
        await HiveMindSink(db=db).send(row())
    assert info.value.reason == "db_error" and not info.value.permanent
    assert db.read_bytes().startswith(b"this is not a database")


async def test_locked_db_is_busy_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.sqlite as fleet_sqlite

    db = tmp_path / "hivemind.db"
    await HiveMindSink(db=db).send(row("first"))
    original = fleet_sqlite.connect_sync

    def quick(path: object, **kw: object) -> sqlite3.Connection:
        return original(path, busy_timeout_ms=50)  # type: ignore[arg-type]

    monkeypatch.setattr(fleet_sqlite, "connect_sync", quick)
    locker = sqlite3.connect(db, isolation_level=None, timeout=0)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SinkError) as info:
            await HiveMindSink(db=db).send(row("second"))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert info.value.reason == "db_busy" and not info.value.permanent
    assert len(messages(db)) == 1


async def test_standby_holds_messages(tmp_path: Path) -> None:
    sink = HiveMindSink(db=tmp_path / "hivemind.db", writable=False)
    assert not sink.available
    with pytest.raises(SinkError):
        await sink.send(row())
    assert not (tmp_path / "hivemind.db").exists()


def _sink(config: FleetConfig) -> HiveMindSink:
    sinks = WATCHDOG.sinks(config, config.section(BlueprintWatchdogSection))
    sink = sinks["hivemind"]
    assert isinstance(sink, HiveMindSink)
    return sink


def test_from_config_reads_the_section_and_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    token_file = tmp_path / "hm-token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    config_file = tmp_path / "fleet.toml"
    config_file.write_text(
        f'[fleet]\nroot = "{tmp_path}/root"\n'
        "[blueprint_watchdog]\n"
        f'hivemind_token_file = "{token_file}"\nhivemind_timeout_s = 3\n'
    )
    sink = _sink(load_config(config_file))
    assert sink.mode == "db" and sink.available
    assert sink._db == tmp_path / "root/databases/hivemind.db"
    assert sink._token == "s3cret-token" and sink._timeout_s == 3
    (tmp_path / "root/state").mkdir(parents=True)
    (tmp_path / "root/state/role").write_text("standby\n")
    assert not _sink(load_config(config_file)).available
    monkeypatch.setenv("FLEET_BLUEPRINT_WATCHDOG__HIVEMIND_URL", "http://127.0.0.1:9/api")
    http = _sink(load_config(config_file))
    assert http.mode == "http" and http.available  # HTTP mode writes nothing replicated


async def test_http_post_delivers_with_token() -> None:
    with FakeHiveMind(token="hm-token") as fake:
        sink = HiveMindSink(db=None, url=fake.url, token="hm-token", timeout_s=2)
        await sink.send(row())
        await sink.close()
        (msg,) = fake.messages
    assert msg["topic"] == "blueprint-liveness" and msg["severity"] == "warning"
    assert msg["body"] == "3 blueprints stale" and msg["source"] == "blueprint-watchdog"
    assert msg["idempotency_key"] == "k1" and msg["ts"] == "2026-11-18T11:06:40Z"


@pytest.mark.parametrize(
    ("inject", "reason", "permanent", "retry_after"),
    [
        (lambda f: f.fail(500), "server_error", False, None),
        (lambda f: f.fail(503), "server_error", False, None),
        (lambda f: f.fail(429, headers={"Retry-After": "7"}), "rate_limited", False, 7.0),
        (lambda f: f.fail(400, body={"error": "bad"}), "rejected", True, None),
        (lambda f: f.fail(404), "rejected", True, None),
        (lambda f: f.fail(401), "auth", False, None),
        (lambda f: f.reset(), "connection", False, None),
        (lambda f: f.close(), "connection", False, None),
        (lambda f: f.hang(), "timeout", False, None),
    ],
)
async def test_http_faults_are_classified(
    inject: object, reason: str, permanent: bool, retry_after: float | None
) -> None:
    with FakeHiveMind() as fake:
        inject(fake)  # type: ignore[operator]
        sink = HiveMindSink(db=None, url=fake.url, timeout_s=0.5)
        with pytest.raises(SinkError) as info:
            await sink.send(row())
        await sink.close()
        assert fake.messages == []
    assert info.value.reason == reason
    assert info.value.permanent is permanent
    assert info.value.retry_after_s == retry_after


async def test_http_wrong_token_is_auth_and_connection_refused() -> None:
    fake = FakeHiveMind(token="right")
    with fake:
        sink = HiveMindSink(db=None, url=fake.url, token="wrong", timeout_s=1)
        with pytest.raises(SinkError) as info:
            await sink.send(row())
        assert info.value.reason == "auth"
    with pytest.raises(SinkError) as info:
        await sink.send(row())  # server stopped: connection refused
    assert info.value.reason == "connection"
    await sink.close()

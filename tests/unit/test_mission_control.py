"""MissionControl against real SQLite files: idempotent task creation, schema adoption of a
foreign ``tasks`` table, the lease claim protocol (claim / extend / release / sweep) with an
injected clock, the seed's monitoring query, the sweep's index, and store errors."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.mission_control import (
    LeaseHeld,
    LeaseNotHeld,
    MissionControl,
    NoSuchTask,
    StoreError,
    format_iso,
)

T0 = datetime(2026, 5, 8, 12, 0, 0, tzinfo=UTC)
SQL_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


class FakeClock:
    """A settable clock (``shared.clock.Clock``: Unix seconds): tests move time instead of
    sleeping."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "databases" / "mission-control.db"


@pytest.fixture
def mc(db_path: Path, clock: FakeClock) -> Iterator[MissionControl]:
    with MissionControl(db_path, clock=clock) as store:
        yield store


def raw_lease(path: Path, task_id: int) -> tuple[str | None, str | None]:
    """The lease columns exactly as stored, read by a connection of our own."""
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT lease_holder, lease_until FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
    assert row is not None
    return row[0], row[1]


# tasks ---------------------------------------------------------------------------------------
def test_create_task_is_idempotent_on_source_and_source_ref(mc: MissionControl) -> None:
    first = mc.create_task("Invoice from ACME", source="email", source_ref="<msg-1@acme>")
    again = mc.create_task(
        "Invoice from ACME (re-delivered)", source="email", source_ref="<msg-1@acme>"
    )
    other_ref = mc.create_task("Another mail", source="email", source_ref="<msg-2@acme>")
    other_source = mc.create_task(
        "Same ref, other source", source="slack", source_ref="<msg-1@acme>"
    )

    assert first.created is True
    assert again.created is False
    assert again.id == first.id
    assert other_ref.created is True and other_ref.id != first.id
    assert other_source.created is True and other_source.id not in (first.id, other_ref.id)
    rows = mc.conn.execute(
        "SELECT title FROM tasks WHERE source = 'email' AND source_ref = '<msg-1@acme>'"
    ).fetchall()
    assert rows == [("Invoice from ACME",)]  # the first title is kept, nothing duplicated


def test_tasks_without_a_source_ref_are_never_deduplicated(mc: MissionControl) -> None:
    a = mc.create_task("Same title")
    b = mc.create_task("Same title")
    c = mc.create_task("Same title", source="email")  # no source_ref: nothing to dedup on
    d = mc.create_task("Same title", source="email")
    assert len({a.id, b.id, c.id, d.id}) == 4
    assert all(ref.created for ref in (a, b, c, d))


def test_new_task_defaults(mc: MissionControl, db_path: Path) -> None:
    ref = mc.create_task("Check backups", description="nightly", priority="high")
    with sqlite3.connect(db_path) as conn:
        row = conn.execute(
            "SELECT title, description, status, priority, created_at, updated_at,"
            " lease_holder, lease_until FROM tasks WHERE id = ?",
            (ref.id,),
        ).fetchone()
    assert row == (
        "Check backups",
        "nightly",
        "open",
        "high",
        "2026-05-08 12:00:00",
        "2026-05-08 12:00:00",
        None,
        None,
    )


def test_migrate_adds_missing_columns_to_a_foreign_tasks_table_and_keeps_its_data(
    db_path: Path, clock: FakeClock
) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        # Another program's table: fewer columns, one of its own, and a neighbour table.
        conn.execute(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT, status TEXT, owner TEXT)"
        )
        conn.executemany(
            "INSERT INTO tasks(id, title, status, owner) VALUES (?, ?, ?, ?)",
            [(7, "Old task", "done", "john"), (99818, "Genesis", "blocked", None)],
        )
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes(body) VALUES ('keep me')")
    conn.close()

    with MissionControl(db_path, clock=clock, migrate=True) as store:
        columns = {row[1] for row in store.conn.execute("PRAGMA table_info(tasks)")}
        assert columns >= {
            "id",
            "title",
            "description",
            "status",
            "priority",
            "source",
            "source_ref",
            "created_at",
            "updated_at",
            "lease_holder",
            "lease_until",
            "owner",
        }
        assert store.conn.execute(
            "SELECT id, title, status, owner, lease_holder, lease_until FROM tasks ORDER BY id"
        ).fetchall() == [
            (7, "Old task", "done", "john", None, None),
            (99818, "Genesis", "blocked", None, None, None),
        ]
        assert store.conn.execute("SELECT body FROM notes").fetchall() == [("keep me",)]

        # The adopted table works for the protocol and for new tasks.
        assert store.claim(99818, "john", "abc123").holder == "john:abc123"
        new = store.create_task("Fresh", source="email", source_ref="<m@x>")
        assert new.created and new.id not in (7, 99818)

    # Opening again changes nothing more (the migration ran once).
    with MissionControl(db_path, clock=clock) as store:
        assert store.conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 3
        assert store.status(99818).holder == "john:abc123"


def test_open_is_idempotent(db_path: Path) -> None:
    store = MissionControl(db_path).open()
    conn = store.conn
    with store as same:  # `with MissionControl(...).open()`: the CLI's pattern
        assert same.conn is conn
    with pytest.raises(RuntimeError):
        _ = store.conn


# claim ---------------------------------------------------------------------------------------
def test_claim_free_task(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    info = mc.claim(tid, "john", "abc123")
    assert (info.holder, info.lease_until, info.expired) == (
        "john:abc123",
        T0 + timedelta(minutes=10),  # default TTL
        False,
    )
    assert raw_lease(db_path, tid) == ("john:abc123", "2026-05-08 12:10:00")
    assert mc.status(tid) == info


def test_reclaim_own_lease_renews_it(mc: MissionControl, clock: FakeClock) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123", ttl_minutes=10)
    clock.advance(minutes=4)
    info = mc.claim(tid, "john", "abc123", ttl_minutes=30)
    assert info.holder == "john:abc123"
    assert info.lease_until == T0 + timedelta(minutes=4 + 30)


def test_expired_lease_can_be_claimed_by_another(mc: MissionControl, clock: FakeClock) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123", ttl_minutes=10)
    clock.advance(minutes=10)  # lease_until == now counts as expired
    info = mc.claim(tid, "pi-orch", "xyz456", ttl_minutes=5)
    assert info.holder == "pi-orch:xyz456"
    assert mc.status(tid).lease_until == T0 + timedelta(minutes=15)


def test_live_lease_held_by_another_is_refused(
    mc: MissionControl, clock: FakeClock, db_path: Path
) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123", ttl_minutes=10)
    clock.advance(minutes=9, seconds=59)
    with pytest.raises(LeaseHeld) as excinfo:
        mc.claim(tid, "pi-orch", "xyz456")
    assert str(excinfo.value) == f"Task {tid} held by john:abc123 until 2026-05-08T12:10:00Z"
    assert excinfo.value.holder == "john:abc123"
    # Same actor, other session is another holder too.
    with pytest.raises(LeaseHeld):
        mc.claim(tid, "john", "other-session")
    assert raw_lease(db_path, tid) == ("john:abc123", "2026-05-08 12:10:00")


def test_claim_missing_task(mc: MissionControl) -> None:
    with pytest.raises(NoSuchTask):
        mc.claim(12345, "john", "abc123")
    with pytest.raises(NoSuchTask):
        mc.claim(12345, "john", "abc123", enforce=False)
    with pytest.raises(NoSuchTask):
        mc.status(12345)
    with pytest.raises(NoSuchTask):
        mc.extend(12345, "john", "abc123")
    with pytest.raises(NoSuchTask):
        mc.release(12345, "john", "abc123")


def test_enforce_false_takes_over_a_live_lease(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123")
    info = mc.claim(tid, "pi-orch", "xyz456", ttl_minutes=3, enforce=False)
    assert info.holder == "pi-orch:xyz456"
    assert raw_lease(db_path, tid) == ("pi-orch:xyz456", "2026-05-08 12:03:00")


def test_lease_written_by_another_program_in_iso_form_is_honoured(
    mc: MissionControl, clock: FakeClock
) -> None:
    tid = mc.create_task("t").id
    mc.conn.execute(
        "UPDATE tasks SET lease_holder = 'john:abc123', lease_until = '2026-05-08T12:30:00Z'"
        " WHERE id = ?",
        (tid,),
    )
    with pytest.raises(LeaseHeld, match="until 2026-05-08T12:30:00Z"):
        mc.claim(tid, "pi-orch", "xyz456")
    clock.advance(minutes=30)
    assert mc.claim(tid, "pi-orch", "xyz456").holder == "pi-orch:xyz456"


# extend ----------------------------------------------------------------------------------------
def test_extend_by_holder_moves_lease_until_to_now_plus_ttl(
    mc: MissionControl, clock: FakeClock, db_path: Path
) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123", ttl_minutes=10)
    clock.advance(minutes=5)
    info = mc.extend(tid, "john", "abc123", ttl_minutes=10)
    assert info.lease_until == T0 + timedelta(minutes=15)
    assert raw_lease(db_path, tid) == ("john:abc123", "2026-05-08 12:15:00")


def test_extend_by_non_holder_is_refused(
    mc: MissionControl, clock: FakeClock, db_path: Path
) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123")
    clock.advance(minutes=1)
    with pytest.raises(LeaseHeld) as excinfo:
        mc.extend(tid, "pi-orch", "xyz456", ttl_minutes=60)
    assert str(excinfo.value) == f"Task {tid} held by john:abc123 until 2026-05-08T12:10:00Z"
    assert raw_lease(db_path, tid) == ("john:abc123", "2026-05-08 12:10:00")


def test_extend_of_a_free_task_is_refused(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    with pytest.raises(LeaseNotHeld, match=f"Task {tid} is not claimed"):
        mc.extend(tid, "john", "abc123")
    assert raw_lease(db_path, tid) == (None, None)


# release ---------------------------------------------------------------------------------------
def test_release_by_holder_clears_the_lease(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123")
    assert mc.release(tid, "john", "abc123") is True
    assert raw_lease(db_path, tid) == (None, None)
    assert mc.status(tid).holder is None


def test_release_by_non_holder_is_refused(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123")
    with pytest.raises(LeaseHeld, match=f"^Task {tid} held by john:abc123 until "):
        mc.release(tid, "pi-orch", "xyz456")
    assert raw_lease(db_path, tid) == ("john:abc123", "2026-05-08 12:10:00")


def test_release_of_a_free_lease_is_a_noop_success(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    assert mc.release(tid, "john", "abc123") is False
    mc.claim(tid, "john", "abc123")
    assert mc.release(tid, "john", "abc123") is True
    assert mc.release(tid, "john", "abc123") is False  # idempotent
    assert raw_lease(db_path, tid) == (None, None)


def test_force_release_clears_any_holder(mc: MissionControl, db_path: Path) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123")
    assert mc.release(tid, "ops", "manual", force=True) is True
    assert raw_lease(db_path, tid) == (None, None)
    assert mc.release(tid, force=True) is False


# sweep -----------------------------------------------------------------------------------------
def _seed_leases(mc: MissionControl, clock: FakeClock) -> dict[str, int]:
    """One free task, one live lease, two expired ones (at T0 + 30 min)."""
    ids = {name: mc.create_task(name).id for name in ("free", "live", "old", "older")}
    mc.claim(ids["older"], "a", "1", ttl_minutes=5)  # until 12:05
    mc.claim(ids["old"], "b", "2", ttl_minutes=10)  # until 12:10
    clock.advance(minutes=30)
    mc.claim(ids["live"], "c", "3", ttl_minutes=10)  # until 12:40
    return ids


def test_expired_leases_and_counts(mc: MissionControl, clock: FakeClock) -> None:
    ids = _seed_leases(mc, clock)
    expired = mc.expired_leases()
    assert [(e.id, e.title, e.holder) for e in expired] == [
        (ids["older"], "older", "a:1"),
        (ids["old"], "old", "b:2"),
    ]
    assert expired[0].lease_until == T0 + timedelta(minutes=5)
    assert expired[0].expired_for_s == 25 * 60
    assert expired[0].to_json(released=False) == {
        "id": ids["older"],
        "title": "older",
        "holder": "a:1",
        "lease_until": "2026-05-08T12:05:00Z",
        "expired_for_s": 1500.0,
        "released": False,
    }
    assert [e.id for e in mc.expired_leases(limit=1)] == [ids["older"]]
    assert mc.lease_counts() == (1, 2)
    assert mc.status(ids["old"]).expired is True
    assert mc.status(ids["live"]).expired is False


def test_release_expired_releases_a_still_expired_lease(
    mc: MissionControl, clock: FakeClock, db_path: Path
) -> None:
    ids = _seed_leases(mc, clock)
    for lease in mc.expired_leases():
        assert mc.release_expired(lease) is True
    assert raw_lease(db_path, ids["old"]) == (None, None)
    assert raw_lease(db_path, ids["older"]) == (None, None)
    assert raw_lease(db_path, ids["live"]) == ("c:3", "2026-05-08 12:40:00")
    assert mc.expired_leases() == []
    assert mc.lease_counts() == (1, 0)


def test_release_expired_does_not_release_a_lease_extended_after_the_read(
    db_path: Path, clock: FakeClock
) -> None:
    with (
        MissionControl(db_path, clock=clock) as sweeper,
        MissionControl(db_path, clock=clock) as worker,
    ):
        tid = worker.create_task("long job").id
        worker.claim(tid, "john", "abc123", ttl_minutes=10)
        clock.advance(minutes=11)
        (lease,) = sweeper.expired_leases()
        worker.extend(tid, "john", "abc123", ttl_minutes=10)  # the heartbeat lands in between
        assert sweeper.release_expired(lease) is False
        assert raw_lease(db_path, tid) == ("john:abc123", "2026-05-08 12:21:00")


def test_release_expired_does_not_release_a_lease_reclaimed_after_the_read(
    db_path: Path, clock: FakeClock
) -> None:
    with (
        MissionControl(db_path, clock=clock) as sweeper,
        MissionControl(db_path, clock=clock) as worker,
    ):
        tid = worker.create_task("t").id
        worker.claim(tid, "john", "abc123", ttl_minutes=10)
        clock.advance(minutes=11)
        (lease,) = sweeper.expired_leases()
        worker.claim(tid, "pi-orch", "xyz456")
        assert sweeper.release_expired(lease) is False
        assert raw_lease(db_path, tid)[0] == "pi-orch:xyz456"


def test_seed_monitoring_query_sees_exactly_the_live_leases(db_path: Path) -> None:
    """The seed's `lease_until > datetime('now')`, run by plain sqlite3 on the real clock."""
    real_now = datetime.now(UTC).replace(microsecond=0)
    past = FakeClock(real_now - timedelta(hours=2))
    with MissionControl(db_path, clock=past) as then:
        expired = [then.create_task(f"expired {i}").id for i in range(3)]
        for i, tid in enumerate(expired):
            then.claim(tid, "old", str(i), ttl_minutes=10 + i)
        free = [then.create_task(f"free {i}").id for i in range(3)]
        released = then.create_task("released").id
        then.claim(released, "x", "y")
        then.release(released, "x", "y")
    with MissionControl(db_path) as now:  # the real clock
        live = [now.create_task(f"live {i}").id for i in range(3)]
        for i, tid in enumerate(live):
            now.claim(tid, "new", str(i), ttl_minutes=5 + i)
        assert now.lease_counts() == (3, 3)

    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT id FROM tasks WHERE lease_holder IS NOT NULL AND lease_until > datetime('now')"
        ).fetchall()
        # ... and the complement: the expired ones are exactly what the sweep would report.
        stale = conn.execute(
            "SELECT id FROM tasks WHERE lease_holder IS NOT NULL AND lease_until <= datetime('now')"
        ).fetchall()
    conn.close()
    assert sorted(r[0] for r in rows) == sorted(live)
    assert sorted(r[0] for r in stale) == sorted(expired)
    assert not set(free) & {r[0] for r in rows + stale}


def test_timestamps_are_stored_as_sqlite_text(
    mc: MissionControl, clock: FakeClock, db_path: Path
) -> None:
    tid = mc.create_task("t", source="email", source_ref="<a@b>").id
    clock.advance(seconds=61.7)  # sub-second parts never reach the database
    mc.claim(tid, "john", "abc123")
    with sqlite3.connect(db_path) as conn:
        created, updated, until = conn.execute(
            "SELECT created_at, updated_at, lease_until FROM tasks WHERE id = ?", (tid,)
        ).fetchone()
        # SQLite parses them as its own datetimes, unchanged.
        assert conn.execute("SELECT datetime(?)", (until,)).fetchone()[0] == until
    conn.close()
    for value in (created, updated, until):
        assert SQL_TS.match(value), value
    assert (created, updated, until) == (
        "2026-05-08 12:00:00",
        "2026-05-08 12:01:01",
        "2026-05-08 12:11:01",
    )
    assert format_iso(mc.status(tid).lease_until or T0) == "2026-05-08T12:11:01Z"


def test_sweep_queries_use_the_lease_index(mc: MissionControl, clock: FakeClock) -> None:
    _seed_leases(mc, clock)
    statements: list[str] = []
    mc.conn.set_trace_callback(statements.append)
    try:
        mc.expired_leases()
        mc.lease_counts()
    finally:
        mc.conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # the sweep list and the two counts (canonical rows), plus one scan each for leases in
    # other forms (only non-canonical leased rows, still through the partial index)
    assert len(selects) == 5
    for sql in selects:
        plan = " ".join(row[3] for row in mc.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING INDEX idx_tasks_lease_until" in plan, (sql, plan)
        assert "SCAN tasks" not in plan, (sql, plan)


# store errors ----------------------------------------------------------------------------------
def test_locked_database_gives_store_error_after_bounded_retries(db_path: Path) -> None:
    with MissionControl(db_path) as setup:
        tid = setup.create_task("t").id
    store = MissionControl(db_path, busy_timeout_ms=20, attempts=2).open()
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"after 2 attempt\(s\).*locked"):
            store.claim(tid, "john", "abc123")
        with pytest.raises(StoreError):
            store.create_task("another")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # Once the lock is gone the same store works again.
    assert store.claim(tid, "john", "abc123").holder == "john:abc123"
    store.close()


def test_locked_database_that_needs_migrating_gives_store_error_on_open(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT, status TEXT)")
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError):
            MissionControl(db_path, busy_timeout_ms=20, attempts=2).open()
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_non_database_file_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "mission-control.db"
    content = b"this is not an SQLite database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError):
        MissionControl(path).open()
    assert path.read_bytes() == content  # never rewritten


def test_missing_database_without_create_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    with pytest.raises(StoreError, match="not found"):
        MissionControl(path, create=False).open()
    assert not path.exists()


# leases the Node tools wrote (issue 12) --------------------------------------------------------

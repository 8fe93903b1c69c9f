"""The Mission Control task and lease API, the same tests on both backends (``mc_backend``: a
SQLite file, then a real Postgres database): idempotent task creation, claim / extend /
release with an injected clock, the sweep and its compare-and-set release, the seed's
monitoring query and its Postgres twin, and (Postgres) a connection cut under a live store.
The SQLite-only behaviour (text timestamps, foreign schemas, locks) is in
tests/unit/test_mission_control*.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from shared.mission_control import LeaseHeld, LeaseNotHeld, LeaseStore, NoSuchTask
from tests.mc_backends import McBackend
from tests.pg_support import PgDatabase

pytestmark = pytest.mark.system

T0 = datetime(2026, 5, 8, 12, 0, 0, tzinfo=UTC)


class FakeClock:
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
def mc(mc_backend: McBackend, clock: FakeClock) -> Iterator[LeaseStore]:
    with mc_backend.store(clock=clock) as store:
        yield store


def test_create_task_is_idempotent_on_source_and_source_ref(mc: LeaseStore) -> None:
    first = mc.create_task("Invoice", source="email", source_ref="<m1@example.com>")
    again = mc.create_task("Invoice (again)", source="email", source_ref="<m1@example.com>")
    other = mc.create_task("Other", source="slack", source_ref="<m1@example.com>")
    plain = [mc.create_task("Same"), mc.create_task("Same")]
    assert (first.created, again.created, again.id) == (True, False, first.id)
    assert other.created and other.id != first.id
    assert len({p.id for p in plain}) == 2


def test_claim_reclaim_and_refusal(mc: LeaseStore, clock: FakeClock, mc_backend: McBackend) -> None:
    tid = mc.create_task("t").id
    info = mc.claim(tid, "john", "abc123")
    assert (info.holder, info.lease_until, info.expired) == (
        "john:abc123",
        T0 + timedelta(minutes=10),
        False,
    )
    assert mc_backend.lease(tid) == ("john:abc123", "2026-05-08 12:10:00")
    assert mc.status(tid).holder == "john:abc123"
    clock.advance(minutes=9, seconds=59)
    with pytest.raises(LeaseHeld) as excinfo:
        mc.claim(tid, "pi-orch", "xyz456")
    assert str(excinfo.value) == f"Task {tid} held by john:abc123 until 2026-05-08T12:10:00Z"
    with pytest.raises(LeaseHeld):
        mc.claim(tid, "john", "other-session")
    renewed = mc.claim(tid, "john", "abc123", ttl_minutes=30)
    assert renewed.lease_until == T0 + timedelta(minutes=9, seconds=59 + 30 * 60)


def test_expired_lease_can_be_claimed_by_another(mc: LeaseStore, clock: FakeClock) -> None:
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123", ttl_minutes=10)
    clock.advance(minutes=10)  # lease_until == now counts as expired
    assert mc.status(tid).expired is True
    assert mc.claim(tid, "pi-orch", "xyz456", ttl_minutes=5).holder == "pi-orch:xyz456"
    assert mc.status(tid).lease_until == T0 + timedelta(minutes=15)


def test_missing_task_and_enforce_false(mc: LeaseStore, mc_backend: McBackend) -> None:
    for call in (
        lambda: mc.claim(12345, "john", "abc123"),
        lambda: mc.claim(12345, "john", "abc123", enforce=False),
        lambda: mc.status(12345),
        lambda: mc.show(12345),
        lambda: mc.extend(12345, "john", "abc123"),
        lambda: mc.release(12345, "john", "abc123"),
    ):
        with pytest.raises(NoSuchTask):
            call()
    tid = mc.create_task("t").id
    mc.claim(tid, "john", "abc123")
    assert mc.claim(tid, "pi-orch", "x", ttl_minutes=3, enforce=False).holder == "pi-orch:x"
    assert mc_backend.lease(tid) == ("pi-orch:x", "2026-05-08 12:03:00")


def test_extend_and_release(mc: LeaseStore, clock: FakeClock, mc_backend: McBackend) -> None:
    tid = mc.create_task("t").id
    with pytest.raises(LeaseNotHeld):
        mc.extend(tid, "john", "abc123")
    mc.claim(tid, "john", "abc123")
    clock.advance(minutes=5)
    with pytest.raises(LeaseHeld):
        mc.extend(tid, "pi-orch", "x")
    assert mc.extend(tid, "john", "abc123", ttl_minutes=20).lease_until == T0 + timedelta(
        minutes=25
    )
    with pytest.raises(LeaseHeld):
        mc.release(tid, "pi-orch", "x")
    assert mc.release(tid, "john", "abc123") is True
    assert mc.release(tid, "john", "abc123") is False  # a free lease: no-op success
    mc.claim(tid, "john", "abc123")
    assert mc.release(tid, force=True) is True
    assert mc_backend.lease(tid) == (None, None)
    assert mc.show(tid).to_json() == {
        "id": tid,
        "title": "t",
        "status": "open",
        "lease_holder": None,
        "lease_until": None,
    }


def _seed_leases(mc: LeaseStore, clock: FakeClock) -> dict[str, int]:
    ids = {name: mc.create_task(name).id for name in ("free", "live", "old", "older")}
    mc.claim(ids["older"], "a", "1", ttl_minutes=5)  # until 12:05
    mc.claim(ids["old"], "b", "2", ttl_minutes=10)  # until 12:10
    clock.advance(minutes=30)
    mc.claim(ids["live"], "c", "3", ttl_minutes=10)  # until 12:40
    return ids


def test_sweep_lists_counts_and_releases_by_cas(
    mc: LeaseStore, clock: FakeClock, mc_backend: McBackend
) -> None:
    ids = _seed_leases(mc, clock)
    expired = mc.expired_leases()
    assert [(e.id, e.holder, e.expired_for_s) for e in expired] == [
        (ids["older"], "a:1", 25 * 60),
        (ids["old"], "b:2", 20 * 60),
    ]
    assert expired[0].to_json(released=False)["lease_until"] == "2026-05-08T12:05:00Z"
    assert [e.id for e in mc.expired_leases(limit=1)] == [ids["older"]]
    assert mc.lease_counts() == (1, 2)
    assert mc.unreadable_leases() == []
    # A lease extended (or re-claimed) between the read and the release is never released.
    mc.extend(ids["old"], "b", "2")
    assert mc.release_expired(expired[1]) is False
    assert mc_backend.lease(ids["old"])[0] == "b:2"
    assert mc.release_expired(expired[0]) is True
    assert mc_backend.lease(ids["older"]) == (None, None)
    assert mc.lease_counts() == (2, 0)


def test_seed_monitoring_query_and_its_postgres_twin(mc_backend: McBackend) -> None:
    """The seed's `lease_until > datetime('now')` on SQLite, and the documented Postgres twin
    (docs/mission-control.md) on Postgres, see exactly the live leases (real clock)."""
    real_now = datetime.now(UTC).replace(microsecond=0)
    past = FakeClock(real_now - timedelta(hours=2))
    with mc_backend.store(clock=past) as then:
        expired = [then.create_task(f"expired {i}").id for i in range(3)]
        for i, tid in enumerate(expired):
            then.claim(tid, "old", str(i))
        then.create_task("free")
    with mc_backend.store() as now:
        live = [now.create_task(f"live {i}").id for i in range(2)]
        for i, tid in enumerate(live):
            now.claim(tid, "new", str(i))
    if mc_backend.pg is None:
        query = (
            "SELECT id, title, lease_holder, lease_until FROM tasks"
            " WHERE lease_holder IS NOT NULL AND lease_until > datetime('now')"
        )
    else:
        query = (
            "SELECT id, title, lease_holder, lease_until FROM tasks"
            " WHERE lease_holder IS NOT NULL AND lease_until > now()"
        )
    assert sorted(r[0] for r in mc_backend.sql(query)) == sorted(live)


def test_postgres_connection_cut_under_a_store_is_retried(
    pg_db: PgDatabase, clock: FakeClock, tmp_path: Path
) -> None:
    mc_backend = McBackend.postgres(pg_db, tmp_path)
    with mc_backend.store(clock=clock) as store:
        tid = store.create_task("t").id
        store.claim(tid, "john", "abc123")
        with psycopg.connect(pg_db.dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'alai-fleet' AND pid <> pg_backend_pid()"
            ).fetchall()
        assert killed and all(r[0] for r in killed)
        with pytest.raises(LeaseHeld):  # not a StoreError, not a different answer
            store.claim(tid, "pi-orch", "x")
        assert store.claim(tid, "john", "abc123").holder == "john:abc123"
        assert getattr(store, "reconnects", 0) == 1

"""Mission Control against rows other tools wrote: ISO and epoch leases, unreadable values, and
a foreign ``tasks`` table opened without migrating."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.mission_control import (
    LeaseHeld,
    LeaseUnreadable,
    MissingColumns,
    MissionControl,
    StoreError,
)
from tests.unit.test_mission_control import FakeClock, raw_lease


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "databases" / "mission-control.db"


MORNING = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def _foreign_leases(db_path: Path, leases: dict[str, tuple[str, object]]) -> dict[str, int]:
    """Tasks whose lease columns another program wrote, raw (``lease_until DATETIME``: an
    integer epoch stays an INTEGER, as mc.js stores it)."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT"
        " DEFAULT 'open', created_by TEXT NOT NULL, lease_holder TEXT, lease_until DATETIME)"
    )
    ids = {}
    for name, (holder, until) in leases.items():
        cur = conn.execute(
            "INSERT INTO tasks(title, created_by, lease_holder, lease_until)"
            " VALUES (?, 'mc.js', ?, ?)",
            (name, holder, until),
        )
        ids[name] = int(cur.lastrowid or 0)
    conn.commit()
    conn.close()
    return ids


def test_iso_lease_that_expired_this_morning_is_swept_before_midnight(db_path: Path) -> None:
    """Why (issue 12): `...T04:30:00Z` compared as text is greater than `2026-12-02 10:00:00`
    ('T' > ' '), so it was not swept until UTC midnight."""
    ids = _foreign_leases(
        db_path,
        {
            "iso": ("john:abc123", "2026-12-02T04:30:00Z"),
            "iso-ms": ("a:1", "2026-12-02T04:30:00.000Z"),
            "offset": ("b:2", "2026-12-02T06:30:00+02:00"),
            "epoch-s": ("c:3", int((MORNING - timedelta(hours=1)).timestamp())),
            "epoch-ms-text": ("d:4", str(int((MORNING - timedelta(hours=2)).timestamp() * 1000))),
            "canonical": ("e:5", "2026-12-02 09:00:00"),
            "live-iso": ("f:6", "2026-12-02T10:30:00Z"),
            "live-epoch": ("g:7", int((MORNING + timedelta(hours=1)).timestamp())),
        },
    )
    with MissionControl(db_path, clock=FakeClock(MORNING), create=False, migrate=False) as mc:
        expired = mc.expired_leases()
        # oldest first, whatever form each was written in
        assert [e.id for e in expired] == [
            ids["iso"],  # 04:30Z
            ids["iso-ms"],  # 04:30:00.000Z
            ids["offset"],  # 06:30+02:00 = 04:30Z
            ids["epoch-ms-text"],  # 08:00Z
            ids["epoch-s"],  # 09:00Z
            ids["canonical"],  # 09:00 (SQLite form)
        ]
        iso = next(e for e in expired if e.id == ids["iso"])
        assert iso.expired_for_s == 5.5 * 3600
        assert mc.lease_counts() == (2, 6)
        assert [e.id for e in mc.expired_leases(limit=2)] == [e.id for e in expired[:2]]
        for lease in expired:
            assert mc.release_expired(lease) is True, lease
        assert mc.lease_counts() == (2, 0)
    assert raw_lease(db_path, ids["live-iso"]) == ("f:6", "2026-12-02T10:30:00Z")


def test_integer_epoch_lease_is_read_by_every_verb(db_path: Path) -> None:
    """Why (issue 12): an integer epoch lease raised AttributeError (a traceback, exit 1)."""
    live = int((MORNING + timedelta(minutes=20)).timestamp())
    ids = _foreign_leases(db_path, {"s": ("john:abc123", live), "ms": ("pi:x", live * 1000)})
    with MissionControl(db_path, clock=FakeClock(MORNING), create=False, migrate=False) as mc:
        for name in ("s", "ms"):
            info = mc.status(ids[name])
            assert (info.lease_until, info.expired) == (MORNING + timedelta(minutes=20), False)
        with pytest.raises(LeaseHeld, match="held by john:abc123 until 2026-12-02T10:20:00Z"):
            mc.claim(ids["s"], "other", "s")
        with pytest.raises(LeaseHeld):
            mc.extend(ids["ms"], "other", "s")
        assert mc.extend(ids["ms"], "pi", "x").holder == "pi:x"
        assert mc.release(ids["s"], "john", "abc123") is True


def test_unreadable_lease_is_reported_and_never_released(db_path: Path) -> None:
    ids = _foreign_leases(
        db_path, {"bad": ("john:abc123", "soon"), "naive": ("a:1", "2026-12-02T04:30:00")}
    )
    with MissionControl(db_path, clock=FakeClock(MORNING), create=False, migrate=False) as mc:
        info = mc.status(ids["bad"])
        assert (info.holder, info.expired, info.raw_lease_until) == ("john:abc123", False, "soon")
        assert info.unreadable and info.to_json()["lease_until_raw"] == "soon"
        assert mc.expired_leases() == []
        assert mc.lease_counts() == (0, 0)
        unreadable = mc.unreadable_leases()
        assert [(u.id, u.raw_lease_until) for u in unreadable] == [
            (ids["bad"], "soon"),
            (ids["naive"], "2026-12-02T04:30:00"),
        ]
        assert "ambiguous" in unreadable[1].reason
        with pytest.raises(LeaseUnreadable, match="claim-release 1 --force"):
            mc.claim(ids["bad"], "other", "s")
        assert mc.release(ids["bad"], force=True) is True


def test_opening_without_migrate_changes_no_schema_and_names_a_missing_column(
    db_path: Path,
) -> None:
    """Why (issue 12): opening the store for claim-status added columns and indexes to mc.js's
    `tasks`."""
    _foreign_leases(db_path, {"t": ("john:abc123", "2026-12-02 09:00:00")})

    def schema() -> list[tuple[object, ...]]:
        with sqlite3.connect(db_path) as conn:
            rows = conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
        conn.close()
        return rows

    before = schema()
    with MissionControl(db_path, clock=FakeClock(MORNING), create=False, migrate=False) as mc:
        assert mc.status(1).holder == "john:abc123"
        assert mc.show(1).to_json() == {
            "id": 1,
            "title": "t",
            "status": "open",
            "lease_holder": "john:abc123",
            "lease_until": "2026-12-02T09:00:00Z",
        }
        mc.claim(1, "a", "b")  # mc.js's table has no updated_at: not written, not added
        mc.expired_leases()
        mc.lease_counts()
    assert schema() == before

    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE tasks DROP COLUMN lease_until")
    conn.commit()
    conn.close()
    with pytest.raises(MissingColumns) as caught:
        MissionControl(db_path, create=False, migrate=False).open()
    assert str(db_path) in str(caught.value)
    assert "table tasks has no column lease_until" in str(caught.value)
    assert isinstance(caught.value, StoreError)

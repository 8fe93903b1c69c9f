"""`fleet mc` as a real subprocess against a mission-control.db laid out like mc.js's: extra
columns (one NOT NULL without default), no fleet bookkeeping, leases written by the Node tools in
ISO, epoch-seconds and epoch-milliseconds form. Each "Why" bullet of issue 12 that concerns
Mission Control is one test here."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

FLEET = Path(sys.executable).parent / "fleet"
ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"

# mc.js's table: its own columns, `created_by NOT NULL` without a default, and lease_until
# declared DATETIME (NUMERIC affinity: an integer epoch stays an integer).
NODE_SCHEMA = """
CREATE TABLE tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  title TEXT NOT NULL,
  description TEXT,
  status TEXT DEFAULT 'open',
  priority TEXT,
  created_by TEXT NOT NULL,
  assignee TEXT,
  dod_evidence TEXT,
  created_at TEXT DEFAULT (datetime('now')),
  updated_at TEXT,
  lease_holder TEXT,
  lease_until DATETIME
);
"""


def node_db(path: Path, leases: dict[int, tuple[str | None, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(NODE_SCHEMA)
    for task_id, (holder, until) in leases.items():
        conn.execute(
            "INSERT INTO tasks(id, title, created_by, lease_holder, lease_until)"
            " VALUES (?, ?, 'mc.js', ?, ?)",
            (task_id, f"task {task_id}", holder, until),
        )
    conn.commit()
    conn.close()
    return path


def schema(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    rows += [("column", *c) for c in conn.execute("PRAGMA table_info(tasks)").fetchall()]
    conn.close()
    return rows


def lease(path: Path, task_id: int) -> tuple[object, object]:
    conn = sqlite3.connect(path)
    row = conn.execute(
        "SELECT lease_holder, lease_until FROM tasks WHERE id = ?", (task_id,)
    ).fetchone()
    conn.close()
    return row[0], row[1]


def run(
    env: dict[str, str], *args: str, db: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in env.items() if not k.startswith("MC_")}
    argv = [str(FLEET), "mc", *args] + (["--db", str(db)] if db else [])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_iso_lease_that_expired_this_morning_is_swept_now(
    tmp_path: Path, fleet_env: dict[str, str]
) -> None:
    """Why: an ISO lease (`...T04:30:00Z`) that expired this morning compared as text greater
    than `datetime('now')` ('T' > ' ') and was not swept until UTC midnight."""
    now = datetime.now(UTC)
    this_morning = now.replace(hour=0, minute=0, second=0, microsecond=0)  # today, expired
    live = now + timedelta(hours=2)
    db = node_db(
        tmp_path / "mission-control.db",
        {1: ("john:abc123", iso(this_morning)), 2: ("pi-orch:xyz", iso(live))},
    )
    r = run(fleet_env, "claim-sweep", "--json", db=db)
    assert r.returncode == 0, r.stderr
    assert [(e["id"], e["holder"]) for e in json.loads(r.stdout)["expired"]] == [(1, "john:abc123")]
    r = run(fleet_env, "claim-sweep", "--auto-release", "--json", db=db)
    assert r.returncode == 0, r.stderr
    assert lease(db, 1) == (None, None)
    assert lease(db, 2) == ("pi-orch:xyz", iso(live))


@pytest.mark.parametrize("unit", ["seconds", "milliseconds"])
def test_integer_epoch_lease_is_read_not_a_traceback_exit_1(
    tmp_path: Path, fleet_env: dict[str, str], unit: str
) -> None:
    """Why: integer epoch leases gave a traceback with exit 1 (which means "held by another")."""
    scale = 1000 if unit == "milliseconds" else 1
    now = int(datetime.now(UTC).timestamp())
    live_until = now + 3600
    db = node_db(
        tmp_path / "mission-control.db",
        {1: ("john:abc123", live_until * scale), 2: ("old:gone", (now - 3600) * scale)},
    )
    assert isinstance(lease(db, 1)[1], int)  # stored as an INTEGER, as mc.js wrote it
    want_iso = iso(datetime.fromtimestamp(live_until, UTC))

    r = run(fleet_env, "claim-status", "1", db=db)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"held by john:abc123 until {want_iso}\n", "")

    # Held and live: exit 1 is the honest answer here, with the protocol's line, no traceback.
    r = run(fleet_env, "claim", "1", "--actor", "pi-orch", "--session", "x", db=db)
    assert r.returncode == 1
    assert r.stderr == f"Task 1 held by john:abc123 until {want_iso}\n"

    # Expired: claimable, and listed by the sweep.
    r = run(fleet_env, "claim-sweep", "--json", db=db)
    assert r.returncode == 0, r.stderr
    assert [e["id"] for e in json.loads(r.stdout)["expired"]] == [2]
    r = run(fleet_env, "claim", "2", "--actor", "pi-orch", "--session", "x", db=db)
    assert r.returncode == 0, r.stderr
    assert lease(db, 2)[0] == "pi-orch:x"


def test_unreadable_lease_is_reported_never_a_traceback_or_exit_1(
    tmp_path: Path, fleet_env: dict[str, str]
) -> None:
    db = node_db(tmp_path / "mission-control.db", {1: ("john:abc123", "next tuesday")})
    r = run(fleet_env, "claim-status", "1", db=db)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "john:abc123" in r.stdout and "'next tuesday'" in r.stdout
    assert "fleet mc claim-release 1 --force" in r.stdout

    r = run(fleet_env, "claim-sweep", "--json", db=db)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["expired"] == []
    assert [(u["id"], u["holder"], u["lease_until_raw"]) for u in doc["unreadable"]] == [
        (1, "john:abc123", "next tuesday")
    ]
    r = run(fleet_env, "claim-sweep", db=db)
    assert r.returncode == 0 and "unreadable" in r.stdout and "'next tuesday'" in r.stdout

    r = run(fleet_env, "claim", "1", "--actor", "pi-orch", "--session", "x", db=db)
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "'next tuesday'" in r.stderr
    assert lease(db, 1) == ("john:abc123", "next tuesday")


def test_runbook_bare_extend_and_release_take_actor_and_session_from_the_environment(
    tmp_path: Path, fleet_env: dict[str, str]
) -> None:
    """Why: `claim-extend <id>` and `claim-release <id>` as the seed's runbook writes them
    exited 64."""
    db = node_db(tmp_path / "mission-control.db", {1: (None, None)})
    env = {**fleet_env}
    assert run(env, "claim", "1", "--actor", "john", "--session", "abc123", db=db).returncode == 0
    session_env = {"MC_ACTOR": "john", "MC_SESSION": "abc123"}

    def run_as(extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(FLEET), "mc", *args, "--db", str(db)]
        full = {k: v for k, v in env.items() if not k.startswith("MC_")} | extra
        return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=60)

    r = run_as(session_env, "claim-extend", "1")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert re.fullmatch(rf"Task 1 extended for john:abc123 until {ISO}\n", r.stdout)

    r = run_as({"MC_ACTOR": "pi-orch", "MC_SESSION": "other"}, "claim-release", "1")
    assert r.returncode == 1
    assert re.fullmatch(rf"Task 1 held by john:abc123 until {ISO}\n", r.stderr)

    r = run_as(session_env, "claim-release", "1")
    assert (r.returncode, r.stdout) == (0, "Task 1 released\n"), r.stderr
    assert lease(db, 1) == (None, None)

    # Neither flags nor environment: still a usage error that names both ways.
    r = run_as({}, "claim-extend", "1")
    assert r.returncode == 64
    assert "--actor" in r.stderr and "MC_ACTOR" in r.stderr


def test_operator_force_release_needs_no_actor(tmp_path: Path, fleet_env: dict[str, str]) -> None:
    db = node_db(tmp_path / "mission-control.db", {1: ("john:abc123", "2026-05-08T12:30:00.000Z")})
    r = run(fleet_env, "claim-release", "1", "--force", db=db)
    assert (r.returncode, r.stdout) == (0, "Task 1 released\n"), r.stderr
    assert lease(db, 1) == (None, None)


def test_show_json_gives_what_mehanik_reads(tmp_path: Path, fleet_env: dict[str, str]) -> None:
    db = node_db(tmp_path / "mission-control.db", {7: ("john:abc123", "2026-05-08T14:30:00+02:00")})
    r = run(fleet_env, "show", "7", "--json", db=db)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "id": 7,
        "title": "task 7",
        "status": "open",
        "lease_holder": "john:abc123",
        "lease_until": "2026-05-08T12:30:00Z",
    }
    assert run(fleet_env, "show", "99", "--json", db=db).returncode == 2


def test_read_only_verbs_leave_the_node_schema_untouched(
    tmp_path: Path, fleet_env: dict[str, str]
) -> None:
    """Why: `fleet mc claim-status` added 4 columns and 2 indexes to mc.js's `tasks`."""
    db = node_db(tmp_path / "mission-control.db", {1: ("john:abc123", "2026-05-08 12:30:00")})
    before = schema(db)
    for args in (["claim-status", "1"], ["claim-sweep"], ["show", "1", "--json"]):
        r = run(fleet_env, *args, db=db)
        assert r.returncode == 0, (args, r.stderr)
    r = run(fleet_env, "claim", "1", "--actor", "a", "--session", "s", db=db)
    assert r.returncode == 0, r.stderr
    r = run(fleet_env, "claim-release", "1", "--actor", "a", "--session", "s", db=db)
    assert r.returncode == 0, r.stderr
    assert schema(db) == before


def test_missing_lease_column_is_a_clear_error_naming_db_table_and_column(
    tmp_path: Path, fleet_env: dict[str, str]
) -> None:
    db = tmp_path / "mission-control.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT, lease_holder TEXT)")
    conn.execute("INSERT INTO tasks(id, title) VALUES (1, 'x')")
    conn.commit()
    conn.close()
    before = schema(db)
    r = run(fleet_env, "claim-status", "1", db=db)
    assert r.returncode == 3
    assert str(db) in r.stderr and "tasks" in r.stderr and "lease_until" in r.stderr
    assert "fleet mc migrate" in r.stderr
    assert schema(db) == before

    # The explicit operator command shows the change, then applies it when asked.
    r = run(fleet_env, "migrate", db=db)
    assert r.returncode == 0, r.stderr
    assert "lease_until" in r.stdout and schema(db) == before
    r = run(fleet_env, "migrate", "--apply", db=db)
    assert r.returncode == 0, r.stderr
    assert run(fleet_env, "claim-status", "1", db=db).stdout == "available\n"

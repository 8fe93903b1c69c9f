"""`fleet mc` verbs as real subprocesses of the installed console script against a real
mission-control.db and a real Postgres database (each test not about SQLite itself runs on
both: the ``mc_backend`` fixture): exit codes, the protocol's stderr line, text and JSON output,
the sweep, the MC_LEASE_ENFORCE rollback flag, and claim races between real processes."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.mc_backends import McBackend

pytestmark = pytest.mark.system

FLEET = Path(sys.executable).parent / "fleet"
ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


@pytest.fixture
def db(mc_backend: McBackend) -> McBackend:
    with mc_backend.store() as store:
        for i in range(1, 4):
            store.create_task(f"task {i}")
    return mc_backend


@pytest.fixture
def sqlite_db(tmp_path: Path) -> McBackend:
    backend = McBackend.sqlite(tmp_path / "databases" / "mission-control.db")
    with backend.store() as store:
        for i in range(1, 4):
            store.create_task(f"task {i}")
    return backend


def fleet(
    db: McBackend | Path, env: dict[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    # Never inherit who we are: the bare forms read $MC_ACTOR/$MC_SESSION.
    env = {k: v for k, v in env.items() if k not in ("MC_ACTOR", "MC_SESSION")}
    if isinstance(db, Path):
        db = McBackend("sqlite", str(db), db.parent)
    return subprocess.run(
        [str(FLEET), "mc", *args, "--db", db.target],
        env={**env, **db.env},
        cwd=db.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lease(db: McBackend, task_id: int) -> tuple[str | None, str | None]:
    return db.lease(task_id)


def seed_expired(db: McBackend, task_id: int, holder: tuple[str, str], minutes_ago: int) -> None:
    """A lease taken long enough ago (10 min TTL) to be `minutes_ago` past its expiry now."""
    then = (datetime.now(UTC) - timedelta(minutes=10 + minutes_ago)).timestamp()
    with db.store(clock=lambda: then) as store:
        store.claim(task_id, *holder, ttl_minutes=10)


# claim -----------------------------------------------------------------------------------------
def test_claim_succeeds_and_reports_the_lease(db: McBackend, fleet_env: dict[str, str]) -> None:
    r = fleet(db, fleet_env, "claim", "1", "--actor", "john", "--session", "abc123")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"Task 1 claimed by john:abc123 until {ISO}\n", r.stdout)
    holder, until = lease(db, 1)
    assert holder == "john:abc123"
    assert until is not None and re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", until)
    remaining = datetime.fromisoformat(until).replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(minutes=9) < remaining <= timedelta(minutes=10)  # default TTL


def test_claim_with_ttl_and_reclaim_by_the_holder(db: McBackend, fleet_env: dict[str, str]) -> None:
    assert fleet(db, fleet_env, "claim", "2", "--actor", "john", "--session", "s").returncode == 0
    r = fleet(
        db, fleet_env, "claim", "2", "--actor", "john", "--session", "s", "--ttl-minutes", "90"
    )
    assert r.returncode == 0, r.stderr
    until = lease(db, 2)[1]
    assert until is not None
    remaining = datetime.fromisoformat(until).replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(minutes=89) < remaining <= timedelta(minutes=90)


def test_claim_held_by_another_exits_1_with_the_protocol_line(
    db: McBackend, fleet_env: dict[str, str]
) -> None:
    assert fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s").returncode == 0
    until = lease(db, 1)[1]
    assert until is not None
    iso = until.replace(" ", "T") + "Z"

    r = fleet(db, fleet_env, "claim", "1", "--actor", "pi-orch", "--session", "xyz456")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"Task 1 held by a:s until {iso}"]
    assert r.stdout == ""
    assert lease(db, 1) == ("a:s", until)


def test_claim_of_an_expired_lease_succeeds(db: McBackend, fleet_env: dict[str, str]) -> None:
    seed_expired(db, 3, ("john", "old"), minutes_ago=5)
    r = fleet(db, fleet_env, "claim", "3", "--actor", "pi-orch", "--session", "new")
    assert r.returncode == 0, r.stderr
    assert lease(db, 3)[0] == "pi-orch:new"


def test_claim_missing_task_exits_2(db: McBackend, fleet_env: dict[str, str]) -> None:
    r = fleet(db, fleet_env, "claim", "999", "--actor", "a", "--session", "s")
    assert r.returncode == 2
    assert "no such task: 999" in r.stderr
    for verb in (
        ["claim-extend", "999", "--actor", "a", "--session", "s"],
        ["claim-release", "999", "--actor", "a", "--session", "s"],
        ["claim-status", "999"],
    ):
        assert fleet(db, fleet_env, *verb).returncode == 2, verb


@pytest.mark.parametrize(
    "args",
    [
        ["claim", "1", "--session", "s"],  # missing --actor
        ["claim", "1", "--actor", "a"],  # missing --session
        ["claim", "one", "--actor", "a", "--session", "s"],  # non-integer id
        ["claim", "1", "--actor", "a:b", "--session", "s"],  # ':' would forge a holder
        ["claim", "1", "--actor", "a", "--session", "s", "--ttl-minutes", "0"],
        ["claim-status"],
    ],
    ids=["no-actor", "no-session", "non-integer-id", "colon-actor", "zero-ttl", "no-id"],
)
def test_usage_errors_exit_64(db: McBackend, fleet_env: dict[str, str], args: list[str]) -> None:
    r = fleet(db, fleet_env, *args)
    assert r.returncode == 64, (r.stdout, r.stderr)
    assert r.stderr.strip()
    assert lease(db, 1) == (None, None)


def test_missing_database_exits_3_and_creates_nothing(
    tmp_path: Path, fleet_env: dict[str, str]
) -> None:
    missing = tmp_path / "databases" / "absent.db"
    missing.parent.mkdir()
    r = fleet(missing, fleet_env, "claim", "1", "--actor", "a", "--session", "s")
    assert r.returncode == 3
    assert "mission control store unavailable" in r.stderr
    assert not missing.exists()


def test_locked_database_exits_3(sqlite_db: McBackend, fleet_env: dict[str, str]) -> None:
    # The CLI waits busy_timeout (1 s) x 3 attempts before giving up.
    db = sqlite_db
    locker = sqlite3.connect(db.target, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        r = fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s", timeout=120)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "mission control store unavailable" in r.stderr
    assert "locked" in r.stderr
    assert lease(db, 1) == (None, None)


# extend / release ------------------------------------------------------------------------------
def test_extend_holder_only(db: McBackend, fleet_env: dict[str, str]) -> None:
    assert fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s").returncode == 0
    before = lease(db, 1)
    r = fleet(db, fleet_env, "claim-extend", "1", "--actor", "b", "--session", "s")
    assert r.returncode == 1
    assert re.fullmatch(rf"Task 1 held by a:s until {ISO}\n", r.stderr)
    assert lease(db, 1) == before

    r = fleet(
        db, fleet_env, "claim-extend", "1", "--actor", "a", "--session", "s", "--ttl-minutes", "60"
    )
    assert r.returncode == 0, r.stderr
    until = lease(db, 1)[1]
    assert until is not None
    remaining = datetime.fromisoformat(until).replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(minutes=59) < remaining <= timedelta(minutes=60)


def test_release_is_holder_only_and_idempotent(db: McBackend, fleet_env: dict[str, str]) -> None:
    assert fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s").returncode == 0

    r = fleet(db, fleet_env, "claim-release", "1", "--actor", "b", "--session", "s")
    assert r.returncode == 1
    assert r.stderr.startswith("Task 1 held by a:s until ")
    assert lease(db, 1)[0] == "a:s"

    r = fleet(db, fleet_env, "claim-release", "1", "--actor", "a", "--session", "s")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Task 1 released\n"
    assert lease(db, 1) == (None, None)

    r = fleet(db, fleet_env, "claim-release", "1", "--actor", "a", "--session", "s")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Task 1 was not claimed\n"


def test_force_release(db: McBackend, fleet_env: dict[str, str]) -> None:
    assert fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s").returncode == 0
    r = fleet(db, fleet_env, "claim-release", "1", "--actor", "ops", "--session", "x", "--force")
    assert r.returncode == 0, r.stderr
    assert lease(db, 1) == (None, None)


# status ----------------------------------------------------------------------------------------
def test_claim_status_text_and_json(db: McBackend, fleet_env: dict[str, str]) -> None:
    r = fleet(db, fleet_env, "claim-status", "1")
    assert (r.returncode, r.stdout) == (0, "available\n")
    r = fleet(db, fleet_env, "claim-status", "1", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"id": 1, "holder": None, "lease_until": None, "expired": False}

    assert fleet(db, fleet_env, "claim", "1", "--actor", "A", "--session", "S").returncode == 0
    iso = (lease(db, 1)[1] or "").replace(" ", "T") + "Z"
    r = fleet(db, fleet_env, "claim-status", "1")
    assert (r.returncode, r.stdout) == (0, f"held by A:S until {iso}\n")
    r = fleet(db, fleet_env, "claim-status", "1", "--json")
    assert json.loads(r.stdout) == {"id": 1, "holder": "A:S", "lease_until": iso, "expired": False}

    seed_expired(db, 2, ("B", "T"), minutes_ago=3)
    iso2 = (lease(db, 2)[1] or "").replace(" ", "T") + "Z"
    r = fleet(db, fleet_env, "claim-status", "2")
    assert (r.returncode, r.stdout) == (0, f"held by B:T until {iso2} (expired)\n")
    r = fleet(db, fleet_env, "claim-status", "2", "--json")
    assert json.loads(r.stdout) == {"id": 2, "holder": "B:T", "lease_until": iso2, "expired": True}


# sweep -----------------------------------------------------------------------------------------
def test_claim_sweep_lists_and_auto_releases_expired_leases(
    db: McBackend, fleet_env: dict[str, str]
) -> None:
    seed_expired(db, 1, ("old", "one"), minutes_ago=30)
    seed_expired(db, 2, ("old", "two"), minutes_ago=5)
    assert fleet(db, fleet_env, "claim", "3", "--actor", "live", "--session", "s").returncode == 0
    iso1 = (lease(db, 1)[1] or "").replace(" ", "T") + "Z"

    r = fleet(db, fleet_env, "claim-sweep", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)["expired"]
    assert json.loads(r.stdout)["unreadable"] == []
    assert [(e["id"], e["holder"], e["released"]) for e in listed] == [
        (1, "old:one", False),
        (2, "old:two", False),
    ]
    assert set(listed[0]) == {"id", "title", "holder", "lease_until", "expired_for_s", "released"}
    assert listed[0]["title"] == "task 1"
    assert listed[0]["lease_until"] == iso1
    assert 30 * 60 - 5 <= listed[0]["expired_for_s"] <= 30 * 60 + 60
    assert lease(db, 1)[0] == "old:one"  # listing alone changes nothing

    r = fleet(db, fleet_env, "claim-sweep")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1\told:one\t") and "expired" in lines[0]

    r = fleet(db, fleet_env, "claim-sweep", "--auto-release", "--json")
    assert r.returncode == 0, r.stderr
    released = json.loads(r.stdout)["expired"]
    assert [(e["id"], e["released"]) for e in released] == [(1, True), (2, True)]
    assert lease(db, 1) == (None, None)
    assert lease(db, 2) == (None, None)
    assert lease(db, 3)[0] == "live:s"

    r = fleet(db, fleet_env, "claim-sweep", "--json")
    assert json.loads(r.stdout) == {"expired": [], "unreadable": []}
    r = fleet(db, fleet_env, "claim-sweep")
    assert r.stdout == "no expired leases\n"


# rollback flag ---------------------------------------------------------------------------------
def test_lease_enforce_off_lets_a_held_task_be_claimed_with_a_warning(
    db: McBackend, fleet_env: dict[str, str]
) -> None:
    assert fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s").returncode == 0
    r = fleet(
        db, {**fleet_env, "MC_LEASE_ENFORCE": "0"}, "claim", "1", "--actor", "b", "--session", "t"
    )
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "MC_LEASE_ENFORCE=0" in r.stderr
    assert lease(db, 1)[0] == "b:t"
    # Enforcement back on: the previous holder is now the one refused.
    r = fleet(db, fleet_env, "claim", "1", "--actor", "a", "--session", "s")
    assert r.returncode == 1
    assert r.stderr.startswith("Task 1 held by b:t until ")


# races -----------------------------------------------------------------------------------------
CLAIMER = textwrap.dedent(
    """
    import json, sys
    from shared.mission_control import LeaseHeld, McTarget, open_store

    db, actor, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    won, held = [], 0
    with open_store(McTarget.from_value(db), create=False) as store:
        print("ready", flush=True)
        sys.stdin.readline()  # start line: every process is connected before anyone claims
        for task_id in range(1, n + 1):
            try:
                store.claim(task_id, actor, "s")
                won.append(task_id)
            except LeaseHeld:
                held += 1
    print(json.dumps({"won": won, "held": held}), flush=True)
    """
)


def test_eight_processes_race_for_200_tasks_each_claimed_exactly_once(
    mc_backend: McBackend, fleet_env: dict[str, str]
) -> None:
    db = mc_backend
    n_tasks, n_procs = 200, 8
    with db.store() as store:
        for i in range(n_tasks):
            store.create_task(f"race {i}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, db.target, f"p{i}", str(n_tasks)],
            env={**fleet_env, **db.env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        for i in range(n_procs)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = {}
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results[f"p{i}:s"] = json.loads(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    wins = Counter(t for r in results.values() for t in r["won"])
    assert sum(wins.values()) == n_tasks
    assert set(wins) == set(range(1, n_tasks + 1))
    assert max(wins.values()) == 1
    assert sum(r["held"] for r in results.values()) == n_tasks * (n_procs - 1)
    final = dict(db.sql("SELECT id, lease_holder FROM tasks"))
    for holder, r in results.items():
        for task_id in r["won"]:
            assert final[task_id] == holder


def test_eight_cli_processes_race_for_one_task(db: McBackend, fleet_env: dict[str, str]) -> None:
    procs = [
        subprocess.Popen(
            [
                str(FLEET),
                "mc",
                "claim",
                "1",
                "--actor",
                f"p{i}",
                "--session",
                "s",
                "--db",
                db.target,
            ],
            env={**fleet_env, **db.env},
            cwd=db.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outcomes = []
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=120)
        outcomes.append((f"p{i}:s", p.returncode, out, err))
    codes = Counter(code for _, code, _, _ in outcomes)
    assert codes == {0: 1, 1: 7}, outcomes
    (winner,) = [holder for holder, code, _, _ in outcomes if code == 0]
    assert lease(db, 1)[0] == winner
    for holder, code, _, err in outcomes:
        if code == 1:
            assert re.fullmatch(rf"Task 1 held by {winner} until {ISO}\n", err), (holder, err)


def test_extend_of_a_free_task_exits_1_and_says_so(
    db: McBackend, fleet_env: dict[str, str]
) -> None:
    r = fleet(db, fleet_env, "claim-extend", "3", "--actor", "a", "--session", "s")
    assert r.returncode == 1
    assert r.stderr.strip() == "Task 3 is not claimed; claim it first"
    assert lease(db, 3) == (None, None)


def test_actor_with_a_colon_is_a_usage_error(db: McBackend, fleet_env: dict[str, str]) -> None:
    for verb in ("claim", "claim-extend", "claim-release"):
        r = fleet(db, fleet_env, verb, "1", "--actor", "a:b", "--session", "s")
        assert r.returncode == 64, (verb, r.stderr)


def test_the_sqlite_hook_path_never_loads_the_postgres_driver(
    sqlite_db: McBackend, fleet_env: dict[str, str]
) -> None:
    """psycopg costs a cold start ~100+ ms: only a Postgres URL may pull it in."""
    probe = (
        "import sys\n"
        "from fleet.entry import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    print('psycopg' in sys.modules, file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, "mc", "claim-status", "1", "--db", sqlite_db.target],
        env=fleet_env,
        cwd=sqlite_db.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout) == (0, "available\n"), r.stderr
    assert r.stderr.strip().splitlines()[-1] == "False"

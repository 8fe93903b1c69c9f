"""Mission Control on a real PostgreSQL server (tests/pg_support.py): two "hosts" (separate
processes, separate fleet roots) racing 10,000 claims, a server restart in the middle of a claim
storm, ``fleet mc migrate --from sqlite: --to postgresql://``, selection by ``$ALAI_MC_URL``,
and the credential rules (no password in a URL, a private password file)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.mission_control import McTarget, MissionControl, open_store
from tests.conftest import free_port, run_fleet, wait_until
from tests.pg_support import PgDatabase

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]


def pg_env(fleet_env: dict[str, str], pg: PgDatabase) -> dict[str, str]:
    return {**fleet_env, "ALAI_MC_URL": pg.url, "ALAI_MC_PASSWORD_FILE": str(pg.password_file)}


def make_tasks(pg: PgDatabase, n: int) -> None:
    with open_store(McTarget(url=pg.url, password_file=pg.password_file)):
        pass  # creates the schema
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (title) SELECT 'race ' || g FROM generate_series(1, %s) g", (n,)
        )


def start_host(env: dict[str, str], root: Path, name: str, *args: str) -> subprocess.Popen[str]:
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mc_claim_host", "--actor", name, *args],
        env={**env, "FLEET_FLEET__ROOT": str(root), "FLEET_FLEET__HOST": name},
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def send(proc: subprocess.Popen[str], line: str = "go") -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in results:
        assert r["errors"] == [], r["errors"]
    return results


def held_in_db(pg: PgDatabase) -> dict[int, str]:
    with psycopg.connect(pg.dsn) as conn:
        rows = conn.execute("SELECT id, lease_holder FROM tasks WHERE lease_holder IS NOT NULL")
        return {int(r[0]): r[1] for r in rows}


def assert_each_task_won_once(results: list[dict[str, Any]], pg: PgDatabase) -> int:
    wins = Counter(t for r in results for ids in r["won"].values() for t in ids)
    assert wins and max(wins.values()) == 1, "a task was won twice"
    in_db = held_in_db(pg)
    assert set(in_db) == set(wins), "a won lease is missing, or a lease nobody won exists"
    for r in results:
        for holder, ids in r["won"].items():
            for t in ids:
                assert in_db[t] == holder
    return len(wins)


# races ---------------------------------------------------------------------------------------
def test_two_hosts_four_workers_race_10000_claims_each_won_exactly_once(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    n = 10_000
    make_tasks(pg_db, n)
    hosts = []
    for name in ("anvil", "forge"):
        # Each host finds the shared store through its own config in its own fleet root.
        root = tmp_path / f"root-{name}"
        root.mkdir()
        config = root / "fleet.toml"
        config.write_text(
            f'[mission_control]\nurl = "{pg_db.url}"\npassword_file = "{pg_db.password_file}"\n'
        )
        args = ("--tasks", str(n), "--workers", "4", "--config", str(config))
        hosts.append(start_host(fleet_env, root, name, *args))
    for h in hosts:
        send(h)
    results = finish(hosts, timeout=600)
    assert assert_each_task_won_once(results, pg_db) == n
    assert sum(r["held"] for r in results) == n * 7  # 8 workers tried every task


def test_postgres_restart_in_a_claim_storm_loses_and_doubles_no_lease(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    n = 20_000
    make_tasks(pg_db, n)
    env = pg_env(fleet_env, pg_db)
    host = start_host(env, tmp_path / "root", "anvil", "--tasks", str(n), "--until-stopped")
    send(host)
    assert wait_until(lambda: len(held_in_db(pg_db)) >= 300, timeout=120, interval=0.05)
    pg_db.server.restart("immediate")  # a crash: open connections are cut mid-statement
    after = len(held_in_db(pg_db))
    assert wait_until(lambda: len(held_in_db(pg_db)) >= after + 300, timeout=120, interval=0.05)
    send(host, "stop")
    (result,) = finish([host], timeout=300)
    assert result["reconnects"] > 0, "the restart did not reach the clients"
    assert assert_each_task_won_once([result], pg_db) >= after + 300


# CLI selection and credentials --------------------------------------------------------------
def test_alai_mc_url_selects_postgres_for_the_hook_verbs(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    make_tasks(pg_db, 2)
    env = pg_env(fleet_env, pg_db)
    r = run_fleet(["mc", "claim", "1", "--actor", "john", "--session", "s1"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert held_in_db(pg_db) == {1: "john:s1"}
    r = run_fleet(["mc", "claim", "1", "--actor", "pi", "--session", "x"], env, tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("Task 1 held by john:s1 until ")
    # Without the variable the same command uses the local SQLite store (the seed's rollback).
    local = {k: v for k, v in env.items() if k != "ALAI_MC_URL"}
    db = tmp_path / "mc.db"
    with MissionControl(db) as store:
        store.create_task("local")
    local["FLEET_MISSION_CONTROL__DB"] = str(db)
    r = run_fleet(["mc", "claim-status", "1"], local, tmp_path)
    assert (r.returncode, r.stdout) == (0, "available\n")


def test_url_with_a_password_is_refused_and_never_printed(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    secret = "s3cret-Pw"
    url = pg_db.url.replace("fleet@", f"fleet:{secret}@")
    for env, args in (
        ({**fleet_env, "ALAI_MC_URL": url}, ["mc", "claim-status", "1"]),
        (fleet_env, ["mc", "claim-status", "1", "--db", url]),
    ):
        r = run_fleet(args, env, tmp_path)
        assert r.returncode == 78, r.stderr
        assert secret not in r.stdout + r.stderr
        assert "password" in r.stderr
    config = tmp_path / "fleet.toml"
    config.write_text(f'[mission_control]\nurl = "{url}"\n')
    r = run_fleet(["mc", "claim-status", "1", "--config", str(config)], fleet_env, tmp_path)
    assert r.returncode == 78, r.stderr
    assert "mission_control.url" in r.stdout + r.stderr
    assert secret not in r.stdout + r.stderr


def test_password_file_readable_by_others_is_refused(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    make_tasks(pg_db, 1)
    env = pg_env(fleet_env, pg_db)
    os.chmod(pg_db.password_file, 0o640)
    r = run_fleet(["mc", "claim-status", "1"], env, tmp_path)
    assert r.returncode == 78
    assert str(pg_db.password_file) in r.stderr and "chmod 600" in r.stderr
    assert pg_db.server.password not in r.stdout + r.stderr
    # Through the config: the generic secrets check names the key.
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[mission_control]\nurl = "{pg_db.url}"\npassword_file = "{pg_db.password_file}"\n'
    )
    plain = {k: v for k, v in env.items() if not k.startswith("ALAI_MC")}
    r = run_fleet(["mc", "claim-status", "1", "--config", str(config)], plain, tmp_path)
    assert r.returncode == 78
    assert "mission_control.password_file" in r.stdout + r.stderr
    os.chmod(pg_db.password_file, 0o600)
    r = run_fleet(["mc", "claim-status", "1", "--config", str(config)], plain, tmp_path)
    assert (r.returncode, r.stdout) == (0, "available\n"), r.stderr


def test_server_down_is_a_store_error_never_held_by_another(
    fleet_env: dict[str, str], tmp_path: Path, pg_db: PgDatabase
) -> None:
    dead = f"postgresql://fleet@127.0.0.1:{free_port()}/mc"
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    r = run_fleet(
        ["mc", "claim", "1", "--actor", "a", "--session", "s", "--db", dead], env, tmp_path
    )
    assert r.returncode == 3, r.stderr
    assert "mission control store unavailable" in r.stderr
    assert "held by" not in r.stderr


# migrate ---------------------------------------------------------------------------------------
def node_style_db(path: Path) -> None:
    """A mission-control.db as mc.js might have it: an extra column, NULL titles, a number in
    a text column, leases in SQLite, ISO and epoch forms."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT, description TEXT,"
        " status TEXT DEFAULT 'open', priority TEXT, assignee TEXT, created_at TEXT,"
        " lease_holder TEXT, lease_until TEXT);"
    )
    rows = [
        (1, "Invoice", None, "open", "high", "john", "2026-05-08 12:00:00", None, None),
        (
            2,
            None,
            "no title",
            "done",
            2,
            None,
            "2026-05-08T12:00:00.250Z",
            "a:s",
            "2099-01-01 00:00:00",
        ),
        (
            3,
            "ISO lease",
            "",
            "open",
            None,
            "pi",
            "2026-05-08 12:00:00",
            "b:t",
            "2026-05-08T12:10:00+02:00",
        ),
        (7, "epoch lease", "x", "open", None, None, 1778241600, "c:u", 1778242200),
    ]
    conn.executemany("INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()


def test_migrate_round_trip_is_exact_and_a_second_run_is_a_noop(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "mission-control.db"
    node_style_db(src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    args = ["mc", "migrate", "--from", f"sqlite:{src}", "--to", pg_db.url]
    first = run_fleet([*args, "--json"], env, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    doc = json.loads(first.stdout)
    assert (doc["tasks"], doc["leases"], doc["inserted"], doc["matches"]) == (4, 3, 4, True)
    assert doc["source_checksum"] == doc["target_checksum"]
    assert doc["extra_columns"] == ["assignee"]
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before, "the source was written"
    with psycopg.connect(pg_db.dsn) as conn:
        got = conn.execute(
            "SELECT id, title, priority, lease_holder, lease_until, extra FROM tasks ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in got] == [
        (1, "Invoice", "high", None, {"assignee": "john"}),
        (2, None, "2", "a:s", {"assignee": None}),
        (3, "ISO lease", None, "b:t", {"assignee": "pi"}),
        (7, "epoch lease", None, "c:u", {"assignee": None}),
    ]
    assert got[2][4].isoformat() == "2026-05-08T10:10:00+00:00"
    # The same answers from both stores, through the hook verbs.
    for task_id in (1, 2, 3, 7):
        a = run_fleet(["mc", "show", str(task_id), "--json", "--db", str(src)], env, tmp_path)
        b = run_fleet(["mc", "show", str(task_id), "--json", "--db", pg_db.url], env, tmp_path)
        assert (a.returncode, b.returncode) == (0, 0), a.stderr + b.stderr
        assert json.loads(a.stdout) == json.loads(b.stdout)
    second = run_fleet(args, env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "nothing to copy" in second.stdout
    again = json.loads(run_fleet([*args, "--json"], env, tmp_path).stdout)
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 4)
    # New tasks on Postgres never reuse a copied id.
    with open_store(McTarget(url=pg_db.url, password_file=pg_db.password_file)) as store:
        assert store.create_task("after the move").id == 8


def test_migrate_resumes_and_copies_only_what_changed(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "mission-control.db"
    with MissionControl(src) as store:
        for i in range(2500):
            store.create_task(f"t{i}")
        store.claim(5, "john", "s")
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    args = ["mc", "migrate", "--from", f"sqlite:{src}", "--to", pg_db.url, "--json"]
    assert run_fleet(args, env, tmp_path).returncode == 0
    # A half-done earlier run: rows past 1000 gone; and a lease changed at the source since.
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM tasks WHERE id > 1000")
    with MissionControl(src) as store:
        store.release(5, "john", "s")
    doc = json.loads(run_fleet(args, env, tmp_path).stdout)
    assert (doc["inserted"], doc["updated"], doc["unchanged"], doc["matches"]) == (
        1500,
        1,
        999,
        True,
    )


def test_migrate_refuses_unreadable_timestamps_and_copies_nothing(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "mission-control.db"
    node_style_db(src)
    conn = sqlite3.connect(src)
    conn.execute("UPDATE tasks SET lease_until = 'next tuesday' WHERE id = 3")
    conn.commit()
    conn.close()
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    r = run_fleet(["mc", "migrate", "--from", f"sqlite:{src}", "--to", pg_db.url], env, tmp_path)
    assert r.returncode == 3
    assert "task 3 lease_until 'next tuesday'" in r.stderr
    with psycopg.connect(pg_db.dsn) as pconn:
        exists = pconn.execute("SELECT to_regclass('public.tasks')").fetchone()
    assert exists == (None,)


def test_wrong_password_fails_at_once_without_retrying(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    env = {**fleet_env, "ALAI_MC_URL": pg_db.url, "ALAI_MC_PASSWORD_FILE": str(wrong)}
    r = run_fleet(["mc", "claim-status", "1"], env, tmp_path)
    assert r.returncode == 3
    assert "password authentication failed" in r.stderr
    assert "gave up after" not in r.stderr  # not retried as if the server were down
    assert "not-the-password" not in r.stdout + r.stderr


def test_empty_database_exit_3_names_the_table_and_migrate_apply_creates_it(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = pg_env(fleet_env, pg_db)
    r = run_fleet(["mc", "claim-status", "1"], env, tmp_path)
    assert r.returncode == 3, r.stderr
    assert "no table tasks" in r.stderr and "fleet mc migrate" in r.stderr
    shown = run_fleet(["mc", "migrate", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["applied"] is False
    assert run_fleet(["mc", "migrate", "--apply"], env, tmp_path).returncode == 0
    r = run_fleet(["mc", "claim-status", "1"], env, tmp_path)
    assert r.returncode == 2 and "no such task: 1" in r.stderr
    again = run_fleet(["mc", "migrate"], env, tmp_path)
    assert "nothing to do" in again.stdout

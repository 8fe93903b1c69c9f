"""An operator's worst day against the Postgres backends (tests/pg_support.py, a real server):
a row lock another session never lets go; a host whose wall clock is an hour ahead (Mission
Control leases and the outbox's send leases); a password slipped into the URL's query string;
a second migration after tasks were created on Postgres, one stopped after a batch, and source
text Postgres cannot hold; going back to the SQLite outbox after a move stopped half-way; a
backend frozen with SIGSTOP (later calls, and shutdown); migrate and the configured password
file. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from shared.mc_migrate import MigrationReport, migrate_sqlite_to_postgres
from shared.mc_postgres import PostgresMissionControl
from shared.mission_control import McTarget, MissionControl, StoreError, open_store
from shared.notify import Message
from shared.notify.outbox_adopt import take_undelivered
from shared.notify.outbox_postgres import PostgresOutbox
from shared.notify.outbox_sqlite import SqliteOutbox
from tests.conftest import run_fleet
from tests.pg_support import PgDatabase

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]

#: ``fleet`` run by a host whose wall clock is an hour ahead of the server's and the others'
_SKEWED_FLEET = (
    "import sys, time\n"
    "_real = time.time\n"
    "time.time = lambda: _real() + 3600.0\n"
    "from fleet.cli import main\n"
    "sys.argv[0] = 'fleet'\n"
    "sys.exit(main())\n"
)


#: a second host's sender, its wall clock an hour ahead, running one requeue pass
_SKEWED_REQUEUE = (
    "import asyncio, sys, time\n"
    "_real = time.time\n"
    "time.time = lambda: _real() + 3600.0\n"
    "from shared.notify.outbox_postgres import PostgresOutbox\n"
    "async def main() -> None:\n"
    "    ob = await PostgresOutbox(sys.argv[1], password=sys.argv[2]).open()\n"
    "    print(await ob.requeue_abandoned())\n"
    "    await ob.close()\n"
    "asyncio.run(main())\n"
)


def pg_env(fleet_env: dict[str, str], pg: PgDatabase) -> dict[str, str]:
    return {**fleet_env, "ALAI_MC_URL": pg.url, "ALAI_MC_PASSWORD_FILE": str(pg.password_file)}


def one_task(pg: PgDatabase) -> None:
    with open_store(McTarget(url=pg.url, password_file=pg.password_file)) as store:
        store.create_task("contended")


def test_claim_under_a_row_lock_never_released_gives_up_instead_of_hanging(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """An operator's psql left ``BEGIN; SELECT ... FOR UPDATE`` open on the task: the hook
    verb must fail as a store error (exit 3) within its retry budget, not wait forever."""
    one_task(pg_db)
    env = pg_env(fleet_env, pg_db)
    with psycopg.connect(pg_db.dsn) as locker:  # not autocommit: the transaction stays open
        locker.execute("SELECT id FROM tasks WHERE id = 1 FOR UPDATE")
        try:
            r = run_fleet(["mc", "claim", "1", "--actor", "a", "--session", "s"], env, tmp_path)
        except subprocess.TimeoutExpired:
            pytest.fail("fleet mc claim still waiting on the row lock after 60 s")
        locker.rollback()
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "gave up after" in r.stderr
    assert pg_db.server.password not in r.stdout + r.stderr
    # With the lock gone the same verb works.
    r = run_fleet(["mc", "claim", "1", "--actor", "a", "--session", "s"], env, tmp_path)
    assert r.returncode == 0, r.stderr


def run_skewed_fleet(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SKEWED_FLEET, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_host_whose_clock_is_ahead_cannot_take_a_live_lease(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Who decides "now" on a shared lease store: the server. A host an hour ahead must see
    another host's fresh 10-minute lease as held, and must not write leases an hour long."""
    one_task(pg_db)
    env = pg_env(fleet_env, pg_db)
    r = run_fleet(["mc", "claim", "1", "--actor", "anvil", "--session", "s"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_skewed_fleet(["mc", "claim", "1", "--actor", "forge", "--session", "t"], env, tmp_path)
    assert r.returncode != 0, "the host an hour ahead took a lease that is live for 10 minutes"
    assert "anvil:s" in r.stderr
    # Its own claims run on the server's time too: 10 minutes from the server's now.
    with open_store(McTarget(url=pg_db.url, password_file=pg_db.password_file)) as store:
        store.create_task("second")
    r = run_skewed_fleet(["mc", "claim", "2", "--actor", "forge", "--session", "t"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    with psycopg.connect(pg_db.dsn) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM lease_until - now()) FROM tasks WHERE id = 2"
        ).fetchone()
    assert row is not None and float(row[0]) <= 600


async def test_a_sender_whose_clock_is_ahead_does_not_requeue_a_send_in_flight(
    pg_db: PgDatabase, tmp_path: Path
) -> None:
    """Host A claimed a row for 60 s and is talking to Slack; host B's clock is an hour ahead.
    B's requeue pass must not see A's claim as abandoned (it would send the message again)."""
    password = pg_db.password_file.read_text().strip()
    a = await PostgresOutbox(pg_db.url, password=password).open()
    try:
        assert await a.enqueue(Message("#ops", "disk full on anvil", "skew:1"))
        [row] = await a.ready(include_alerts=True, limit=10)
        assert await a.claim(row.id, "anvil:1:a", 60.0)
        b = subprocess.run(
            [sys.executable, "-c", _SKEWED_REQUEUE, pg_db.url, password],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert b.returncode == 0, b.stderr
        with psycopg.connect(pg_db.dsn) as conn:
            status = conn.execute("SELECT status, claimed_by FROM outbox").fetchall()
        assert status == [("sending", "anvil:1:a")], "an in-flight send was requeued"
        assert b.stdout.strip() == "0"
    finally:
        await a.close()


def test_a_password_in_the_url_query_string_is_refused_and_never_printed(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """libpq takes ``?password=`` as well as ``user:password@``: both must be refused (exit 78)
    and neither printed. The database is empty, so any verb that got through names the store
    in its error."""
    env = {**fleet_env, "ALAI_MC_URL": f"{pg_db.url}?password={pg_db.server.password}"}
    r = run_fleet(["mc", "claim-status", "1"], env, tmp_path)
    assert pg_db.server.password not in r.stdout + r.stderr
    assert r.returncode == 78, (r.returncode, r.stderr)


def test_migrate_again_after_tasks_were_created_on_postgres_overwrites_none_of_them(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """A first copy, then one host already on Postgres creates a task while mc.js still
    writes the SQLite file (the cutover window, or a rollback and roll forward): both stores
    now hold a different task 4. The next run must not replace the Postgres one with the
    SQLite one: it refuses, naming the task, and writes nothing."""
    src = tmp_path / "mission-control.db"
    with MissionControl(src, clock=lambda: 1_777_000_000.0) as store:
        for title in ("one", "two", "three"):
            store.create_task(title)
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    args = ["mc", "migrate", "--from", f"sqlite:{src}", "--to", pg_db.url]
    first = run_fleet(args, env, tmp_path)
    assert first.returncode == 0, first.stderr
    with open_store(McTarget(url=pg_db.url, password_file=pg_db.password_file)) as pg:
        assert pg.create_task("incident seen by anvil").id == 4
    with MissionControl(src, clock=lambda: 1_777_000_600.0) as store:
        assert store.create_task("written by mc.js meanwhile").id == 4
        store.claim(2, "john", "s")  # and a change to a copied task
    again = run_fleet(args, env, tmp_path)
    with psycopg.connect(pg_db.dsn) as conn:
        titles = dict(conn.execute("SELECT id, title FROM tasks").fetchall())
        leased = conn.execute("SELECT lease_holder FROM tasks WHERE id = 2").fetchone()
    assert titles[4] == "incident seen by anvil", "migrate overwrote a task created on Postgres"
    assert again.returncode == 3, again.stderr
    assert "task 4" in again.stderr
    assert leased == (None,)  # refused before writing anything


def test_migrate_names_a_task_whose_text_postgres_cannot_hold_and_copies_nothing(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """SQLite text may hold NUL characters (an email subject pasted by a Node tool); Postgres
    text and jsonb cannot. The migration must name the task and column before writing
    anything, as it does for an unreadable timestamp, not fail half-way with the driver's
    message."""
    src = tmp_path / "mission-control.db"
    with MissionControl(src) as store:
        for i in range(1500):
            store.create_task(f"t{i}")
    conn = sqlite3.connect(src)
    conn.execute("UPDATE tasks SET title = ? WHERE id = 1200", ("Re: invoice\x00attached",))
    conn.execute("ALTER TABLE tasks ADD COLUMN assignee TEXT")
    conn.execute("UPDATE tasks SET assignee = ? WHERE id = 1300", ("jo\x00hn",))
    conn.commit()
    conn.close()
    env = {**fleet_env, "ALAI_MC_PASSWORD_FILE": str(pg_db.password_file)}
    r = run_fleet(["mc", "migrate", "--from", f"sqlite:{src}", "--to", pg_db.url], env, tmp_path)
    assert r.returncode == 3, r.stderr
    assert "task 1200 title" in r.stderr and "task 1300 assignee" in r.stderr, r.stderr
    with psycopg.connect(pg_db.dsn) as pconn:
        exists = pconn.execute("SELECT to_regclass('public.tasks')").fetchone()
        copied = (
            pconn.execute("SELECT count(*) FROM tasks").fetchone() if exists != (None,) else (0,)
        )
    assert copied == (0,)


async def test_going_back_to_sqlite_after_a_move_stopped_half_way_sends_the_rows(
    tmp_path: Path,
) -> None:
    """The move's phase one marked the file's undelivered rows ``moving``, then the server
    died before they were stored there; the operator goes back (empties ``[notify] url``). The
    file's outbox must send them: docs/notifications.md promises they are never lost."""
    db = tmp_path / "outbox.db"
    local = await SqliteOutbox(db).open()
    assert await local.enqueue(Message("#ops", "disk full on anvil", "moving:1"))
    await local.close()
    assert len(take_undelivered(db)) == 1  # phase one; phase two never ran
    back = await SqliteOutbox(db).open()
    try:
        ready = await back.ready(include_alerts=True, limit=10)
        assert [r.dedup_key for r in ready] == ["moving:1"], "the row is stranded as 'moving'"
        assert await back.pending_count() == 1
    finally:
        await back.close()


def test_a_frozen_backend_fails_later_mission_control_calls_instead_of_piling_up(
    pg_db: PgDatabase,
) -> None:
    """The claim-sweeper's connection is held by a backend that never answers (SIGSTOP): its
    call waits (the cycle times out around it), and every later call from another worker
    thread must fail with a StoreError in bounded time, not queue behind it forever (one more
    stuck thread per cycle)."""
    one_task(pg_db)
    store = PostgresMissionControl(
        pg_db.url, password_file=pg_db.password_file, retry_s=1.0, connect_timeout_s=2
    ).open()
    assert store.status(1).holder is None
    with psycopg.connect(pg_db.dsn) as conn:
        [(pid,)] = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'alai-fleet'"
            " AND datname = %s",
            (pg_db.name,),
        ).fetchall()
    results: dict[str, object] = {}

    def call(name: str) -> None:
        try:
            results[name] = store.status(1)
        except StoreError as exc:
            results[name] = exc

    os.kill(pid, signal.SIGSTOP)
    try:
        stuck = threading.Thread(target=call, args=("stuck",), daemon=True)
        stuck.start()
        deadline = time.monotonic() + 30
        while not (store._conn is not None and store._conn.lock.locked()):
            assert time.monotonic() < deadline, "the first call never reached the server"
            time.sleep(0.01)
        later = threading.Thread(target=call, args=("later",), daemon=True)
        later.start()
        later.join(timeout=60)
        assert not later.is_alive(), "a later call is queued behind the frozen one"
        assert isinstance(results["later"], StoreError), results
        assert stuck.is_alive()
        # Shutting down: close() must free the stuck worker thread too (a thread blocked
        # forever keeps the process from exiting), the backend still frozen.
        store.close()
        stuck.join(timeout=60)
        assert not stuck.is_alive(), "close() left a worker thread blocked on the frozen backend"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert store.status(1).holder is None
    store.close()


def test_a_migration_stopped_after_a_batch_leaves_new_tasks_ids_past_the_copied_ones(
    pg_db: PgDatabase, tmp_path: Path
) -> None:
    """The migration stops after its first batch (Ctrl-C, a lost connection); a host already
    on Postgres (the email-reactor) creates a task meanwhile. It must get a fresh id, not
    fail on a duplicate key of a copied task (nor, worse, take an id the next run copies)."""
    src = tmp_path / "mission-control.db"
    with MissionControl(src) as store:
        for i in range(2500):
            store.create_task(f"t{i}")

    class Stop(Exception):
        pass

    def stop_after_first_batch(_report: MigrationReport) -> None:
        raise Stop

    target = PostgresMissionControl(pg_db.url, password_file=pg_db.password_file)
    with pytest.raises(Stop):
        migrate_sqlite_to_postgres(src, target, progress=stop_after_first_batch)
    target.close()
    with open_store(McTarget(url=pg_db.url, password_file=pg_db.password_file)) as pg:
        created = pg.create_task("mail from a customer")
    assert created.id > 2500
    target = PostgresMissionControl(pg_db.url, password_file=pg_db.password_file)
    report = migrate_sqlite_to_postgres(src, target)
    target.close()
    assert report.inserted == 1500
    assert report.target_tasks == 2501


async def test_closing_the_outbox_frees_a_call_stuck_on_a_frozen_backend(
    pg_db: PgDatabase,
) -> None:
    """Shutdown with a call stuck on a backend that never answers: close() must end that
    worker thread (a blocked thread keeps the daemon from exiting), backend still frozen."""
    password = pg_db.password_file.read_text().strip()
    ob = PostgresOutbox(
        pg_db.url, password=password, retry_s=1.0, statement_timeout_ms=1000, connect_timeout_s=2
    )
    await ob.open()
    with psycopg.connect(pg_db.dsn) as conn:
        [(pid,)] = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'alai-fleet-outbox'"
            " AND datname = %s",
            (pg_db.name,),
        ).fetchall()
    os.kill(pid, signal.SIGSTOP)
    try:
        stuck = asyncio.create_task(ob.pending_count())
        deadline = time.monotonic() + 30
        while not ob._lock.locked():
            assert time.monotonic() < deadline, "the call never reached the server"
            await asyncio.sleep(0.01)
        await asyncio.wait_for(ob.close(), 60)
        done, _ = await asyncio.wait({stuck}, timeout=60)
        assert stuck in done, "close() left a worker thread blocked on the frozen backend"
        with pytest.raises(StoreError):
            stuck.result()
    finally:
        os.kill(pid, signal.SIGCONT)


def test_migrate_takes_the_configured_password_file(
    pg_db: PgDatabase, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "mission-control.db"
    with MissionControl(src) as store:
        store.create_task("one")
    env = {**fleet_env, "FLEET_MISSION_CONTROL__PASSWORD_FILE": str(pg_db.password_file)}
    r = run_fleet(["mc", "migrate", "--from", f"sqlite:{src}", "--to", pg_db.url], env, tmp_path)
    assert r.returncode == 0, r.stderr

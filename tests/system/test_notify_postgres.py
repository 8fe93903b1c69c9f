"""The outbox on a real PostgreSQL server (``[notify] url``; tests/pg_support.py starts it).

- The unit tests of the store, the sender and the clock-step rules run here again, unchanged,
  on Postgres (the unit directory forbids the network): the same dedup, claim, retry/backoff,
  dead-letter, collapse, silence, prune and rate-limit semantics on both backends.
- Two "hosts" (separate processes, separate fleet roots and configs, one Postgres) enqueue the
  same dedup keys at the same moment: each key reaches the fake Slack exactly once.
- Real daemons: `fleet run claim-sweeper --once` on two hosts (Mission Control on the same
  Postgres) alert the same expired lease: one Slack message with the outbox on Postgres, two
  with a SQLite outbox per host (the control).
- Switching a host moves what its outbox.db still holds undelivered, once; a frozen server
  backend makes later calls fail in bounded time instead of wedging.
- Postgres stopped while rows are pending, and restarted in the middle of a drain: the sender
  fails its steps (counted, never crashing), and once the server is back every row is sent,
  none lost, none twice.
- A URL with a password in it is refused at config load (exit 78 naming the key); the password
  never appears in what the outbox raises.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from shared.notify import Message, OutboxSender, SlackSink, outbox_for
from shared.notify.outbox_adopt import MOVED_NOTE
from shared.notify.outbox_postgres import PostgresOutbox
from shared.notify.outbox_sqlite import SqliteOutbox
from shared.sections import SlackSection
from shared.sqlite import StoreError
from tests.fakes import FakeSlack
from tests.fakes.slack import DEFAULT_TOKEN
from tests.mc_backends import McBackend
from tests.notify_support import rows
from tests.outbox_backends import OutboxBackend
from tests.outbox_backends import postgres_outbox_backend as postgres_outbox_backend
from tests.pg_support import PgDatabase
from tests.recording_log import RecordingLog
from tests.unit import test_notify_outbox as store_tests
from tests.unit import test_notify_sender as sender_tests

# The unit tests' semantics, again on Postgres (fixtures and tests taken as they are).
clock = store_tests.clock
db_path = store_tests.db_path
outbox = store_tests.outbox
test_burst_summary_row_is_what_the_plan_says = (
    store_tests.test_burst_summary_row_is_what_the_plan_says
)
test_waiting_summary_absorbs_new_alerts_and_keeps_its_backoff = (
    store_tests.test_waiting_summary_absorbs_new_alerts_and_keeps_its_backoff
)
test_a_lone_held_alert_is_released_not_summarized = (
    store_tests.test_a_lone_held_alert_is_released_not_summarized
)
test_two_outboxes_collapsing_at_once_make_one_summary = (
    store_tests.test_two_outboxes_collapsing_at_once_make_one_summary
)
test_collapsed_alerts_outlive_prune_while_their_summary_is_undelivered = (
    store_tests.test_collapsed_alerts_outlive_prune_while_their_summary_is_undelivered
)
test_enqueue_is_idempotent_per_dedup_key = store_tests.test_enqueue_is_idempotent_per_dedup_key
test_unexpected_sink_exception_pushes_the_row_back_instead_of_crashing = (
    sender_tests.test_unexpected_sink_exception_pushes_the_row_back_instead_of_crashing
)
test_failed_send_is_retried_after_the_backoff_and_a_permanent_one_goes_dead = (
    sender_tests.test_failed_send_is_retried_after_the_backoff_and_a_permanent_one_goes_dead
)
test_a_delivery_the_store_failed_to_mark_is_marked_next_step_not_resent = (
    sender_tests.test_a_delivery_the_store_failed_to_mark_is_marked_next_step_not_resent
)
test_run_drains_a_backlog_without_idling_then_stops = (
    sender_tests.test_run_drains_a_backlog_without_idling_then_stops
)

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake
    assert fake.errors == []


def _private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _host_config(root: Path, pg: PgDatabase, slack: FakeSlack) -> Path:
    """A host's own fleet root and config: the outbox on the shared Postgres."""
    root.mkdir(parents=True)
    token = _private(root / "secrets" / "slack-token", DEFAULT_TOKEN + "\n")
    password = _private(root / "secrets" / "pg-password", pg.password_file.read_text())
    return _private(
        root / "fleet.toml",
        f'[fleet]\nroot = "{root}"\n\n'
        f'[slack]\nbase_url = "{slack.base_url}"\ntoken_file = "{token}"\n\n'
        f'[notify]\nurl = "{pg.url}"\npassword_file = "{password}"\nrate_per_minute = 1000\n',
    )


def _host_env(tmp_path: Path, host: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ALAI_MC"))}
    env["HOME"] = str(tmp_path / f"home-{host}")
    env["FLEET_FLEET__HOST"] = host
    env["PYTHONPATH"] = str(REPO)
    return env


# two hosts, one outbox -----------------------------------------------------------------------
def test_two_hosts_enqueueing_the_same_keys_send_each_once(
    tmp_path: Path, pg_db: PgDatabase, slack: FakeSlack
) -> None:
    keys = [f"disk-full:{i}" for i in range(25)]
    go = tmp_path / "go"
    procs = []
    for host in ("host-a", "host-b"):
        config = _host_config(tmp_path / host, pg_db, slack)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.outbox_host", str(config), str(go), host, *keys],
                cwd=tmp_path,
                env=_host_env(tmp_path, host),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    assert procs[0].stdout is not None and procs[1].stdout is not None
    for proc in procs:  # both have their outbox open: start the race
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["ready"], proc.stderr.read() if proc.stderr else line
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    stored = Counter(k for r in results for k in r["enqueued"])
    assert stored == Counter(keys)  # each key stored by exactly one host
    delivered = Counter(m.text for m in slack.messages)
    assert delivered == Counter(f"incident {k}" for k in keys)  # each sent exactly once
    assert pg_db.password_file.read_text().strip() not in "".join(str(r) for r in results)


# Postgres down and restarted -----------------------------------------------------------------
async def _wait_for(cond: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
    async def _poll() -> None:
        while not await cond():
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(_poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_rows_pending_while_postgres_is_down_are_sent_once_it_returns(
    outbox_backend: OutboxBackend, pg_db: PgDatabase, slack: FakeSlack
) -> None:
    ob = await outbox_backend.open()
    assert isinstance(ob, PostgresOutbox)
    failures: list[BaseException] = []
    sender = OutboxSender(
        ob,
        {"slack": SlackSink(SlackSection(base_url=slack.base_url, token=SecretStr(DEFAULT_TOKEN)))},
        outbox_backend.settings(rate_per_minute=10_000, burst=10_000),
        log=RecordingLog(),
        on_store_error=failures.append,
        rand=None,
    )
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None

    async def sent_at_least(n: int) -> bool:
        return len(slack.messages) >= n

    async def all_marked_sent() -> bool:
        return await ob.counts() == {"sent": 320}

    async def failed() -> bool:
        return bool(failures)

    try:
        for i in range(20):
            await ob.enqueue(Message("#ceo", f"before {i}", f"before:{i}", kind="push"))
        pg_db.server.stop("fast")
        task = asyncio.create_task(sender.run(stop, idle_s=0.05))
        await _wait_for(failed, "a failed step while the server is down")
        assert slack.messages == [] and not task.done()
        assert all(isinstance(f, StoreError) for f in failures)
        assert pg_db.server.password not in " ".join(str(f) for f in failures)
        pg_db.server.start()
        await _wait_for(lambda: sent_at_least(20), "the backlog after the server returned")

        # Restarted (as by a crash) in the middle of a drain: nothing lost, nothing sent twice.
        for i in range(300):
            await ob.enqueue(Message("#ceo", f"during {i}", f"during:{i}", kind="push"))
        await _wait_for(lambda: sent_at_least(40), "the drain to be under way")
        pg_db.server.restart("immediate")
        await _wait_for(lambda: sent_at_least(320), "every row after the restart", 120)
        await _wait_for(all_marked_sent, "every row marked sent")
        assert not task.done()  # the sender never crashed
    finally:
        stop.set()
        pg_db.server.ensure_running()
        if task is not None:
            await asyncio.wait_for(task, 60)
        await ob.close()
    texts = Counter(m.text for m in slack.messages)
    expected = [f"before {i}" for i in range(20)] + [f"during {i}" for i in range(300)]
    assert texts == Counter(expected)  # every row, each exactly once
    assert ob.reconnects >= 1


def test_a_password_in_the_url_is_refused_by_name(tmp_path: Path, pg_db: PgDatabase) -> None:
    config = _private(
        tmp_path / "fleet.toml",
        f'[fleet]\nroot = "{tmp_path}"\n\n[notify]\nurl = "{pg_db.dsn}"\n',
    )
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "fleet"), "silence", "show", "--config", str(config)],
        env=_host_env(tmp_path, "host-a"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78, proc.stderr
    assert "notify.url" in proc.stderr
    assert pg_db.server.password not in proc.stdout + proc.stderr


def test_fleet_silence_on_one_host_holds_alerts_on_every_host(
    tmp_path: Path, pg_db: PgDatabase, slack: FakeSlack
) -> None:
    configs = [_host_config(tmp_path / h, pg_db, slack) for h in ("host-a", "host-b")]
    fleet = str(Path(sys.executable).parent / "fleet")
    env = _host_env(tmp_path, "host-a")
    run = subprocess.run(
        [fleet, "silence", "set", "--for", "2h", "--reason", "drill", "--config", str(configs[0])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    show = subprocess.run(
        [fleet, "silence", "show", "--json", "--config", str(configs[1])],
        env=_host_env(tmp_path, "host-b"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert (shown["active"], shown["reason"]) == (True, "drill")


def test_fleet_silence_with_the_server_down_exits_3_naming_the_outbox(
    tmp_path: Path, pg_db: PgDatabase, slack: FakeSlack
) -> None:
    config = _host_config(tmp_path / "host-a", pg_db, slack)
    pg_db.server.stop("fast")
    try:
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "fleet"),
                "silence",
                "show",
                "--config",
                str(config),
            ],
            env=_host_env(tmp_path, "host-a"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        pg_db.server.start()
    assert proc.returncode == 3, proc.stderr
    assert "outbox unavailable" in proc.stderr and "Traceback" not in proc.stderr
    assert pg_db.server.password not in proc.stdout + proc.stderr


async def test_a_frozen_server_backend_fails_later_calls_instead_of_wedging(
    pg_db: PgDatabase,
) -> None:
    """A backend that holds the TCP connection but never answers (SIGSTOP): the call on it
    waits, later calls give up with a StoreError after a bounded wait (no pile-up of threads
    behind it), and once the backend runs again everything works."""
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

        async def lock_taken() -> bool:
            return ob._lock.locked()

        await _wait_for(lock_taken, "the first call to reach the server")
        with pytest.raises(StoreError, match="still waiting on the server"):
            await asyncio.wait_for(ob.enqueue(Message("#ops", "x", "frozen:1")), 60)
        assert not stuck.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await asyncio.wait_for(stuck, 60) == 0
    assert await ob.enqueue(Message("#ops", "x", "frozen:1")) is True
    await ob.close()


async def test_switching_a_host_to_postgres_moves_its_undelivered_rows_once(
    outbox_backend: OutboxBackend, pg_db: PgDatabase
) -> None:
    settings = outbox_backend.settings()
    local = await SqliteOutbox(settings.outbox_db).open()
    for key in ("k1", "k2", "k3", "delivered"):
        await local.enqueue(Message("#ops", f"local {key}", key))
    [row] = [
        r for r in await local.ready(include_alerts=True, limit=10) if r.dedup_key == "delivered"
    ]
    assert await local.claim(row.id, "old-sender", 60)
    await local.mark_sent(row.id, "old-sender")
    await local.close()
    other_host = await outbox_backend.open()
    await other_host.enqueue(Message("#ops", "from the other host", "k1"))  # already here
    await other_host.close()

    ob = await outbox_for(settings).open()
    await ob.close()
    assert isinstance(ob, PostgresOutbox) and ob.moved == 2
    shared = {r["dedup_key"]: r for r in rows(pg_db)}
    assert set(shared) == {"k1", "k2", "k3"}
    assert shared["k1"]["text"] == "from the other host"  # dedup: stored once
    assert {shared[k]["status"] for k in shared} == {"pending"}
    old = {r["dedup_key"]: (r["status"], r["last_error"]) for r in rows(settings.outbox_db)}
    assert old == {
        "k1": ("dead", MOVED_NOTE),
        "k2": ("dead", MOVED_NOTE),
        "k3": ("dead", MOVED_NOTE),
        "delivered": ("sent", None),
    }

    again = await outbox_for(settings).open()  # the next start: nothing left to move
    await again.close()
    assert isinstance(again, PostgresOutbox) and again.moved == 0
    assert len(rows(pg_db)) == 3


# real daemons ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shared_outbox", [True, False], ids=["postgres-outbox", "sqlite-outboxes"])
def test_two_hosts_sweepers_alerting_one_expired_lease_send_one_message(
    tmp_path: Path, pg_db: PgDatabase, slack: FakeSlack, shared_outbox: bool
) -> None:
    """`fleet run claim-sweeper --once` on two hosts (own roots), Mission Control on the shared
    Postgres: both see the same expired lease and enqueue the same dedup key. With the outbox
    on Postgres one message reaches Slack; with a SQLite outbox per host (the control), two."""
    mc = McBackend.postgres(pg_db, tmp_path)
    past = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    with mc.store(clock=lambda: past) as store:
        task = store.create_task("stuck deploy").id
        store.claim(task, "pi-orch", "s1", ttl_minutes=10)
    for host in ("host-a", "host-b"):
        root = tmp_path / host
        root.mkdir()
        env = {
            **_host_env(tmp_path, host),
            **mc.select_env,
            "FLEET_FLEET__ROOT": str(root),
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": DEFAULT_TOKEN,
        }
        if shared_outbox:
            env["FLEET_NOTIFY__URL"] = pg_db.url
            env["FLEET_NOTIFY__PASSWORD_FILE"] = str(pg_db.password_file)
        res = subprocess.run(
            [str(Path(sys.executable).parent / "fleet"), "run", "claim-sweeper", "--once"],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert pg_db.server.password not in res.stdout + res.stderr
    about_task = [m for m in slack.messages if f"Task {task}" in m.text]
    assert len(about_task) == (1 if shared_outbox else 2)
    assert mc.lease(task)[0] == "pi-orch:s1"  # report only: nobody released it

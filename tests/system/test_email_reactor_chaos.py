"""kill -9 of `fleet run email-reactor` 20 times in the middle of a 200-email backlog, then run
to completion: every email decided exactly once, one audit line each, no task created twice,
no push lost.

Each kill is driven by progress, not by the wall clock: the test waits until the running daemon
has written a random 1..6 new decision rows to the inbox DB, then sends SIGKILL. So every kill
lands mid-work however fast or loaded the machine is. Deadlines only bound a failure."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, free_port, run_fleet, wait_until
from tests.email_fixtures import add_bulk
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.system

EMAILS = 200
KILLS = 20
ROWS_PER_KILL = (1, 6)  # new decision rows to see before each kill: at most ~120 of the 200
# Generous bounds on a failure (a daemon that never starts deciding, a backlog that never
# drains); a passing run never waits for them.
KILL_DEADLINE_S = 120.0
FINISH_DEADLINE_S = 300.0


def subject_for(i: int) -> str:
    return f"Contract {i}" if i % 3 == 0 else f"Chat {i}"


def has_decisions_table(conn: sqlite3.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'reactor_decisions'"
        ).fetchone()[0]
    )


def decided_count(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        if not has_decisions_table(conn):
            return 0
        return int(conn.execute("SELECT count(*) FROM reactor_decisions").fetchone()[0])
    finally:
        conn.close()


def inbox_counts(db: Path) -> tuple[int, int, int]:
    """(decided, push enqueue still owed, push not yet confirmed delivered) in the inbox DB."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        if not has_decisions_table(conn):
            return 0, 0, 0
        decided = conn.execute("SELECT count(*) FROM reactor_decisions").fetchone()[0]
        owed = conn.execute(
            "SELECT count(*) FROM reactor_decisions WHERE push_key IS NOT NULL"
            " AND push_enqueued_at IS NULL"
        ).fetchone()[0]
        unconfirmed = conn.execute(
            "SELECT count(*) FROM reactor_decisions d JOIN emails e ON e.id = d.email_id"
            " WHERE d.push_key IS NOT NULL AND e.reactor_pushed_at IS NULL"
        ).fetchone()[0]
        return int(decided), int(owed), int(unconfirmed)
    finally:
        conn.close()


def kill_after_new_decisions(
    env: dict[str, str], cwd: Path, db: Path, new_rows: int, log: Path
) -> int:
    """Start the daemon, SIGKILL it once ``new_rows`` more decisions are committed; return the
    decision count right after the kill."""
    target = decided_count(db) + new_rows
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "email-reactor"],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        reached = wait_until(
            lambda: proc.poll() is not None or decided_count(db) >= target,
            timeout=KILL_DEADLINE_S,
            interval=0.01,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    tail = log.read_text(errors="replace")[-3000:]
    assert reached, f"no {new_rows} new decisions within {KILL_DEADLINE_S}s:\n{tail}"
    assert proc.returncode == -signal.SIGKILL, f"the daemon exited by itself:\n{tail}"
    return decided_count(db)


def test_kill_dash_nine_twenty_times_loses_and_doubles_nothing(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    db = fleet_root / "databases/email-inbox.db"
    ids = add_bulk(db, EMAILS, subject_for=subject_for)
    rng = random.Random(20261123)
    with FakeLLM(latency_s=0.15) as llm, FakeSlack() as slack:
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__INTERVAL_S": "0.2",
            "FLEET_EMAIL_REACTOR__MAX_EMAILS_PER_CYCLE": "40",
            "FLEET_EMAIL_REACTOR__PUSHES_PER_CYCLE": "7",
            "FLEET_EMAIL_REACTOR__METRICS_PORT": str(free_port()),
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
            "FLEET_SLACK__TIMEOUT_S": "5",
            "FLEET_NOTIFY__SEND_LEASE_S": "11",  # must exceed the Slack timeout + 5
            "FLEET_NOTIFY__BURST": "1000",
            "FLEET_NOTIFY__RATE_PER_MINUTE": "1000",
        }
        progress = [
            kill_after_new_decisions(
                env, tmp_path, db, rng.randint(*ROWS_PER_KILL), tmp_path / f"kill-{k:02d}.log"
            )
            for k in range(KILLS)
        ]
        # Every kill landed in the middle of the work: after new decisions, before the end.
        assert len(progress) == KILLS
        assert all(0 < n < EMAILS for n in progress), progress
        assert progress == sorted(set(progress)), progress
        # Then run to completion: every email decided, every push enqueued, delivered and
        # confirmed. A send cut by a kill is retried only once its lease (11 s) lapses, so a
        # pass that changes nothing is followed by a short pause before the next one.
        deadline = time.monotonic() + FINISH_DEADLINE_S
        state = inbox_counts(db)
        while state != (EMAILS, 0, 0) and time.monotonic() < deadline:
            res = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=120)
            assert res.returncode == 0, res.stdout[-2000:]
            before, state = state, inbox_counts(db)
            if state == before:
                time.sleep(0.5)
        assert state == (EMAILS, 0, 0), f"(decided, owed, unconfirmed) = {state}"
        messages = slack.texts("#ceo")
    with sqlite3.connect(db) as conn:
        decided = dict(conn.execute("SELECT email_id, action FROM reactor_decisions").fetchall())
    assert sorted(decided) == ids, "every email decided"
    task_actions = {"llm_yes", "relinked_via_dedup"}
    wanted = {ids[i] for i in range(EMAILS) if i % 3 == 0}
    assert {e for e, a in decided.items() if a in task_actions} == wanted
    # Exactly one audit line per email (a torn line from a kill is not a line).
    lines = []
    for raw in (fleet_root / "state/email-reactor/audit.jsonl").read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    per_email = Counter(int(x["email_id"]) for x in lines)
    assert set(per_email) == set(ids) and set(per_email.values()) == {1}
    # No task created twice.
    with sqlite3.connect(fleet_root / "databases/mission-control.db") as conn:
        refs = [
            r[0]
            for r in conn.execute("SELECT source_ref FROM tasks WHERE source = 'email'").fetchall()
        ]
    assert len(refs) == len(set(refs)) == len(wanted)
    # No push lost; a repeat is possible only for a send cut by a kill (at most one per kill).
    delivered = Counter(messages)
    assert len(delivered) == len(wanted)
    assert sum(delivered.values()) - len(delivered) <= KILLS

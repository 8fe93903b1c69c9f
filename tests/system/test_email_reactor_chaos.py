"""kill -9 of `fleet run email-reactor` at random points of a 200-email cycle, 20 times, then
run to completion: every email decided exactly once, one audit line each, no task created
twice, no push lost."""

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


def subject_for(i: int) -> str:
    return f"Contract {i}" if i % 3 == 0 else f"Chat {i}"


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
            "FLEET_SLACK__TIMEOUT_S": "2",
            "FLEET_NOTIFY__SEND_LEASE_S": "8",
            "FLEET_NOTIFY__BURST": "1000",
            "FLEET_NOTIFY__RATE_PER_MINUTE": "1000",
        }
        progress = []
        for _ in range(KILLS):
            proc = subprocess.Popen(
                [str(FLEET_BIN), "run", "email-reactor"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(rng.uniform(0.4, 1.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if db.exists():
                with sqlite3.connect(db) as conn:
                    has = conn.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name = 'reactor_decisions'"
                    ).fetchone()[0]
                    if has:
                        progress.append(
                            conn.execute("SELECT count(*) FROM reactor_decisions").fetchone()[0]
                        )
        # The kills landed in the middle of the work, not before or after it.
        # How many kills land mid-work depends on machine speed; a few make the point.
        assert sum(1 for n in progress if 0 < n < EMAILS) >= 3, progress
        for _ in range(30):  # then let it finish, bounded
            res = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=120)
            assert res.returncode == 0, res.stdout[-2000:]
            with sqlite3.connect(db) as conn:
                done = conn.execute("SELECT count(*) FROM reactor_decisions").fetchone()[0]
                waiting = conn.execute(
                    "SELECT count(*) FROM reactor_decisions WHERE push_key IS NOT NULL"
                    " AND push_enqueued_at IS NULL"
                ).fetchone()[0]
            if done == EMAILS and waiting == 0:
                break
        expected_pushes = sum(1 for i in range(EMAILS) if i % 3 == 0)
        wait_until(lambda: len(set(slack.texts("#ceo"))) >= expected_pushes, timeout=30)
        # One more pass lets the sender deliver anything still queued, and confirms pushes.
        run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=120)
        messages = slack.texts("#ceo")
    with sqlite3.connect(db) as conn:
        decided = dict(conn.execute("SELECT email_id, action FROM reactor_decisions").fetchall())
        unpushed = conn.execute(
            "SELECT count(*) FROM reactor_decisions d JOIN emails e ON e.id = d.email_id"
            " WHERE d.push_key IS NOT NULL AND e.reactor_pushed_at IS NULL"
        ).fetchone()[0]
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
    assert unpushed == 0

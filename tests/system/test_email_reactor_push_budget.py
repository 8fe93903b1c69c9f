"""The #ceo push budget under concurrency, as real `fleet run email-reactor --once` processes:
100 mails the LLM says YES to commit concurrently against ``pushes_per_cycle = 10``. Before, the
budget was checked before the enqueue and counted after it, so commits in flight all got
through (40 of 40); and deferred pushes went oldest first, so a strategic partner's push queued
behind the backlog. Now each cycle enqueues exactly 10, the rest go out in later cycles, none
lost or doubled, and a partner's deferred push goes first."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import run_fleet
from tests.email_fixtures import PARTNERS, add_bulk, fixture_answer, sql_ts
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.system

MAILS = 100
BUDGET = 10


def pushes(root: Path) -> list[str]:
    """Dedup keys of the email pushes in the outbox, in the order they were enqueued."""
    with sqlite3.connect(root / "state/outbox.db") as conn:
        rows = conn.execute(
            "SELECT dedup_key FROM outbox WHERE dedup_key LIKE 'email:%' ORDER BY id"
        ).fetchall()
    conn.close()
    return [str(r[0]) for r in rows]


def decided(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT email_id, action FROM reactor_decisions").fetchall()
    conn.close()
    return {int(r[0]): str(r[1]) for r in rows}


def add_partner_mail(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        cur = conn.execute(
            "INSERT INTO emails(account, from_addr, from_name, to_addr, subject, body_text,"
            " attachments, headers, classification, status, created_at) VALUES"
            " ('ceo@example.com', 'partner.one@example.com', 'Petra Partner',"
            " 'ceo@example.com', 'Renewal', 'Shall we talk?', '[]', '{}', 'ACTION', 'new', ?)",
            (sql_ts(datetime.now(UTC)),),
        )
        email_id = int(cur.lastrowid or 0)
    conn.close()
    return email_id


def test_a_hundred_concurrent_pushes_respect_the_budget_partners_first(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    db = fleet_root / "databases/email-inbox.db"
    (fleet_root / "config").mkdir()
    (fleet_root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    ids = add_bulk(db, MAILS, subject_for=lambda i: f"Contract {i}")  # all LLM YES: a push each
    with FakeLLM(fixture_answer) as llm, FakeSlack() as slack:
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "30",
            "FLEET_EMAIL_REACTOR__LLM_CONCURRENCY": "32",
            "FLEET_EMAIL_REACTOR__PUSHES_PER_CYCLE": str(BUDGET),
            # every task in the first cycle: the push budget is under test, not the task cap
            "FLEET_EMAIL_REACTOR__MAX_TASKS_PER_CYCLE": str(MAILS),
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
            # Slack's own per-channel rate limit is not under test: let every push through.
            "FLEET_NOTIFY__RATE_PER_MINUTE": "1000",
        }

        def cycle() -> list[str]:
            res = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=300)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr
            return pushes(fleet_root)

        first = cycle()
        assert set(decided(db)) == set(ids), "all 100 decided in the first cycle"
        assert len(first) == BUDGET, f"{len(first)} pushes enqueued against a budget of {BUDGET}"
        # A partner's mail arrives; its push is decided next cycle, with the budget spent on
        # ten of the 90 deferred ones: it waits, and must go first in the cycle after.
        partner = add_partner_mail(db)
        second = cycle()
        assert decided(db)[partner] == "linked"
        assert len(second) == 2 * BUDGET and f"email:{partner}" not in second
        third = cycle()
        assert len(third) == 3 * BUDGET
        assert third[2 * BUDGET] == f"email:{partner}", "a partner's deferred push goes first"
        # The rest drain at BUDGET per cycle, oldest mail first; nothing lost or doubled.
        done = third
        for _ in range(10):
            if len(done) == MAILS + 1:
                break
            before = len(done)
            done = cycle()
            assert len(done) - before == min(BUDGET, MAILS + 1 - before)
        assert sorted(done) == sorted(f"email:{i}" for i in [*ids, partner])
        deferred_order = [int(k.split(":")[1]) for k in done[3 * BUDGET :]]
        assert deferred_order == sorted(deferred_order), "then by age"
        ceo = slack.texts("#ceo")
    assert len(ceo) == MAILS + 1 and len(set(ceo)) == MAILS + 1

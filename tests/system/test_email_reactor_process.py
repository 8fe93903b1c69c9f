"""email-reactor as real `fleet run email-reactor --once` processes against a real inbox DB,
real Mission Control DB, and fakes for the LLM, Paperless and Slack on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.mission_control import MissionControl
from tests.conftest import FLEET_BIN, run_fleet, wait_until
from tests.email_fixtures import (
    CASES,
    CORRESPONDENTS,
    PARTNERS,
    Case,
    add_bulk,
    create_inbox,
    fixture_answer,
)
from tests.fakes.llm import FakeLLM
from tests.fakes.paperless import FakePaperless
from tests.fakes.slack import FakeSlack
from tests.store_faults import LockHolder, is_write_locked

pytestmark = pytest.mark.system


def decisions(root: Path) -> dict[int, tuple[str, str, str, int | None]]:
    with sqlite3.connect(root / "databases/email-inbox.db") as conn:
        rows = conn.execute(
            "SELECT email_id, action, reason, source, mc_task_id FROM reactor_decisions"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


def audit_lines(root: Path, name: str = "audit.jsonl") -> list[dict[str, object]]:
    path = root / "state/email-reactor" / name
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def mc_tasks(root: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(root / "databases/mission-control.db") as conn:
        return conn.execute("SELECT id, source, source_ref FROM tasks").fetchall()


def timezone_far_from_digest_time() -> str:
    """A timezone where it is about noon now, so the 23:59 digest is hours away and never comes
    due in a test, whatever the time of day the suite runs (with UTC it did, from 23:59)."""
    offset = 12 - datetime.now(UTC).hour  # -11 .. +12 hours
    return f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-3 is UTC+3


@pytest.fixture
def world(fleet_env: dict[str, str], fleet_root: Path):  # type: ignore[no-untyped-def]
    (fleet_root / "config").mkdir()
    (fleet_root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    with (
        FakeLLM(fixture_answer) as llm,
        FakePaperless(CORRESPONDENTS) as paperless,
        FakeSlack() as slack,
    ):
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            # No test here makes the LLM hang: the timeout only bounds a failure, so it is
            # generous enough that a loaded machine never turns an answer into a timeout.
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "30",
            "FLEET_EMAIL_REACTOR__PAPERLESS_URL": paperless.base_url,
            "FLEET_EMAIL_REACTOR__PAPERLESS_TOKEN": paperless.token,
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
            "FLEET_EMAIL_REACTOR__DIGEST_TIME": "23:59",
            "FLEET_EMAIL_REACTOR__TIMEZONE": timezone_far_from_digest_time(),
        }
        yield env, llm, paperless, slack


def once(env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    res = run_fleet(["run", "email-reactor", "--once", *extra], env, cwd, timeout=120)
    return res


def test_every_branch_table_driven(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, llm, _paperless, slack = world
    ids = create_inbox(fleet_root / "databases/email-inbox.db", CASES)
    first = once(env, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr
    got = decisions(fleet_root)
    for case in CASES:
        eid = ids[case.name]
        if not case.decided:
            assert eid not in got, f"{case.name}: must not be triaged"
            continue
        assert eid in got, f"{case.name}: undecided"
        action, reason, source, _task = got[eid]
        assert (action, reason, source) == (case.action, case.reason, case.source), case.name
    # One audit line per decided email, addresses only as hashes.
    lines = audit_lines(fleet_root)
    assert sorted(int(x["email_id"]) for x in lines) == sorted(got)  # type: ignore[call-overload]
    raw = (fleet_root / "state/email-reactor/audit.jsonl").read_text()
    assert "@" not in raw
    # Quarantine lines list the signals that fired.
    quarantine = [
        json.loads(x)
        for x in (fleet_root / "state/email-reactor/quarantine.jsonl").read_text().splitlines()
    ]
    q_ids = {q["email_id"] for q in quarantine}
    assert q_ids == {ids[c.name] for c in CASES if c.action == "security_quarantine"}
    assert all(q["signals"] for q in quarantine)
    # Tasks: one per task-creating decision, idempotent on (email, id).
    task_cases = [c for c in CASES if c.pushed]
    tasks = mc_tasks(fleet_root)
    assert sorted(int(t[2]) for t in tasks) == sorted(ids[c.name] for c in task_cases)
    # pushes_per_cycle = 10: ten #ceo pushes now, the rest next cycle, none dropped.
    ceo = slack.texts("#ceo")
    assert len(ceo) == 10, ceo
    # the account is escaped like every field from the mail: no live mailto link
    partner_push = "[TIER-1 PARTNER] Petra Partner emailed ceo@example[.]com"
    assert any(t.startswith(partner_push) for t in ceo)
    spoof = [t for t in slack.texts("#ops") if "possible spoof of strategic partner" in t]
    assert len(spoof) == 3
    second = once(env, tmp_path)
    assert second.returncode == 0
    assert len(slack.texts("#ceo")) == len(task_cases)
    assert len(mc_tasks(fleet_root)) == len(task_cases)
    assert decisions(fleet_root) == got, "a second run decides nothing again"
    assert len(audit_lines(fleet_root)) == len(got)
    # The DB gate: reactor_pushed_at written back once the outbox delivered the push.
    third = once(env, tmp_path)
    assert third.returncode == 0
    with sqlite3.connect(fleet_root / "databases/email-inbox.db") as conn:
        pushed = conn.execute(
            "SELECT count(*) FROM emails WHERE reactor_pushed_at IS NOT NULL"
        ).fetchone()[0]
        tiers = dict(conn.execute("SELECT id, partner_tier FROM emails").fetchall())
        task_ids = dict(conn.execute("SELECT id, mc_task_id FROM emails").fetchall())
    assert pushed == len(task_cases)
    assert tiers[ids["partner exact"]] == 1
    assert tiers[ids["partner on free mail by exact address"]] == 2
    assert task_ids[ids["llm yes"]] is not None
    # The LLM saw the email fenced, never the sender's address.
    prompts = [m["content"] for c in llm.calls for m in c["messages"] if m["role"] == "user"]
    assert prompts and all("<<<EMAIL" in p and "EMAIL>>>" in p for p in prompts)
    assert not any("@" in p.split("Subject:")[0] for p in prompts)
    assert llm.max_in_flight <= 4


def test_dry_run_writes_nothing_but_its_audit(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, _llm, _pl, slack = world
    db = fleet_root / "databases/email-inbox.db"
    create_inbox(db, CASES[:12])
    before = db.read_bytes()
    res = once(env, tmp_path, "--dry-run")
    assert res.returncode == 0, res.stdout[-2000:]
    assert db.read_bytes() == before
    assert not (fleet_root / "databases/mission-control.db").exists()
    assert not (fleet_root / "state/email-reactor/audit.jsonl").exists()
    assert not (fleet_root / "state/email-reactor/quarantine.jsonl").exists()
    dry = audit_lines(fleet_root, "audit.dry-run.jsonl")
    assert len(dry) == 12 and {x["action"] for x in dry} == {"dry_run"}
    assert {x["would_be"] for x in dry} >= {"linked", "security_quarantine"}
    assert slack.messages == []


def test_llm_failures_follow_the_documented_policy(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    db = fleet_root / "databases/email-inbox.db"
    ids = add_bulk(db, 3, subject_for=lambda i: ["Contract", "Hello", "Quote"][i])
    with FakeLLM(fixture_answer) as llm:
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "1",
            "FLEET_EMAIL_REACTOR__LLM_MAX_ATTEMPTS": "3",
        }
        llm.fail(500, times=100)  # every answer a 500 for the first cycle
        assert once(env, tmp_path).returncode == 0
        assert decisions(fleet_root) == {}, "a 5xx leaves mail undecided"
        llm.clear_faults()
        llm.hang(times=100)  # accept-then-hang: the 1 s timeout ends it
        assert once(env, tmp_path).returncode == 0
        assert decisions(fleet_root) == {}
        llm.clear_faults()
        llm.stop()  # connection refused on the third cycle: the policy decides (open)
        assert once(env, tmp_path).returncode == 0
    got = decisions(fleet_root)
    assert {got[i][:3] for i in ids} == {("llm_yes", "llm_unavailable", "llm")}
    assert len(mc_tasks(fleet_root)) == 3


def test_llm_unreachable_closed_policy_and_config_alert(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    db = fleet_root / "databases/email-inbox.db"
    ids = add_bulk(db, 2)
    with FakeLLM(fixture_answer, status=401) as llm:
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_MAX_ATTEMPTS": "2",
            "FLEET_EMAIL_REACTOR__ON_UNREACHABLE": "closed",
        }
        assert once(env, tmp_path).returncode == 0
        assert decisions(fleet_root) == {}
        assert once(env, tmp_path).returncode == 0
    got = decisions(fleet_root)
    assert {got[i][:3] for i in ids} == {("llm_no", "llm_unavailable", "llm")}
    with sqlite3.connect(fleet_root / "state/outbox.db") as conn:
        alerts = conn.execute(
            "SELECT channel, text FROM outbox WHERE dedup_key LIKE 'llm-config:%'"
        ).fetchall()
    assert len(alerts) == 1 and alerts[0][0] == "#ops" and "HTTP 401" in alerts[0][1]


def test_paperless_401_falls_back_to_db_history(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, _llm, paperless, _slack = world
    paperless.token = "rotated"  # our token is now wrong: 401
    chosen = [c for c in CASES if c.name in ("paperless by domain", "db history")]
    ids = create_inbox(fleet_root / "databases/email-inbox.db", chosen)
    res = once(env, tmp_path)
    assert res.returncode == 0
    got = decisions(fleet_root)
    assert got[ids["db history"]][:3] == ("linked", "known_contact", "db")
    assert got[ids["paperless by domain"]][:3] == ("llm_no", "llm_no", "llm")
    assert "paperless lookup failed" in res.stdout


def test_writer_lock_held_5s_is_waited_out(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Another program holds the inbox's write lock for 5 s exactly when the reactor wants to
    record its decisions: it waits (busy_timeout + retries) and records all of them. The LLM
    holds its answers until the lock is taken, so the writes surely meet the lock, and the
    test checks the lock really held them back (before, the lock could come and go before
    the reactor's first write, and the test passed without testing anything)."""
    env, llm, _pl, _slack = world
    db = fleet_root / "databases/email-inbox.db"
    create_inbox(db, CASES[:3])
    assert once(env, tmp_path, "--dry-run").returncode == 0
    ids = add_bulk(db, 2)
    llm.hold()
    calls = len(llm.calls)
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", "email-reactor", "--once"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The reactor has read the mail and waits for the LLM's answers on the two.
        assert wait_until(lambda: len(llm.calls) >= calls + len(ids), timeout=60)
        with LockHolder(db) as lock:
            llm.release()  # the answers arrive; their decisions now need the held lock

            def written() -> bool:
                return proc.poll() is not None or bool(set(ids) & set(decisions(fleet_root)))

            assert not wait_until(written, timeout=5)
            assert is_write_locked(db) and not written()
            lock.release()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-2000:]
    assert len(decisions(fleet_root)) == 5


def test_cutover_and_partner_cli(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, _llm, _pl, slack = world
    db = fleet_root / "databases/email-inbox.db"
    create_inbox(db, CASES[:6])
    res = run_fleet(["email", "cutover", "--yes"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    got = decisions(fleet_root)
    assert len(got) == 6 and {v[0] for v in got.values()} == {"skipped_cutover"}
    assert len(audit_lines(fleet_root)) == 6
    assert once(env, tmp_path).returncode == 0
    assert slack.texts("#ceo") == [] and mc_tasks(fleet_root) == []
    add = run_fleet(
        ["email", "partners", "add", "new@example.org", "--name", "New Co", "--tier", "2"],
        env,
        tmp_path,
    )
    assert add.returncode == 0, add.stderr
    listed = run_fleet(["email", "partners", "list"], env, tmp_path).stdout
    assert "new@example.org" in listed and "tier 2" in listed
    assert (
        run_fleet(["email", "partners", "remove", "new@example.org"], env, tmp_path).returncode == 0
    )
    assert "new@example.org" not in run_fleet(["email", "partners", "list"], env, tmp_path).stdout


def test_malformed_partners_file_keeps_last_good_list_and_alerts_once(
    world,
    fleet_root: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    env, _llm, _pl, _slack = world
    partners = fleet_root / "config/strategic-partners.json"
    partners.write_text("{ not json")
    create_inbox(fleet_root / "databases/email-inbox.db", CASES[:1])
    assert once(env, tmp_path).returncode == 0
    assert once(env, tmp_path).returncode == 0
    with sqlite3.connect(fleet_root / "state/outbox.db") as conn:
        alerts = conn.execute(
            "SELECT count(*) FROM outbox WHERE dedup_key LIKE 'partners-invalid:%'"
        ).fetchone()[0]
    assert alerts == 1


def test_explain_and_digest_cli(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, _llm, _pl, _slack = world
    ids = create_inbox(
        fleet_root / "databases/email-inbox.db",
        [c for c in CASES if c.name in ("partner exact", "macro attachment", "llm yes")],
    )
    explained = run_fleet(["email", "explain", str(ids["macro attachment"])], env, tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert "attachment:.docm" in explained.stdout
    assert "=> security_quarantine" in explained.stdout
    assert not (fleet_root / "databases/mission-control.db").exists(), "explain never acts"
    env_old = {**env, "FLEET_EMAIL_REACTOR__DIGEST_MIN_AGE_H": "0"}
    assert once(env_old, tmp_path).returncode == 0
    preview = run_fleet(["email", "digest", "--dry-run"], env_old, tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert "Strategic Partner Emails" in preview.stdout
    assert "High-Priority Emails" in preview.stdout
    sent = run_fleet(["email", "digest"], env_old, tmp_path)
    assert sent.returncode == 0 and "queued for #ceo" in sent.stdout
    again = run_fleet(["email", "digest"], env_old, tmp_path)
    assert "already sent today" in again.stdout
    state = json.loads((fleet_root / "state/email-reactor/digest-state.json").read_text())
    assert state["sent"] is True


def test_audit_counts_by_action(world, fleet_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every audit action the pipeline can produce appears in the fixture run."""
    env, *_ = world
    create_inbox(fleet_root / "databases/email-inbox.db", CASES)
    assert once(env, tmp_path).returncode == 0
    counts = Counter(str(x["action"]) for x in audit_lines(fleet_root))
    assert set(counts) == {
        "linked",
        "llm_yes",
        "llm_no",
        "security_quarantine",
        "relinked_via_dedup",
    }


INGEST_PUSHED = [
    Case(
        "partner pushed by the ingest path",
        "linked",
        "strategic_partner",
        "override",
        from_addr="partner.one@example.com",
        from_name="Petra Partner",
        subject="SEO partnership",
        reactor_pushed_at="2026-11-23T10:00:05.000Z",
        partner_tier=1,
    ),
    Case(
        "ingest-pushed, crash after the task was created",
        "relinked_via_dedup",
        "strategic_partner",
        "override",
        from_addr="ceo@snow.example.org",
        from_name="Snow CEO",
        reactor_pushed_at="2026-11-23T10:00:06.000Z",
        partner_tier=1,
    ),
    Case(
        "unpushed partner",
        "linked",
        "strategic_partner",
        "override",
        from_addr="vip@gmail.com",
        from_name="Vera Vip",
        pushed=True,
    ),
]


def test_ingest_pushed_partner_mail_gets_one_task_and_no_second_push(  # type: ignore[no-untyped-def]
    world, fleet_root: Path, tmp_path: Path
) -> None:
    """Why-bullet: a partner's ACTION mail pushed by email-agent.js (reactor_pushed_at set,
    mc_task_id NULL) was taken as handled: a push but no task (the founding incident)."""
    env, _llm, _paperless, slack = world
    inbox = fleet_root / "databases/email-inbox.db"
    ids = create_inbox(inbox, INGEST_PUSHED)
    crashed = ids["ingest-pushed, crash after the task was created"]
    # A run killed between creating the task and committing its decision left this task.
    with MissionControl(fleet_root / "databases/mission-control.db").open() as mc:
        mc.create_task("Email from Snow CEO", source="email", source_ref=str(crashed))
    for _ in range(2):  # the second run must add nothing
        res = once(env, tmp_path)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr
        got = decisions(fleet_root)
        for case in INGEST_PUSHED:
            action, reason, source, task = got[ids[case.name]]
            assert (action, reason, source) == (case.action, case.reason, case.source), case.name
            assert task is not None, case.name
        refs = Counter(int(t[2]) for t in mc_tasks(fleet_root) if t[1] == "email")
        assert refs == Counter(ids.values()), "exactly one task per email"
        ceo = slack.texts("#ceo")
        assert len(ceo) == 1 and ceo[0].startswith("[TIER-2 PARTNER] Vera Vip"), ceo
    with sqlite3.connect(inbox) as conn:
        rows = dict(conn.execute("SELECT id, mc_task_id FROM emails").fetchall())
        pushed = dict(conn.execute("SELECT id, reactor_pushed_at FROM emails").fetchall())
    conn.close()
    assert all(rows[i] is not None for i in ids.values())
    assert pushed[ids["partner pushed by the ingest path"]] == "2026-11-23T10:00:05.000Z"


STALE = [
    Case(
        "partner mail marked read, no task, no push",
        "-",
        "-",
        "-",
        from_addr="partner.one@example.com",
        from_name="Petra Partner",
        subject="SEO partnership",
        status="read",
        partner_tier=1,
        age_h=7,
    ),
    Case("ACTION mail the LLM never answered", "-", "-", "-", subject="Offer", age_h=7),
    Case("fresh ACTION mail", "-", "-", "-", subject="Fresh offer", age_h=1),
    Case(
        "partner mail the ingest pushed",
        "-",
        "-",
        "-",
        from_addr="ceo@snow.example.org",
        from_name="Snow CEO",
        status="read",
        partner_tier=1,
        reactor_pushed_at="2026-11-23T10:00:05.000Z",
        age_h=7,
    ),
]


def test_stale_mail_gets_one_ceo_message_each(  # type: ignore[no-untyped-def]
    world, fleet_root: Path, tmp_path: Path
) -> None:
    """Why-bullet: an ACTION mail left undecided for hours (or a partner mail with neither task
    nor push) only showed on a dashboard; now one #ceo message per email past stale_after_h."""
    env, llm, _paperless, slack = world
    llm.status = 503  # the classifier is down: unknown-sender mail stays undecided
    env = {**env, "FLEET_EMAIL_REACTOR__LLM_MAX_ATTEMPTS": "10"}
    ids = create_inbox(fleet_root / "databases/email-inbox.db", STALE)
    for _ in range(2):  # the second run sends nothing again
        res = once(env, tmp_path)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr
        waiting = [t for t in slack.texts("#ceo") if t.startswith("[EMAIL WAITING")]
        assert len(waiting) == 2, waiting
        assert any(
            f"Email #{ids['partner mail marked read, no task, no push']}:" in t
            and "tier-1 partner mail with no task and no push" in t
            for t in waiting
        )
        assert any(
            f"Email #{ids['ACTION mail the LLM never answered']}:" in t
            and "ACTION mail still undecided" in t
            for t in waiting
        )
    with sqlite3.connect(fleet_root / "databases/email-inbox.db") as conn:
        alerted = {r[0] for r in conn.execute("SELECT email_id FROM reactor_stale_alerts")}
    conn.close()
    assert alerted == {
        ids["partner mail marked read, no task, no push"],
        ids["ACTION mail the LLM never answered"],
    }


def test_the_alai_layout_writes_the_seed_runbook_files(  # type: ignore[no-untyped-def]
    world, fleet_root: Path, tmp_path: Path
) -> None:
    """`[fleet] layout = "alai"`: the audit, quarantine and digest state are where the seed's
    runbook reads them (tail ... inbox-watcher-audit.log | jq ., cat ...-quarantine.jsonl,
    cat ~/system/logs/email-reactor-digest-state.json); the explicit root still wins."""
    env, *_ = world
    env = {**env, "FLEET_FLEET__LAYOUT": "alai", "FLEET_EMAIL_REACTOR__DIGEST_MIN_AGE_H": "0"}
    ids = create_inbox(
        fleet_root / "databases/email-inbox.db",
        [c for c in CASES if c.name in ("partner exact", "macro attachment", "llm yes")],
    )
    assert once(env, tmp_path).returncode == 0
    audit = fleet_root / "state/inbox-watcher-audit.log"
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert sorted(int(x["email_id"]) for x in lines) == sorted(ids.values())
    assert f'"email_id":{ids["partner exact"]}' in audit.read_text()  # the runbook's grep
    quarantined = fleet_root / "state/inbox-watcher-quarantine.jsonl"
    assert [json.loads(x)["email_id"] for x in quarantined.read_text().splitlines()] == [
        ids["macro attachment"]
    ]
    assert run_fleet(["email", "digest"], env, tmp_path).returncode == 0
    state = json.loads((fleet_root / "logs/email-reactor-digest-state.json").read_text())
    assert state["sent"] is True
    assert not (fleet_root / "state/email-reactor/audit.jsonl").exists()
    assert not (fleet_root / "state/email-reactor/quarantine.jsonl").exists()

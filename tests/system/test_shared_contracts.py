"""Shared-table contracts with real `fleet` processes: the email-reactor refuses (exit 78,
naming DB, table and columns) tables it cannot use and never changes their schema;
`[mission_control] task_defaults` fills mc.js's NOT NULL columns; a table broken while the
daemon runs fails cycles with one #ops alert; `fleet db check` and `fleet db migrate`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, free_port, run_fleet, wait_until
from tests.email_fixtures import FOREIGN_SCHEMA, PARTNERS
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack
from tests.heartbeat_support import metric_value

pytestmark = pytest.mark.system

LEGACY_INBOX = """CREATE TABLE emails (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT,
  from_addr TEXT, subject TEXT, status TEXT DEFAULT 'new', created_at TEXT,
  mc_task_id INTEGER, classification TEXT)"""
# mc.js's tasks: its own NOT NULL column without default, and no lease columns of ours
MCJS_TASKS = """CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
  description TEXT, status TEXT DEFAULT 'open', priority TEXT, source TEXT, source_ref TEXT,
  created_at TEXT DEFAULT (datetime('now')), updated_at TEXT, lease_holder TEXT,
  lease_until TEXT, created_by TEXT NOT NULL, project TEXT DEFAULT 'ops')"""


def table_info(db: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"PRAGMA table_info({table})").fetchall()
    finally:
        conn.close()


def make_db(path: Path, *statements: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


PARTNER_MAIL = (
    "INSERT INTO emails(account, from_addr, from_name, subject, body_text, classification,"
    " status, created_at) VALUES ('ceo@example.com', 'partner.one@example.com',"
    " 'Petra Partner', 'Contract', 'Shall we sign?', 'ACTION', 'new',"
    " strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-1 hour'))"
)


@pytest.fixture
def env(fleet_env: dict[str, str], fleet_root: Path):  # type: ignore[no-untyped-def]
    (fleet_root / "config").mkdir()
    (fleet_root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    with FakeLLM(lambda _text: "NO") as llm, FakeSlack() as slack:
        yield (
            {
                **fleet_env,
                "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
                "FLEET_SLACK__BASE_URL": slack.base_url,
                "FLEET_SLACK__TOKEN": slack.token,
                "FLEET_EMAIL_REACTOR__DIGEST_TIME": "00:00",
            },
            slack,
        )


def test_inbox_without_reactor_columns_refuses_and_is_left_alone(
    env, fleet_root: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Why-bullet: the fleet guessed the shared schema (and added columns to it)."""
    e, _slack = env
    inbox = fleet_root / "databases/email-inbox.db"
    make_db(inbox, LEGACY_INBOX)
    before = table_info(inbox, "emails")
    res = run_fleet(["run", "email-reactor", "--once"], e, tmp_path, timeout=120)
    assert res.returncode == 78, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "email-inbox.db table emails" in out
    assert "partner_tier" in out and "reactor_pushed_at" in out
    assert table_info(inbox, "emails") == before
    # fleet db check says the same, and exits 78
    check = run_fleet(["db", "check"], e, tmp_path)
    assert check.returncode == 78, check.stdout + check.stderr
    assert "refuses" in check.stdout and "partner_tier" in check.stdout
    # migrate shows first and changes nothing ...
    shown = run_fleet(["db", "migrate"], e, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "ALTER TABLE emails ADD COLUMN partner_tier INTEGER DEFAULT 0;" in shown.stdout
    assert "would apply" in shown.stdout
    assert table_info(inbox, "emails") == before
    # ... and --apply makes it; then the reactor runs
    applied = run_fleet(["db", "migrate", "--apply"], e, tmp_path)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    names = {r[1] for r in table_info(inbox, "emails")}
    assert {"partner_tier", "reactor_pushed_at", "body_text"} <= names
    assert run_fleet(["db", "check"], e, tmp_path).returncode == 0
    again = run_fleet(["run", "email-reactor", "--once"], e, tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def test_not_null_task_column_refuses_until_task_defaults_fill_it(
    env, fleet_root: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Why-bullet: one NOT NULL column in tasks (created_by) failed every email cycle without
    an alert."""
    e, _slack = env
    inbox = fleet_root / "databases/email-inbox.db"
    mc = fleet_root / "databases/mission-control.db"
    make_db(inbox, FOREIGN_SCHEMA, PARTNER_MAIL)
    make_db(mc, MCJS_TASKS)
    tasks_before = table_info(mc, "tasks")
    res = run_fleet(["run", "email-reactor", "--once"], e, tmp_path, timeout=120)
    assert res.returncode == 78, res.stdout[-2000:] + res.stderr[-2000:]
    assert "created_by" in res.stdout + res.stderr
    assert "task_defaults" in res.stdout + res.stderr
    check = run_fleet(["doctor", "--json"], e, tmp_path)
    assert check.returncode == 78
    rows = json.loads(check.stdout)
    create = next(r for r in rows if r["table"] == "tasks" and r["used_by"] == "email-reactor")
    assert create["status"] == "refuses" and create["unfilled_not_null"] == ["created_by"]

    filled = {**e, "FLEET_MISSION_CONTROL__TASK_DEFAULTS": '{"created_by": "email-reactor"}'}
    ok = run_fleet(["run", "email-reactor", "--once"], filled, tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    conn = sqlite3.connect(mc)
    rows = conn.execute("SELECT source, created_by, project FROM tasks").fetchall()
    conn.close()
    assert rows == [("email", "email-reactor", "ops")]
    assert table_info(mc, "tasks") == tasks_before


def test_task_defaults_naming_a_column_the_fleet_fills_is_a_config_error(
    env, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    e, _slack = env
    bad = {**e, "FLEET_MISSION_CONTROL__TASK_DEFAULTS": '{"title": "x", "bad name": 1}'}
    res = run_fleet(["check-config"], bad, tmp_path)
    assert res.returncode == 78
    assert "mission_control.task_defaults" in res.stdout + res.stderr


def test_optional_columns_missing_degrade_and_explain_says_so(
    env, fleet_root: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Why-bullet: missing body_text/attachments silently blinded the security scan and the
    LLM; missing account/from_name/to_addr crashed the digest and `email explain`."""
    e, _slack = env
    inbox = fleet_root / "databases/email-inbox.db"
    make_db(
        inbox,
        "CREATE TABLE emails (id INTEGER PRIMARY KEY AUTOINCREMENT, from_addr TEXT,"
        " subject TEXT, status TEXT DEFAULT 'new', created_at TEXT, mc_task_id INTEGER,"
        " classification TEXT, partner_tier INTEGER DEFAULT 0, reactor_pushed_at TEXT)",
        "INSERT INTO emails(from_addr, subject, classification, created_at) VALUES"
        " ('partner.one@example.com', 'Contract', 'ACTION', datetime('now', '-1 hour'))",
    )
    res = run_fleet(["run", "email-reactor", "--once"], e, tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "degraded" in res.stdout + res.stderr and "body_text" in res.stdout + res.stderr
    explain = run_fleet(["email", "explain", "1"], e, tmp_path, timeout=120)
    assert explain.returncode == 0, explain.stdout + explain.stderr
    assert "degraded" in explain.stdout and "no column body_text" in explain.stdout
    digest = run_fleet(["email", "digest", "--dry-run"], e, tmp_path, timeout=120)
    assert digest.returncode == 0, digest.stdout + digest.stderr
    check = run_fleet(["db", "check"], e, tmp_path)
    assert check.returncode == 0 and "degraded" in check.stdout


def test_a_table_broken_while_running_fails_cycles_with_one_ops_alert(
    env, fleet_root: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    e, slack = env
    inbox = fleet_root / "databases/email-inbox.db"
    make_db(inbox, FOREIGN_SCHEMA)
    run_env = {
        **e,
        "FLEET_EMAIL_REACTOR__INTERVAL_S": "0.2",
        "FLEET_EMAIL_REACTOR__BACKOFF_MAX_S": "0.5",
        "FLEET_EMAIL_REACTOR__METRICS_PORT": str(port := free_port()),
    }
    log = tmp_path / "reactor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "email-reactor"],
            env=run_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(lambda: "daemon started" in log.read_text(), timeout=60)
        conn = sqlite3.connect(inbox)
        conn.execute("ALTER TABLE emails RENAME COLUMN mc_task_id TO task_id")
        conn.close()

        def failed() -> float:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return 0
            value = metric_value(text, "fleet_cycles_total", outcome="error")
            return value or 0

        assert wait_until(lambda: failed() >= 3, timeout=60), log.read_text()[-3000:]
        assert wait_until(lambda: slack.texts("#ops"), timeout=60), log.read_text()[-3000:]
        assert proc.poll() is None  # a failed cycle, never a dead daemon
        alerts = [t for t in slack.texts("#ops") if "cannot use a shared table" in t]
        assert len(alerts) == 1 and "mc_task_id" in alerts[0]
        conn = sqlite3.connect(inbox)
        conn.execute("ALTER TABLE emails RENAME COLUMN task_id TO mc_task_id")
        conn.execute(PARTNER_MAIL)
        conn.commit()
        conn.close()
        assert wait_until(lambda: "recovered" in log.read_text(), timeout=60)
        assert len([t for t in slack.texts("#ops") if "shared table" in t]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

"""One CLI contract across commands (docs/cli.md), as real `fleet` subprocesses: under `--json`
a read command prints its result as JSON, and every error as one object
`{"error": ..., "code": N}` on stdout with nothing on stderr, whatever raised it (a usage error,
a bad config, a missing thing, a store that cannot be read); without `--json` the same error is
text on stderr. "Not found" is 2 everywhere. Plus `fleet email list` and shell completion."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from shared.mission_control import MissionControl
from shared.sqlite import apply_migrations
from tests.conftest import FLEET_BIN, run_fleet
from tests.email_fixtures import FOREIGN_SCHEMA

pytestmark = pytest.mark.system


def error_of(res: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The error object of a failed `--json` run: alone on stdout, nothing on stderr."""
    assert res.stderr == "", res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) >= {"error", "code"} and doc["code"] == res.returncode, doc
    assert isinstance(doc["error"], str) and doc["error"] and not doc["error"].startswith("error:")
    return doc


@pytest.fixture
def mc_db(fleet_root: Path) -> Path:
    path = fleet_root / "databases" / "mission-control.db"
    with MissionControl(path) as store:
        store.create_task("rotate the backup keys")
    return path


def test_mc_verbs_answer_in_json_and_fail_in_json(
    fleet_env: dict[str, str], mc_db: Path, tmp_path: Path
) -> None:
    def mc(*args: str) -> subprocess.CompletedProcess[str]:
        return run_fleet(["mc", *args, "--db", str(mc_db)], fleet_env, tmp_path)

    who = ["--actor", "ops", "--session", "s1"]
    claimed = mc("claim", "1", *who, "--json")
    assert claimed.returncode == 0, claimed.stderr
    doc = json.loads(claimed.stdout)
    assert doc["id"] == 1 and doc["claimed"] is True and doc["holder"] == "ops:s1"
    assert doc["lease_until"].endswith("Z")
    extended = json.loads(mc("claim-extend", "1", *who, "--json").stdout)
    assert extended["extended"] is True
    held = mc("claim", "1", "--actor", "other", "--session", "s2", "--json")
    assert held.returncode == 1
    assert "held by ops:s1" in str(error_of(held)["error"])
    missing = mc("claim", "99", *who, "--json")
    assert missing.returncode == 2 and "99" in str(error_of(missing)["error"])
    assert json.loads(mc("claim-release", "1", *who, "--json").stdout) == {
        "id": 1,
        "released": True,
    }
    # the same errors without --json: text on stderr, nothing on stdout (the hook protocol)
    plain = mc("claim", "99", *who)
    assert plain.returncode == 2 and plain.stdout == "" and "99" in plain.stderr
    usage = mc("claim", "1", "--json")  # no actor: a usage error, JSON too
    assert usage.returncode == 64 and "--actor" in str(error_of(usage)["error"])
    gone = run_fleet(
        ["mc", "show", "1", "--json", "--db", str(tmp_path / "none.db")], fleet_env, tmp_path
    )
    assert gone.returncode == 3 and "unavailable" in str(error_of(gone)["error"])


def test_config_and_usage_errors_are_json_under_json(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    bad = {**fleet_env, "FLEET_FLEET__ROLE": "leader"}
    for args in (["role", "show", "--json"], ["check-config", "--json"]):
        res = run_fleet(args, bad, tmp_path)
        assert res.returncode == 78, res.stdout + res.stderr
        doc = error_of(res)
        assert doc["errors"] == [
            {
                "path": "fleet.role",
                "message": "Input should be 'primary' or 'standby' (from $FLEET_FLEET__ROLE)",
            }
        ]
    text = run_fleet(["role", "show"], bad, tmp_path)
    assert text.returncode == 78 and text.stdout == "" and "fleet.role" in text.stderr
    for args in (["check-config", "no-such-daemon", "--json"], ["frobnicate", "--json"]):
        res = run_fleet(args, fleet_env, tmp_path)
        assert res.returncode == 64
        error_of(res)
    assert run_fleet(["frobnicate", "--", "--json"], fleet_env, tmp_path).stdout == ""


def test_read_commands_print_json(fleet_env: dict[str, str], tmp_path: Path) -> None:
    role = json.loads(run_fleet(["role", "show", "--json"], fleet_env, tmp_path).stdout)
    assert role["role"] == "primary" and role["source"] == "config"
    checked = run_fleet(["check-config", "claim-sweeper", "--json"], fleet_env, tmp_path)
    assert checked.returncode == 0, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["ok"] is True and doc["runs"] == ["claim-sweeper"] and doc["host"] == "testhost"
    standby = {**fleet_env, "FLEET_FLEET__ROLE": "standby"}
    fenced = run_fleet(["check-config", "email-reactor", "--json"], standby, tmp_path)
    assert fenced.returncode == 78 and "email-reactor" in error_of(fenced)["fenced"]  # type: ignore[operator]
    partners = run_fleet(["email", "partners", "list", "--json"], fleet_env, tmp_path)
    assert json.loads(partners.stdout)["senders"] == []


def test_not_found_exits_2_everywhere(fleet_env: dict[str, str], tmp_path: Path) -> None:
    inbox = make_inbox(Path(fleet_env["FLEET_FLEET__ROOT"]) / "databases" / "email-inbox.db")
    assert inbox
    explain = run_fleet(["email", "explain", "4242", "--json"], fleet_env, tmp_path, timeout=120)
    assert explain.returncode == 2 and "no email 4242" in str(error_of(explain)["error"])
    route = run_fleet(["ollama", "route", "no-such-tier", "--json"], fleet_env, tmp_path)
    assert route.returncode == 2, route.stdout + route.stderr
    error_of(route)
    remove = run_fleet(["email", "partners", "remove", "nobody@example.com"], fleet_env, tmp_path)
    assert remove.returncode == 2 and "nobody@example.com" in remove.stderr


def make_inbox(path: Path) -> dict[str, int]:
    """A foreign inbox with the reactor's own tables (its real migrations): one decided email,
    one undecided, one set aside, one whose subject carries a terminal escape."""
    from daemons.email_reactor.store import COMPONENT, MIGRATIONS

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(FOREIGN_SCHEMA)
    ids = {}
    for name, subject in (
        ("decided", "Quarterly numbers"),
        ("undecided", "Lunch?"),
        ("poison", "unreadable"),
        ("escape", "pay now \x1b[31mURGENT\x1b[0m"),
    ):
        cur = conn.execute(
            "INSERT INTO emails(from_addr, subject, classification, status, created_at)"
            " VALUES ('a@example.com', ?, 'ACTION', 'new', '2026-11-30 08:00:00')",
            (subject,),
        )
        ids[name] = int(cur.lastrowid or 0)
    apply_migrations(conn, COMPONENT, MIGRATIONS)
    conn.execute(
        "INSERT INTO reactor_decisions(email_id, action, reason, source, mc_task_id, decided_at)"
        " VALUES (?, 'linked', 'partner', 'partners', 17, '2026-11-30 08:05:00')",
        (ids["decided"],),
    )
    conn.execute(
        "INSERT INTO reactor_poison_rows(email_id, kind, reason, first_seen)"
        " VALUES (?, 'type', 'created_at is a blob', '2026-11-30 08:05:00')",
        (ids["poison"],),
    )
    conn.close()
    return ids


def test_email_list_shows_ids_with_status_and_decision(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    db = Path(fleet_env["FLEET_FLEET__ROOT"]) / "databases" / "email-inbox.db"
    missing = run_fleet(["email", "list", "--json"], fleet_env, tmp_path)
    assert missing.returncode == 3 and "inbox" in str(error_of(missing)["error"])
    ids = make_inbox(db)
    before = db.read_bytes()
    res = run_fleet(["email", "list", "--json"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    assert list(rows) == sorted(ids.values(), reverse=True)  # newest first
    decided = rows[ids["decided"]]
    assert (decided["decision"], decided["reason"], decided["mc_task_id"]) == (
        "linked",
        "partner",
        17,
    )
    assert decided["status"] == "new" and decided["subject"] == "Quarterly numbers"
    assert rows[ids["undecided"]]["decision"] is None
    assert rows[ids["poison"]]["set_aside"] == "created_at is a blob"
    assert "\x1b" not in rows[ids["escape"]]["subject"]
    assert "a@example.com" not in res.stdout  # never an address
    undecided = json.loads(
        run_fleet(["email", "list", "--undecided", "--json"], fleet_env, tmp_path).stdout
    )
    assert ids["decided"] not in {r["id"] for r in undecided} and len(undecided) == 3
    text = run_fleet(["email", "list", "--limit", "2"], fleet_env, tmp_path).stdout
    lines = text.splitlines()
    assert len(lines) == 3 and lines[1].split()[0] == str(ids["escape"]), text
    assert "\x1b" not in text
    assert db.read_bytes() == before  # read-only


def test_fleet_run_completes_daemon_names(fleet_env: dict[str, str], tmp_path: Path) -> None:
    def complete(words: str, cword: int) -> list[str]:
        env = {
            **fleet_env,
            "_FLEET_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
        res = subprocess.run(
            [str(FLEET_BIN)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr
        return [line.split(",", 1)[1] for line in res.stdout.splitlines()]

    from fleet.registry import LINES

    assert complete("fleet run ", 2) == [line.name for line in LINES]
    assert complete("fleet run cl", 2) == ["claim-sweeper"]
    assert "claim-sweeper" in complete("fleet check-config ", 2)
    assert "status" in complete("fleet st", 1)
    script = subprocess.run(
        [str(FLEET_BIN)],
        env={**fleet_env, "_FLEET_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "complete -o nosort -F _fleet_completion fleet" in script.stdout

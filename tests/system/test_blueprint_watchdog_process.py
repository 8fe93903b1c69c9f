"""`fleet run blueprint-watchdog` as a real process: --once over fixture trees (report file,
exactly one HiveMind row and one Slack #ops message per run, nothing when compliant),
--dry-run, role fencing, and the long-running daemon's READY, metrics (promtool-clean),
heartbeat with the cron period, and SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes import FakeSlack
from tests.fakes.hivemind import FakeHiveMind
from tests.unit.test_blueprint_fixture_tree import build_compliant_tree, build_mixed_tree, write

pytestmark = pytest.mark.system


def slack_env(env: dict[str, str], slack: FakeSlack) -> dict[str, str]:
    return {**env, "FLEET_SLACK__BASE_URL": slack.base_url, "FLEET_SLACK__TOKEN": slack.token}


def hivemind_rows(root: Path) -> list[tuple[str, str, str, str]]:
    db = root / "databases/hivemind.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT source, topic, severity, body FROM messages").fetchall()


def outbox_keys(root: Path) -> list[tuple[str, str]]:
    db = root / "state/outbox.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT dedup_key, status FROM outbox ORDER BY id").fetchall()


def test_once_reports_and_alerts_exactly_once_per_run(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    tree = build_mixed_tree(fleet_root)
    with FakeSlack() as slack:
        env = slack_env(fleet_env, slack)
        first = run_fleet(["run", "blueprint-watchdog", "--once"], env, tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        second = run_fleet(["run", "blueprint-watchdog", "--once"], env, tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        messages = slack.messages
    report_file = fleet_root / "state/blueprint-watchdog/report.json"
    assert stat.S_IMODE(report_file.stat().st_mode) == 0o600
    report = json.loads(report_file.read_text())
    assert report["summary"]["files"] == {"blueprint": 5, "deploy-map": 2, "zakon": 4}
    assert report["summary"]["by_reason"] == {
        "changed": 1,
        "missing_last_verified": 1,
        "not_utf8": 1,
        "schema": 1,
        "stale": 1,
        "unreadable": 1,
        "unregistered": 1,
    }
    assert report["registry"]["ok"] is True
    assert [p["problem"] for p in report["problems"]] == ["symlink_loop"]
    # One Slack #ops summary and one HiveMind message for the whole run, not one per file.
    assert [m.channel for m in messages] == ["#ops"]
    text = messages[0].text
    assert "7 of 11 file(s) non-compliant" in text
    # paths are escaped like any text the fleet did not write: "x.md" would be a Slack link
    assert str(tree.files["four"]).replace(".md", "[.]md") in text and "[4/5]" in text
    rows = hivemind_rows(fleet_root)
    assert len(rows) == 1
    source, topic, severity, body = rows[0]
    assert (source, topic, severity) == ("blueprint-watchdog", "blueprint-liveness", "warning")
    assert body == text
    today = datetime.now(UTC).date().isoformat()
    assert outbox_keys(fleet_root) == [
        (f"blueprint-watchdog:testhost:{today}:slack", "sent"),
        (f"blueprint-watchdog:testhost:{today}:hivemind", "sent"),
    ]


def test_once_compliant_tree_sends_nothing(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    build_compliant_tree(fleet_root)
    with FakeSlack() as slack:
        res = run_fleet(
            ["run", "blueprint-watchdog", "--once"], slack_env(fleet_env, slack), tmp_path
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert slack.messages == []
    report = json.loads((fleet_root / "state/blueprint-watchdog/report.json").read_text())
    assert report["summary"]["noncompliant"] == 0 and report["summary"]["total"] == 3
    assert hivemind_rows(fleet_root) == [] and outbox_keys(fleet_root) == []
    assert not (fleet_root / "databases/hivemind.db").exists()


def test_corrupt_registry_is_a_critical_alert(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    tree = build_compliant_tree(fleet_root)
    write(tree.registry, '{"version": "1.0", "registry": [')
    res = run_fleet(["run", "blueprint-watchdog", "--once"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ((_source, _topic, severity, body),) = hivemind_rows(fleet_root)
    assert severity == "critical" and "ZAKON registry unusable" in body
    # Slack has no token here: its message waits in the outbox instead of being lost.
    assert [status for key, status in outbox_keys(fleet_root) if key.endswith(":slack")] == [
        "pending"
    ]


def test_dry_run_writes_nothing(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    build_mixed_tree(fleet_root, fifo=False)
    res = run_fleet(["run", "blueprint-watchdog", "--once", "--dry-run"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "would notify" in res.stdout and "would write report" in res.stdout
    assert not (fleet_root / "state/blueprint-watchdog/report.json").exists()
    assert not (fleet_root / "databases/hivemind.db").exists()
    assert outbox_keys(fleet_root) == []


def test_standby_refuses_with_db_sink_and_runs_with_http_sink(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    build_mixed_tree(fleet_root, fifo=False)
    assert run_fleet(["role", "set", "standby"], fleet_env, tmp_path).returncode == 0
    refused = run_fleet(["run", "blueprint-watchdog", "--once"], fleet_env, tmp_path)
    assert refused.returncode == 78
    assert "standby" in refused.stdout and "hivemind_db" in refused.stdout
    assert not (fleet_root / "state/blueprint-watchdog/report.json").exists()
    with FakeHiveMind(token="hm-secret-token") as hivemind:
        token_file = tmp_path / "hm-token"
        token_file.write_text("hm-secret-token\n")
        token_file.chmod(0o600)
        env = {
            **fleet_env,
            "FLEET_BLUEPRINT_WATCHDOG__HIVEMIND_URL": hivemind.url,
            "FLEET_BLUEPRINT_WATCHDOG__HIVEMIND_TOKEN_FILE": str(token_file),
        }
        res = run_fleet(["run", "blueprint-watchdog", "--once"], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        (message,) = hivemind.messages
    assert message["topic"] == "blueprint-liveness" and "non-compliant" in message["body"]
    assert not (fleet_root / "databases/hivemind.db").exists()
    assert "hm-secret-token" not in res.stdout + res.stderr


def test_bad_schedule_refuses_to_start(fleet_env: dict[str, str], tmp_path: Path) -> None:
    env = {**fleet_env, "FLEET_BLUEPRINT_WATCHDOG__SCHEDULE": "0 25 * * *"}
    res = run_fleet(["run", "blueprint-watchdog", "--once"], env, tmp_path)
    # The section refuses it on load (APScheduler's parser), before anything starts.
    assert res.returncode == 78 and "blueprint_watchdog.schedule" in res.stderr
    shape = run_fleet(
        ["check-config"], {**fleet_env, "FLEET_BLUEPRINT_WATCHDOG__SCHEDULE": "daily"}, tmp_path
    )
    assert shape.returncode == 78 and "blueprint_watchdog.schedule" in shape.stderr


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or (
            head.startswith(name + "{") and all(f'{k}="{v}"' in head for k, v in labels.items())
        ):
            return float(value)
    return None


def test_daemon_runs_missed_scan_serves_metrics_and_stops(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    build_mixed_tree(fleet_root, fifo=False)
    port = free_port()
    env = {
        **fleet_env,
        "NOTIFY_SOCKET": notify_socket.path,
        "FLEET_BLUEPRINT_WATCHDOG__METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", "blueprint-watchdog"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    heartbeat = fleet_root / "state/heartbeats/blueprint-watchdog.json"
    try:
        assert notify_socket.wait_for("READY=1", timeout=15), notify_socket.messages
        # No run yet on record: the scheduled run missed today is due now (run late, not never).
        assert wait_until(
            lambda: heartbeat.exists() and json.loads(heartbeat.read_text())["cycles"] >= 1,
            timeout=15,
        )
        beat = json.loads(heartbeat.read_text())
        body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        health = http_get(f"http://127.0.0.1:{port}/healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("daemon did not stop on SIGTERM")
    assert proc.returncode == 0, err
    assert beat["expected_interval_s"] == 86400
    now = datetime.now(UTC)
    next_two = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if next_two <= now:
        next_two += timedelta(days=1)
    assert beat["next_due_at"] == pytest.approx(next_two.timestamp(), abs=60)
    assert health[0] == 200
    assert metric(body, "fleet_blueprint_files", type="blueprint") == 4
    assert metric(body, "fleet_blueprint_files", type="zakon") == 4
    assert metric(body, "fleet_blueprint_noncompliant", type="blueprint", reason="schema") == 1
    assert metric(body, "fleet_blueprint_noncompliant", type="zakon", reason="unregistered") == 1
    assert metric(body, "fleet_blueprint_noncompliant", type="zakon", reason="changed") == 1
    assert metric(body, "fleet_zakon_registry_ok") == 1
    assert (metric(body, "fleet_blueprint_scan_duration_seconds") or -1) >= 0
    assert metric(body, "fleet_blueprint_scan_problems") == 1
    assert "running missed scheduled cycle" in out
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI")
        pytest.skip("promtool not installed")
    res = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr

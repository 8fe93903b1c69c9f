"""The outbox across real `fleet run claim-sweeper` processes and the Slack fake: a process
killed (SIGKILL) in the middle of a send loses nothing and the alert is sent once after
restart; two daemons sharing one outbox never send the same row."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.mission_control import MissionControl
from tests.conftest import FLEET_BIN, free_port, wait_until
from tests.fakes import FakeSlack

pytestmark = pytest.mark.system


def seed_expired_leases(db: Path, count: int) -> list[int]:
    past = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    ids = []
    with MissionControl(db, clock=lambda: past) as mc:
        for i in range(count):
            tid = mc.create_task(f"stuck task {i}").id
            mc.claim(tid, "pi-orch", f"s{i}", ttl_minutes=10)
            ids.append(tid)
    return ids


def start(env: dict[str, str], cwd: Path, **overrides: str) -> subprocess.Popen[str]:
    env = {
        **env,
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(free_port()),
        "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.5",
        **overrides,
    }
    return subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def outbox_rows(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "state/outbox.db") as conn:
        return conn.execute("SELECT dedup_key, status FROM outbox ORDER BY id").fetchall()


def test_sigkill_mid_send_loses_nothing(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    (task_id,) = seed_expired_leases(fleet_root / "databases/mission-control.db", 1)
    with FakeSlack() as slack:
        env = {
            **fleet_env,
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
            "FLEET_SLACK__TIMEOUT_S": "2",
            "FLEET_NOTIFY__SEND_LEASE_S": "8",
        }
        slack.hang(times=1)  # Slack accepts the connection and never answers
        first = start(env, tmp_path)
        try:
            assert slack.wait_for_requests(1, timeout=15), "the sender never tried to send"
            assert outbox_rows(fleet_root)[0][1] == "sending"
            first.kill()  # SIGKILL mid-send: no cleanup runs
            first.wait(timeout=5)
        finally:
            stop(first)
        assert slack.messages == []
        second = start(env, tmp_path)
        try:
            # The dead sender's claim lapses after send_lease_s; then the row is sent once.
            assert wait_until(lambda: len(slack.messages) >= 1, timeout=30)
            assert wait_until(lambda: outbox_rows(fleet_root)[0][1] == "sent", timeout=10)
        finally:
            stop(second)
    (message,) = slack.messages
    assert message.channel == "#ops" and f"Task {task_id}" in message.text
    assert len(outbox_rows(fleet_root)) == 1


def test_two_daemons_sharing_the_outbox_never_send_a_row_twice(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    ids = seed_expired_leases(fleet_root / "databases/mission-control.db", 40)
    with FakeSlack() as slack:
        env = {
            **fleet_env,
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
            "FLEET_NOTIFY__BURST": "1000",  # send each alert on its own: many rows to race for
            "FLEET_NOTIFY__RATE_PER_MINUTE": "1000",
        }
        slack.slow(0.05, times=1000)  # widen the window in which both could grab a row
        procs = [start(env, tmp_path), start(env, tmp_path)]
        try:
            assert wait_until(lambda: len(slack.messages) >= len(ids), timeout=60)
            assert wait_until(
                lambda: all(s == "sent" for _, s in outbox_rows(fleet_root)), timeout=10
            )
        finally:
            outputs = [stop(p) for p in procs]
    texts = [m.text for m in slack.messages]
    assert len(texts) == len(ids), outputs
    assert sorted(int(t.split("Task ")[1].split(" ")[0]) for t in texts) == ids
    senders = [o.count('"notification sent"') for o in outputs]
    assert sum(senders) == len(ids)

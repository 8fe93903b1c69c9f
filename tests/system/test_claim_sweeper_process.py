"""`fleet run claim-sweeper` as a real process: READY/WATCHDOG/STOPPING on a real notify
socket, /metrics and /healthz, SIGTERM exit, cycles that keep failing, --once exit codes,
role fencing. Slack is a fake on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.mc_backends import McBackend

pytestmark = pytest.mark.system


def start_daemon(
    env: dict[str, str],
    cwd: Path,
    ns: NotifySocket,
    port: int,
    extra: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    env = {
        **env,
        "NOTIFY_SOCKET": ns.path,
        "WATCHDOG_USEC": "400000",  # ping every 0.2 s
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(port),
        "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.2",
        "FLEET_CLAIM_SWEEPER__BACKOFF_MAX_S": "0.5",
        **(extra or {}),
    }
    return subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str], ns: NotifySocket) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _err = proc.communicate()
        pytest.fail("daemon did not exit within 5 s of SIGTERM")
    assert ns.wait_for("STOPPING=1", timeout=1), ns.messages
    return proc.returncode, out


def metric_value(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or (
            want
            and head.startswith(name + "{")
            and all(f'{k}="{v}"' in head for k, v in labels.items())
        ):
            return float(value)
    return None


def test_lifecycle_ready_watchdog_metrics_sigterm(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    proc = start_daemon(fleet_env, tmp_path, notify_socket, port)
    try:
        assert notify_socket.wait_for("READY=1", timeout=10), notify_socket.messages
        assert wait_until(lambda: notify_socket.count("WATCHDOG=1") >= 3, timeout=10)
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert 'fleet_build_info{daemon="claim-sweeper"' in body
        assert wait_until(
            lambda: (
                (
                    metric_value(
                        http_get(f"http://127.0.0.1:{port}/metrics")[1],
                        "fleet_cycles_total",
                        daemon="claim-sweeper",
                        outcome="ok",
                    )
                    or 0
                )
                >= 2
            ),
            timeout=10,
        )
        assert "fleet_claims_held" in body and "fleet_claims_oldest_expired_age_seconds" in body
        status, health = http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(health)["ok"] is True
        assert http_get(f"http://127.0.0.1:{port}/etc/passwd")[0] == 404
        beat = json.loads((fleet_root / "state/heartbeats/claim-sweeper.json").read_text())
        assert beat["daemon"] == "claim-sweeper" and beat["cycles"] >= 1
        assert beat["host"] == "testhost" and beat["role"] == "primary"
        mode = (fleet_root / "state/heartbeats/claim-sweeper.json").stat().st_mode & 0o777
        assert mode == 0o600
    finally:
        code, out = stop(proc, notify_socket)
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert all({"timestamp", "level", "daemon", "host", "event"} <= set(rec) for rec in lines)


def test_dry_run_runs_on_with_its_watchdog(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """--dry-run has no outbox and so no sender: that is not a sender task that ended (it
    exited 1 at once, and with the watchdog's liveness check it would stop pinging)."""
    proc = start_daemon(fleet_env, tmp_path, notify_socket, free_port(), args=("--dry-run",))
    try:
        assert notify_socket.wait_for("READY=1", timeout=10)
        assert wait_until(lambda: notify_socket.count("WATCHDOG=1") >= 3, timeout=10)
        assert proc.poll() is None
    finally:
        code, out = stop(proc, notify_socket)
    assert code == 0, out
    assert "ended unexpectedly" not in out


def test_watchdog_continues_while_every_cycle_fails(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    bad_db = tmp_path / "not-a-db.db"
    bad_db.write_bytes(b"this is not an sqlite database" * 100)
    port = free_port()
    proc = start_daemon(
        fleet_env, tmp_path, notify_socket, port, {"FLEET_MISSION_CONTROL__DB": str(bad_db)}
    )
    try:
        assert notify_socket.wait_for("READY=1", timeout=10)

        def errors() -> float:
            text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            return (
                metric_value(text, "fleet_cycles_total", daemon="claim-sweeper", outcome="error")
                or 0
            )

        assert wait_until(lambda: errors() >= 3, timeout=15)
        before = notify_socket.count("WATCHDOG=1")
        assert wait_until(lambda: notify_socket.count("WATCHDOG=1") >= before + 3, timeout=10)
        assert proc.poll() is None, "a failing cycle must never end the daemon"
        # The bad file is reported, not "fixed": the fleet never rewrites foreign data.
        assert bad_db.read_bytes().startswith(b"this is not an sqlite database")
        status, _ = http_get(f"http://127.0.0.1:{port}/healthz")
        assert status in (200, 503)  # healthy only while inside the startup grace
    finally:
        code, out = stop(proc, notify_socket)
    assert code == 0
    failures = [json.loads(x) for x in out.splitlines() if '"cycle failed"' in x]
    assert len(failures) == 1, "a failure is logged on state change, not every cycle"


def test_once_exit_codes(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    ok = run_fleet(["run", "claim-sweeper", "--once"], fleet_env, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (fleet_root / "databases/mission-control.db").exists()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    env = {**fleet_env, "FLEET_MISSION_CONTROL__DB": str(bad)}
    failed = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr


def test_once_sweeps_alerts_and_auto_releases(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, mc_backend: McBackend
) -> None:
    from datetime import UTC, datetime, timedelta

    past = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    with mc_backend.store(clock=lambda: past) as mc:
        old = mc.create_task("stuck deploy").id
        live = mc.create_task("live work").id
        mc.claim(old, "pi-orch", "s1", ttl_minutes=10)
    with mc_backend.store() as mc:
        mc.claim(live, "john", "s2", ttl_minutes=30)
    env = {**fleet_env, **mc_backend.select_env, "FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "true"}
    dry = run_fleet(["run", "claim-sweeper", "--once", "--dry-run"], env, tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would notify" in dry.stdout
    assert mc_backend.lease(old)[0] == "pi-orch:s1", "--dry-run must not release"
    res = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert mc_backend.lease(old)[0] is None
    assert mc_backend.lease(live)[0] == "john:s2"
    rows = (
        sqlite3.connect(fleet_root / "state/outbox.db")
        .execute("SELECT channel, kind, text, status FROM outbox")
        .fetchall()
    )
    assert len(rows) == 1 and rows[0][0] == "#ops" and f"Task {old}" in rows[0][2]
    # No Slack token configured: the alert waits in the outbox, it is not lost.
    assert rows[0][3] == "pending"
    again = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert again.returncode == 0
    assert (
        sqlite3.connect(fleet_root / "state/outbox.db")
        .execute("SELECT count(*) FROM outbox")
        .fetchone()[0]
        == 1
    )


def test_auto_release_refuses_on_standby(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    role = run_fleet(["role", "set", "standby"], fleet_env, tmp_path)
    assert role.returncode == 0 and (fleet_root / "state/role").read_text().strip() == "standby"
    env = {**fleet_env, "FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "true"}
    res = run_fleet(["run", "claim-sweeper"], env, tmp_path, timeout=20)
    assert res.returncode == 78
    assert "auto_release" in res.stdout and "standby" in res.stdout
    # Without auto_release it runs on a standby and never creates the replicated DB.
    res = run_fleet(["run", "claim-sweeper", "--once"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout
    assert not (fleet_root / "databases/mission-control.db").exists()


def test_promtool_check_metrics(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI: .ci/run must install the prometheus package")
        pytest.skip("promtool not installed (Debian package prometheus; .ci/run installs it)")
    port = free_port()
    proc = start_daemon(fleet_env, tmp_path, notify_socket, port)
    try:
        assert notify_socket.wait_for("READY=1", timeout=10)
        wait_until(
            lambda: (
                'outcome="ok"} 1' in http_get(f"http://127.0.0.1:{port}/metrics")[1]
                or 'outcome="ok"} 2' in http_get(f"http://127.0.0.1:{port}/metrics")[1]
            )
        )
        body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
    finally:
        stop(proc, notify_socket)
    res = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "_created" not in body


def test_second_signal_exits_at_once(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """A cycle stuck on a locked DB holds up the first SIGTERM for the grace period; a second
    signal ends the process immediately."""
    db = fleet_root / "databases/mission-control.db"
    db.parent.mkdir(parents=True)
    # A foreign DB still in rollback-journal mode: an EXCLUSIVE lock blocks even readers.
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)")
    locker.execute("BEGIN EXCLUSIVE")
    port = free_port()
    proc = start_daemon(
        fleet_env,
        tmp_path,
        notify_socket,
        port,
        {"FLEET_FLEET__STOP_GRACE_S": "60", "FLEET_CLAIM_SWEEPER__CYCLE_TIMEOUT_S": "120"},
    )
    try:
        assert notify_socket.wait_for("READY=1", timeout=10)
        # The cycle is blocked on the lock, and the watchdog keeps pinging: a locked database
        # must never get the daemon killed.
        before = notify_socket.count("WATCHDOG=1")
        assert wait_until(lambda: notify_socket.count("WATCHDOG=1") >= before + 3, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert notify_socket.wait_for("STOPPING=1", timeout=5)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)  # still waiting for the stuck cycle (grace 60 s)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        locker.execute("ROLLBACK")
        locker.close()
    assert code == 128 + signal.SIGTERM


def _outbox(fleet_root: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(fleet_root / "state/outbox.db")
    rows = conn.execute("SELECT dedup_key, text FROM outbox ORDER BY id").fetchall()
    conn.close()
    return [(str(k), str(t)) for k, t in rows]


def _node_tasks(db: Path, leases: list[tuple[int, str, object]]) -> None:
    """mc.js's table: its own NOT NULL column, lease_until DATETIME, no fleet bookkeeping."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL, status TEXT DEFAULT"
        " 'open', created_by TEXT NOT NULL, lease_holder TEXT, lease_until DATETIME)"
    )
    for task_id, holder, until in leases:
        conn.execute(
            "INSERT INTO tasks(id, title, created_by, lease_holder, lease_until)"
            " VALUES (?, ?, 'mc.js', ?, ?)",
            (task_id, f"task {task_id}", holder, until),
        )
    conn.commit()
    conn.close()


def test_the_alerts_release_command_works_as_written(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    """Why (issue 12): the #ops alert recommended `fleet mc claim-release <id> --force`, which
    exited 64 (it demanded --actor and --session)."""
    import re
    import shlex
    from datetime import UTC, datetime, timedelta

    db = fleet_root / "databases/mission-control.db"
    expired = datetime.now(UTC) - timedelta(hours=2)
    _node_tasks(db, [(42, "pi-orch:s1", expired.strftime("%Y-%m-%dT%H:%M:%SZ"))])
    res = run_fleet(["run", "claim-sweeper", "--once"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    (alert,) = [text for key, text in _outbox(fleet_root) if key.startswith("claim-expired:42:")]
    command = re.search(r"`(fleet mc claim-release [^`]*)`", alert)
    assert command is not None, alert
    argv = shlex.split(command.group(1))
    env = {k: v for k, v in fleet_env.items() if k not in ("MC_ACTOR", "MC_SESSION")}
    ran = run_fleet(argv[1:], env, tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT lease_holder, lease_until FROM tasks").fetchall() == [(None, None)]
    conn.close()


def test_unreadable_lease_alerts_once_per_task_and_is_never_released(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    db = fleet_root / "databases/mission-control.db"
    _node_tasks(db, [(7, "john:abc123", "next tuesday"), (8, "a:1", 12345)])
    conn = sqlite3.connect(db)
    schema_before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    env = {**fleet_env, "FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "true"}
    for _ in range(2):
        res = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Traceback" not in res.stdout + res.stderr
    alerts = [(k, t) for k, t in _outbox(fleet_root) if k.startswith("claim-unreadable:")]
    assert [k.split(":")[1] for k, _ in alerts] == ["7", "8"]
    assert "'next tuesday'" in alerts[0][1]
    assert "`fleet mc claim-release 7 --force`" in alerts[0][1]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, lease_holder FROM tasks ORDER BY id").fetchall() == [
        (7, "john:abc123"),
        (8, "a:1"),
    ]
    # The sweeper adopts mc.js's table as it is: no columns, indexes or bookkeeping added.
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema_before
    conn.close()

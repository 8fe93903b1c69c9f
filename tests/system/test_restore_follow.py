"""`fleet run restore-loop` as a real process following real `litestream replicate` primaries
(file replicas) written continuously by a test process: following, kill -9 of a follower, a
SIGSTOPped follower, replica missing, a dead blob endpoint, role fencing, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes.http import FakeHTTPServer
from tests.fakes.litestream_primary import (
    Primary,
    Standby,
    count_rows,
    metric_value,
    process_exists,
    read_rows,
)

pytestmark = pytest.mark.system


def is_prefix(copy: list[tuple[int, float, str]], primary: list[tuple[int, float, str]]) -> bool:
    return len(copy) <= len(primary) and copy == primary[: len(copy)]


def metrics(port: int) -> str:
    return http_get(f"http://127.0.0.1:{port}/metrics")[1]


@pytest.fixture
def primary(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = Primary(tmp_path / "anvil", ["alpha", "beta"], tiers={"beta": "P1"}).create()
    p.start_replicate()
    p.start_writer(rate_per_s=10)
    yield p
    p.close()


def test_follow_kill9_metrics_and_no_orphans(
    primary: Primary,
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
) -> None:
    standby = Standby(fleet_env, fleet_root, tmp_path, primary, max_restarts_per_hour="1")
    port = free_port()
    standby.start(notify_socket.path, port)
    seen_pids: set[int] = set()
    try:
        assert notify_socket.wait_for("READY=1", timeout=15)
        assert wait_until(lambda: count_rows(standby.copy("alpha")) >= 20, timeout=20)
        assert wait_until(lambda: standby.row("beta").get("state") == "following", timeout=10)
        # The copy follows: it keeps growing while the primary is written.
        before = count_rows(standby.copy("alpha"))
        assert wait_until(lambda: count_rows(standby.copy("alpha")) >= before + 10, timeout=10)
        for name in ("alpha", "beta"):
            assert is_prefix(read_rows(standby.copy(name)), primary.rows(name))
        assert standby.copy("alpha").stat().st_mode & 0o777 == 0o600

        old = standby.row("alpha")
        old_pid = int(old["follower_pid"])
        seen_pids.add(old_pid)
        os.kill(old_pid, signal.SIGKILL)
        at_kill = len(primary.rows("alpha"))

        def restarted() -> bool:
            row = standby.row("alpha")
            return (
                row.get("state") == "following"
                and row.get("follower_pid") not in (None, old_pid)
                and row.get("restarts_total", 0) >= 1
            )

        assert wait_until(restarted, timeout=20), standby.row("alpha")
        seen_pids.add(int(standby.row("alpha")["follower_pid"]))
        # Restarted fresh and caught up past the primary's state at the kill.
        assert wait_until(lambda: count_rows(standby.copy("alpha")) > at_kill, timeout=15)
        assert is_prefix(read_rows(standby.copy("alpha")), primary.rows("alpha"))

        def restart_metric() -> float:
            return (
                metric_value(
                    metrics(port),
                    "fleet_restore_follower_restarts_total",
                    db="alpha",
                    reason="exit",
                )
                or 0
            )

        assert wait_until(lambda: restart_metric() >= 1, timeout=10)
        # A second crash in the hour crosses max_restarts_per_hour = 1: one #ops alert.
        second = int(standby.row("alpha")["follower_pid"])
        os.kill(second, signal.SIGKILL)
        seen_pids.add(second)
        assert wait_until(
            lambda: any(
                k.startswith("restore-restarts:testhost:alpha:") for _, k, _ in standby.outbox()
            ),
            timeout=20,
        )
        text = next(t for _, k, t in standby.outbox() if k.startswith("restore-restarts:"))
        assert "restarts in the last hour (" in text and "exit" in text
        assert wait_until(lambda: standby.row("alpha").get("state") == "following", timeout=20)
        body = metrics(port)
        for name in (
            "fleet_restore_lag_seconds",
            "fleet_restore_local_txid",
            "fleet_restore_replica_txid",
            "fleet_restore_last_success_timestamp_seconds",
            "fleet_restore_rpo_target_seconds",
        ):
            assert name in body, name
        assert metric_value(body, "fleet_restore_lag_seconds", db="beta", tier="P1") is not None
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        status, health = http_get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(health)["ok"] is True

        status_cli = run_fleet(["restore", "status", "--json"], standby.env, tmp_path)
        assert status_cli.returncode == 0, status_cli.stdout + status_cli.stderr
        rows = {r["db"]: r for r in json.loads(status_cli.stdout)["databases"]}
        assert rows["alpha"]["restarts_total"] >= 1 and rows["alpha"]["ok"] is True
        text = run_fleet(["restore", "status"], standby.env, tmp_path).stdout
        assert "alpha" in text and "LIST requests/day" in text
        seen_pids.update(
            int(r["follower_pid"]) for r in standby.status()["databases"] if r["follower_pid"]
        )
    finally:
        code, out = standby.stop()
    assert code == 0, out[-3000:]
    # Children are stopped with the daemon: no litestream follower outlives it.
    assert wait_until(lambda: not any(process_exists(p) for p in seen_pids), timeout=5)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "follower exited; restarting fresh" for e in events)
    assert any(e.get("event") == "litestream" and e.get("db") == "alpha" for e in events)


def test_sigstopped_follower_is_detected_and_restarted(
    primary: Primary,
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
) -> None:
    standby = Standby(fleet_env, fleet_root, tmp_path, primary, stall_after_s="3")
    port = free_port()
    standby.start(notify_socket.path, port)
    stopped: int | None = None
    try:
        assert wait_until(lambda: standby.row("alpha").get("state") == "following", timeout=20)
        assert wait_until(lambda: standby.row("alpha").get("lag_s") is not None, timeout=10)
        stopped = int(standby.row("alpha")["follower_pid"])
        os.kill(stopped, signal.SIGSTOP)

        def stall_restarts() -> float:
            return (
                metric_value(
                    metrics(port),
                    "fleet_restore_follower_restarts_total",
                    db="alpha",
                    reason="stall",
                )
                or 0
            )

        # stall_after_s = 3 and checks every 0.5 s: detected well within the bound.
        assert wait_until(lambda: stall_restarts() >= 1, timeout=20)
        assert wait_until(lambda: not process_exists(stopped), timeout=5)
        assert wait_until(
            lambda: (
                standby.row("alpha").get("state") == "following"
                and standby.row("alpha").get("follower_pid") != stopped
            ),
            timeout=20,
        )
        grown = count_rows(standby.copy("alpha"))
        assert wait_until(lambda: count_rows(standby.copy("alpha")) > grown, timeout=10)
        assert is_prefix(read_rows(standby.copy("alpha")), primary.rows("alpha"))
        # SIGKILL of the daemon itself: its followers die with it (no orphans).
        assert wait_until(
            lambda: all(r.get("follower_pid") for r in standby.status()["databases"]), timeout=20
        )
        followers = [int(r["follower_pid"]) for r in standby.status()["databases"]]
        assert standby.proc is not None
        standby.proc.kill()
        out, _ = standby.proc.communicate(timeout=10)
        standby.proc = None
        assert wait_until(lambda: not any(process_exists(p) for p in followers), timeout=5)
    finally:
        if stopped is not None and process_exists(stopped):
            os.kill(stopped, signal.SIGCONT)
        if standby.proc is not None:
            standby.stop()
    assert '"follower stalled; restarting fresh"' in out


def test_replica_missing_alerts_without_crashing_and_recovers(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    primary = Primary(tmp_path / "anvil", ["alpha", "ghost"]).create(only=["alpha"])
    primary.start_replicate(only=["alpha"])
    assert wait_until(lambda: any(primary.replica_dir.glob("alpha/ltx/0/*.ltx")), timeout=10)
    standby = Standby(fleet_env, fleet_root, tmp_path, primary)
    port = free_port()
    try:
        standby.start(notify_socket.path, port)
        assert wait_until(lambda: standby.row("alpha").get("state") == "following", timeout=20)

        def alerts(fragment: str) -> list[tuple[str, str, str]]:
            return [r for r in standby.outbox() if fragment in r[1]]

        assert wait_until(lambda: len(alerts("restore-replica_missing:")) == 1, timeout=15)
        channel, key, text = alerts("restore-replica_missing:")[0]
        assert key.startswith("restore-replica_missing:testhost:ghost:"), key
        assert channel == "#ops" and "ghost" in text and "replica missing" in text
        assert standby.proc is not None and standby.proc.poll() is None, "no crash"
        assert standby.row("ghost")["replica_missing"] is True
        assert standby.row("alpha")["replica_missing"] is False
        checked = standby.row("ghost")["checked_at"]
        # Three more checks: still exactly one alert for the incident.
        assert wait_until(lambda: standby.row("ghost")["checked_at"] >= checked + 1.5, timeout=10)
        assert len(alerts("restore-replica_missing:")) == 1
        assert not standby.copy("ghost").exists()

        # The primary starts replicating it: the standby follows and says it recovered.
        primary.stop_replicate()
        primary.create(only=["ghost"])
        primary.start_replicate()
        assert wait_until(lambda: standby.row("ghost").get("state") == "following", timeout=20)
        assert wait_until(lambda: len(alerts("recovered")) == 1, timeout=15)
        assert "ghost" in alerts("recovered")[0][2]
        assert count_rows(standby.copy("ghost")) >= 1
    finally:
        code, out = standby.stop()
        primary.close()
    assert code == 0, out[-2000:]


def test_dead_blob_endpoint_is_bounded_and_leaves_the_copy(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    with FakeHTTPServer() as blob:
        blob.hang(times=10_000)  # accepts, never answers: litestream would wait ~400 s
        primary = Primary(
            tmp_path / "anvil", ["alpha"], abs_endpoint=f"{blob.base_url}/devstoreaccount1"
        )
        standby = Standby(
            fleet_env, fleet_root, tmp_path, primary, call_timeout_s="1", restore_timeout_s="2"
        )
        good = b"SQLite format 3\x00 pretend this is yesterday's good copy"
        standby.standby_dir.mkdir(parents=True, exist_ok=True)
        standby.copy("alpha").write_bytes(good)
        # Bounded by our timeouts (run_fleet raises past 60 s), not litestream's ~400 s.
        res = run_fleet(["run", "restore-loop", "--once"], standby.env, tmp_path, timeout=60)
        assert blob.requests, "litestream did talk to the fake endpoint"
    assert res.returncode == 1, res.stdout[-2000:]
    assert standby.copy("alpha").read_bytes() == good, "a failed restore never touches the copy"
    row = standby.row("alpha")
    assert "timed out" in row["last_error"] or "not done within" in row["last_error"]
    assert row["failures"] >= 1
    assert '"cycle failed"' in res.stdout and "no standby copy is usable" in res.stdout
    leftovers = list((standby.standby_dir / ".restore-loop").glob("alpha~*"))
    assert leftovers == []


def test_role_fencing(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    refused = run_fleet(["run", "restore-loop", "--once"], fleet_env, tmp_path)
    assert refused.returncode == 78
    assert "runs only on a standby" in refused.stdout + refused.stderr
    # Embedded defaults (role primary): --all skips restore-loop cleanly.
    everything = run_fleet(["run", "--all", "--once"], fleet_env, tmp_path, timeout=120)
    skip = [
        json.loads(line)
        for line in everything.stdout.splitlines()
        if line.startswith("{") and "not starting daemon here" in line
    ]
    assert any("restore-loop" in rec.get("reason", "") for rec in skip), everything.stdout[-3000:]
    assert not (fleet_root / "databases" / ".restore-loop").exists()
    # A promoted host: the role file says primary; restore-loop refuses there too.
    (fleet_root / "state").mkdir(parents=True, exist_ok=True)
    (fleet_root / "state" / "role").write_text("primary\n")
    env = {**fleet_env, "FLEET_FLEET__ROLE": "standby"}
    again = run_fleet(["run", "restore-loop", "--once"], env, tmp_path)
    assert again.returncode == 78

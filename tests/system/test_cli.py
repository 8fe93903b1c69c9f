"""`fleet status`, `fleet role`, `fleet silence` and usage errors, as real subprocesses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shared.heartbeats import Heartbeat, write_heartbeat
from tests.conftest import run_fleet

pytestmark = pytest.mark.system


def test_status_reads_heartbeat_files(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    from fleet.registry import by_name

    # Only claim-sweeper enabled here, so the exit code speaks about it alone.
    fleet_env = {**fleet_env, **{f"FLEET_{s.section_name.upper()}__ENABLED": "false"
                                 for s in by_name().values() if s.name != "claim-sweeper"}}
    res = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert res.returncode == 1  # nothing has run yet: the enabled daemon is stale
    (row,) = [r for r in json.loads(res.stdout) if r["daemon"] == "claim-sweeper"]
    assert row["ok"] is False and row["reason"] == "no heartbeat file"
    now = time.time()
    write_heartbeat(
        fleet_root / "state/heartbeats",
        Heartbeat(
            "claim-sweeper", "testhost", 1, "0.1.0", "primary", now - 30, 0.01, 12, 60.0, now - 600
        ),
    )
    res = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout
    (row,) = [r for r in json.loads(res.stdout) if r["daemon"] == "claim-sweeper"]
    assert {"daemon", "ok", "last_ok_at", "age_s", "expected_interval_s", "cycles"} <= set(row)
    assert row["ok"] is True and row["cycles"] == 12 and 29 <= row["age_s"] <= 60
    assert row["expected_interval_s"] == 60.0
    text = run_fleet(["status"], fleet_env, tmp_path)
    assert "claim-sweeper" in text.stdout and "yes" in text.stdout
    write_heartbeat(
        fleet_root / "state/heartbeats",
        Heartbeat(
            "claim-sweeper", "testhost", 1, "0.1.0", "primary", now - 500, 0.01, 12, 60.0, now - 900
        ),
    )
    assert run_fleet(["status"], fleet_env, tmp_path).returncode == 1


def test_role_show_and_set(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    assert run_fleet(["role", "show"], fleet_env, tmp_path).stdout.startswith("primary")
    assert run_fleet(["role", "set", "standby"], fleet_env, tmp_path).returncode == 0
    assert run_fleet(["role", "show"], fleet_env, tmp_path).stdout.startswith("standby")
    assert (fleet_root / "state/role").stat().st_mode & 0o777 == 0o600
    bad = run_fleet(["role", "set", "leader"], fleet_env, tmp_path)
    assert bad.returncode == 64


def test_silence_set_show_clear(fleet_env: dict[str, str], tmp_path: Path) -> None:
    res = run_fleet(
        ["silence", "set", "--for", "1h30m", "--reason", "failover drill"], fleet_env, tmp_path
    )
    assert res.returncode == 0, res.stderr
    shown = json.loads(run_fleet(["silence", "show", "--json"], fleet_env, tmp_path).stdout)
    assert shown["active"] is True and shown["reason"] == "failover drill"
    assert run_fleet(["silence", "clear"], fleet_env, tmp_path).returncode == 0
    shown = json.loads(run_fleet(["silence", "show", "--json"], fleet_env, tmp_path).stdout)
    assert shown["active"] is False
    assert run_fleet(["silence", "set", "--for", "soon"], fleet_env, tmp_path).returncode == 64


def test_usage_errors_exit_64(fleet_env: dict[str, str], tmp_path: Path) -> None:
    assert run_fleet(["run"], fleet_env, tmp_path).returncode == 64
    assert run_fleet(["run", "no-such-daemon"], fleet_env, tmp_path).returncode == 64
    assert run_fleet(["frobnicate"], fleet_env, tmp_path).returncode == 64
    assert run_fleet(["--version"], fleet_env, tmp_path).returncode == 0

"""`fleet status`, `fleet role`, `fleet silence` and usage errors, as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shared.heartbeats import Heartbeat, write_heartbeat
from tests.conftest import FLEET_BIN, run_fleet, wait_until

pytestmark = pytest.mark.system


def only_claim_sweeper(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every daemon but claim-sweeper disabled."""
    from fleet.registry import by_name

    off = {
        f"FLEET_{m.section_name.upper()}__ENABLED": "false"
        for m in by_name().values()
        if m.name != "claim-sweeper"
    }
    return {**env, **off}


def test_status_reads_heartbeat_files(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    # Only claim-sweeper enabled here, so the exit code speaks about it alone.
    fleet_env = only_claim_sweeper(fleet_env)
    res = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert res.returncode == 1  # nothing has run yet: the enabled daemon is stale
    (row,) = [r for r in json.loads(res.stdout) if r["daemon"] == "claim-sweeper"]
    assert row["ok"] is False and row["reason"] == "no heartbeat file"
    now = time.time()
    stand_in = subprocess.Popen(["sleep", "120"])  # a live process for the heartbeat's pid
    try:
        check_heartbeat_rows(fleet_env, fleet_root, tmp_path, stand_in.pid, now)
    finally:
        stand_in.kill()
        stand_in.wait()


def check_heartbeat_rows(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, pid: int, now: float
) -> None:
    write_heartbeat(
        fleet_root / "state/heartbeats",
        Heartbeat(
            "claim-sweeper",
            "testhost",
            pid,
            "0.1.0",
            "primary",
            now - 30,
            0.01,
            12,
            60.0,
            now,
            process_started_at=now,
        ),
    )
    res = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout
    (row,) = [r for r in json.loads(res.stdout) if r["daemon"] == "claim-sweeper"]
    assert {"daemon", "ok", "last_ok_at", "age_s", "expected_interval_s", "cycles"} <= set(row)
    assert row["ok"] is True and row["cycles"] == 12 and 29 <= row["age_s"] <= 60
    assert row["expected_interval_s"] == 60.0
    assert row["process"] == "running" and row["pid"] == pid
    text = run_fleet(["status"], fleet_env, tmp_path)
    assert "claim-sweeper" in text.stdout and "yes" in text.stdout and "running" in text.stdout
    write_heartbeat(
        fleet_root / "state/heartbeats",
        Heartbeat(
            "claim-sweeper", "testhost", pid, "0.1.0", "primary", now - 500, 0.01, 12, 60.0, now
        ),
    )
    assert run_fleet(["status"], fleet_env, tmp_path).returncode == 1
    # pid 1 is a live process, but not one that started when this heartbeat says: stopped
    write_heartbeat(
        fleet_root / "state/heartbeats",
        Heartbeat(
            "claim-sweeper",
            "testhost",
            1,
            "0.1.0",
            "primary",
            now - 30,
            0.01,
            12,
            60.0,
            now,
            process_started_at=now,
        ),
    )
    res = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert res.returncode == 1
    (row,) = [r for r in json.loads(res.stdout) if r["daemon"] == "claim-sweeper"]
    assert row["process"] == "stopped" and row["reason"].startswith(
        "stopped: pid 1 is gone or reused"
    )


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


def test_status_shows_a_killed_daemon_stopped_at_once(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    """Why-bullet (issue 15): after the fleet was stopped, status still printed "yes ... ok"."""
    env = {**only_claim_sweeper(fleet_env), "FLEET_CLAIM_SWEEPER__METRICS_PORT": "0"}
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def row() -> dict[str, object]:
            res = run_fleet(["status", "--json"], env, tmp_path)
            rows = json.loads(res.stdout) if res.stdout.strip() else []
            found = [r for r in rows if r["daemon"] == "claim-sweeper"]
            return {**found[0], "code": res.returncode} if found else {}

        assert wait_until(lambda: row().get("ok") is True, timeout=60)
        running = row()
        assert running["process"] == "running" and running["pid"] == proc.pid
        assert running["code"] == 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    stopped = row()
    assert stopped["ok"] is False and stopped["process"] == "stopped"
    assert stopped["code"] == 1


def test_status_imports_no_http_stack_no_pydantic_and_no_daemon_code(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """`fleet status` must start fast: it reads heartbeat files and the config keys it needs,
    so it never pays for the HTTP clients, the SQLite driver, pydantic or any daemon's code."""
    import sys

    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nrole = "standby"\n[claim_sweeper]\nauto_release = true\n')
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "from fleet.entry import main\n"
        "main(['status', '--json', '--config', sys.argv[1]])\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        env=fleet_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1, res.stderr  # nothing runs: the expected daemons are down
    rows = {r["daemon"]: r for r in json.loads(res.stdout)}
    # read without the models, yet fenced as they say: a standby with auto_release
    assert rows["restore-loop"]["enabled"] and not rows["email-reactor"]["enabled"]
    assert not rows["claim-sweeper"]["enabled"]
    modules = set(json.loads(res.stderr.strip().splitlines()[-1]))
    top = {m.split(".")[0] for m in modules}
    assert not top & {"aiohttp", "httpx", "aiosqlite", "pydantic", "pydantic_settings"}, top
    assert not {m for m in modules if m.startswith("daemons")}, modules
    assert not {"shared.runtime", "shared.config", "fleet.config", "asyncio"} & modules

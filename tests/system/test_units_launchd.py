"""LaunchAgent generation: the plist keys, the typed model of them rejecting what launchd would
silently ignore, the committed launchagents/ parsing with that model, and `fleet units
launchd-run` (exit 78 becomes 0 so KeepAlive never loops on a refusal; crashes stay non-zero;
SIGTERM exits 0)."""

from __future__ import annotations

import plistlib
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.exitcodes import ExitCode
from shared.units import LaunchAgentPlist, stop_timeout_s
from tests.conftest import FLEET_BIN, NotifySocket, run_fleet
from tests.units_support import REPO, VENV, gen, layout, load, write_config


def test_plist_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path("/Users/alai/system")
    cfg = write_config(tmp_path / "fleet.toml", root)
    config = load(cfg, monkeypatch)
    data = gen(config, "launchd", layout("user", cfg)).files["no.alai.fleet.claim-sweeper.plist"]
    raw = plistlib.loads(data)
    agent = LaunchAgentPlist.model_validate(raw)
    assert agent.Label == "no.alai.fleet.claim-sweeper"
    assert agent.ProgramArguments == [
        f"{VENV}/bin/fleet",
        "units",
        "launchd-run",
        "claim-sweeper",
        "--config",
        str(cfg),
        # fleet.env and the daemon's own env file, loaded when they exist (as systemd does)
        "--optional-env-file",
        "/home/alai/.config/alai-fleet/fleet.env",
        "--optional-env-file",
        "/home/alai/.config/alai-fleet/fleet-claim-sweeper.env",
    ]
    assert agent.RunAtLoad is True
    assert agent.KeepAlive.SuccessfulExit is False
    assert agent.ExitTimeOut >= config.fleet.stop_grace_s
    assert agent.ExitTimeOut == stop_timeout_s(config)
    assert agent.ThrottleInterval >= 1
    # The daemon writes its JSON log itself (reopened when newsyslog rotates it); launchd's
    # own file takes what comes before logging starts, and crash tracebacks.
    assert agent.EnvironmentVariables["FLEET_FLEET__LOG_FILE"] == f"{root}/logs/claim-sweeper.log"
    assert agent.StandardOutPath == f"{root}/logs/claim-sweeper.err.log"
    assert agent.EnvironmentVariables["PYTHONOPTIMIZE"] == "2"  # -OO, as the systemd units
    assert "MALLOC_ARENA_MAX" not in agent.EnvironmentVariables  # glibc's; macOS ignores it
    assert agent.StandardErrorPath == f"{root}/logs/claim-sweeper.err.log"
    assert agent.ProcessType == "Background"
    assert agent.Umask == 0o077
    assert agent.EnvironmentVariables["PYTHONUNBUFFERED"] == "1"
    assert set(raw) == set(LaunchAgentPlist.model_fields) - {"StartCalendarInterval"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(ProgramArguments=["fleet", "run"]), "absolute"),
        (lambda p: p["EnvironmentVariables"].update(SLACK_TOKEN="x"), "secret"),
        (lambda p: p.update(KeepAlives=True), "Extra inputs"),
        (lambda p: p.update(RunAtLoad="yes"), "boolean"),
        (lambda p: p.update(Label="com.example.thing"), "no.alai.fleet"),
        (lambda p: p.update(KeepAlive={"SuccessfulExit": False, "Crashd": True}), "Extra"),
        (lambda p: p.update(ProcessType="Daemon"), "Background"),
    ],
)
def test_plist_model_rejects_what_launchd_would_silently_ignore(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    config = load(write_config(tmp_path / "fleet.toml", Path("/Users/alai/system")), monkeypatch)
    raw = plistlib.loads(
        gen(config, "launchd", layout("user")).files["no.alai.fleet.claim-sweeper.plist"]
    )
    change(raw)
    with pytest.raises(ValidationError, match=message):
        LaunchAgentPlist.model_validate(raw)


def test_committed_plists_parse_with_the_model() -> None:
    plists = sorted((REPO / "launchagents").glob("*.plist"))
    assert plists, "launchagents/ holds no plist: run `fleet units example`"
    for path in plists:
        agent = LaunchAgentPlist.model_validate(plistlib.loads(path.read_bytes()))
        assert path.name == f"{agent.Label}.plist"
        assert agent.ProgramArguments[0].startswith("/")


@pytest.mark.system
def test_launchd_run_turns_a_refusal_into_exit_0(fleet_env: dict[str, str], tmp_path: Path) -> None:
    env = {**fleet_env, "FLEET_FLEET__ROLE": "standby", "FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "true"}
    direct = run_fleet(["run", "claim-sweeper"], env, tmp_path, timeout=30)
    assert direct.returncode == 78
    res = run_fleet(["units", "launchd-run", "claim-sweeper"], env, tmp_path, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "refused to start (exit 78" in res.stderr
    assert "launchctl kickstart -k gui/" in res.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[claim_sweeper]\ninterval_s = -1\n")
    res = run_fleet(
        ["units", "launchd-run", "claim-sweeper", "--config", str(bad)],
        fleet_env,
        tmp_path,
        timeout=30,
    )
    assert res.returncode == 0
    assert "claim_sweeper.interval_s" in res.stderr


@pytest.mark.system
@pytest.mark.parametrize(
    ("name", "needle"),
    [("no-such-daemon", "unknown daemon 'no-such-daemon'"), ("", "give a daemon NAME")],
)
def test_launchd_run_of_no_known_daemon_is_a_usage_error(
    fleet_env: dict[str, str], tmp_path: Path, name: str, needle: str
) -> None:
    """A NAME the plists never give goes to click, which answers as `fleet run NAME` does:
    a usage error (exit 64), never a traceback, and an empty NAME never runs every daemon."""
    res = run_fleet(["units", "launchd-run", name], fleet_env, tmp_path, timeout=30)
    assert res.returncode == ExitCode.USAGE, res.stdout + res.stderr
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.system
def test_launchd_run_keeps_a_startup_failure_non_zero(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    root_file = tmp_path / "root-is-a-file"
    root_file.write_text("not a directory")
    env = {**fleet_env, "FLEET_FLEET__ROOT": str(root_file)}
    res = run_fleet(["units", "launchd-run", "claim-sweeper"], env, tmp_path, timeout=30)
    assert res.returncode not in (0, 78), res.stdout + res.stderr


@pytest.mark.system
def test_launchd_run_sigterm_exits_0(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    env = {
        **fleet_env,
        "NOTIFY_SOCKET": notify_socket.path,
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [str(FLEET_BIN), "units", "launchd-run", "claim-sweeper"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert notify_socket.wait_for("READY=1", timeout=15), notify_socket.messages
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert '"stopped"' in out


@pytest.mark.system
def test_launchd_run_never_imports_click(fleet_env: dict[str, str], tmp_path: Path) -> None:
    """A launchd job is the daemon's process for its whole life: the plists' form starts it
    without click (about 1.4 MiB of RSS), yet still loads the env file and still refuses."""
    secrets = tmp_path / "s.env"
    secrets.write_text("FLEET_CLAIM_SWEEPER__INTERVAL_S=-1\n")
    secrets.chmod(0o600)
    words = ["launchd-run", "claim-sweeper", "--env-file", str(secrets), "--domain", "system"]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(FLEET_BIN), "units", *words],
        env=fleet_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = set(re.findall(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", proc.stderr))
    assert "shared.config" in modules, proc.stderr[-2000:]  # it got as far as the config
    assert "click" not in modules
    # the value from the env file reached the config, which refused it: exit 0 under launchd
    assert proc.returncode == 0
    assert "claim_sweeper.interval_s" in proc.stderr
    assert "launchctl kickstart -k system/no.alai.fleet.claim-sweeper" in proc.stderr

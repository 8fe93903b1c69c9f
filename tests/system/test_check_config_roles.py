"""`fleet check-config` applies role fencing exactly as `fleet run --all` does (issue 14): on a
standby the daemons that write replicated databases are fenced off and the rest run, so both
exit 0 and name the same fenced daemons; when every enabled daemon is fenced both exit 78; and
for one named daemon (`check-config NAME`, `run NAME`) a fenced one is 78 for both."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import free_port, run_fleet

pytestmark = pytest.mark.system

LISTED = re.compile(r"^  ([a-z][a-z-]*): ", re.MULTILINE)


def fenced_by_run(stdout: str) -> set[str]:
    """The daemons `run --all` skipped, from its JSON log lines."""
    names = set()
    for line in stdout.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == "not starting daemon here":
                names.add(rec["reason"].split(":", 1)[0])
    return names


def fenced_by_check(out: str) -> set[str]:
    """The daemons check-config lists as fenced off (indented ``name: reason`` lines)."""
    return set(LISTED.findall(out))


@pytest.fixture
def standby_env(fleet_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {
        **fleet_env,
        # the daemons that do run must not collide with other tests or reach anything real
        "FLEET_HEARTBEAT__HEALTH_PORT": str(free_port()),
        "FLEET_OLLAMA_HEALTH__HOSTS": json.dumps({"anvil": {"url": "http://127.0.0.1:9"}}),
    }
    res = run_fleet(["role", "set", "standby"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    return env


def test_defaults_on_a_standby_pass_and_name_the_fenced_daemons(
    standby_env: dict[str, str], tmp_path: Path
) -> None:
    res = run_fleet(["check-config"], standby_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "role standby" in res.stdout
    assert fenced_by_check(res.stdout) == {"email-reactor", "blueprint-watchdog"}, res.stdout
    assert "restore-loop" in res.stdout.split("fenced")[0]  # among the daemons that run


def test_check_config_and_run_all_agree_on_a_standby(
    standby_env: dict[str, str], tmp_path: Path
) -> None:
    # restore-loop needs its tier table and replicas to finish a cycle; not under test here.
    env = {**standby_env, "FLEET_RESTORE_LOOP__ENABLED": "false"}
    checked = run_fleet(["check-config"], env, tmp_path)
    ran = run_fleet(["run", "--all", "--once"], env, tmp_path, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    expected = {"email-reactor", "blueprint-watchdog"}
    assert fenced_by_check(checked.stdout) == expected == fenced_by_run(ran.stdout)


def test_both_exit_78_when_every_enabled_daemon_is_fenced(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    off = {
        f"FLEET_{s}__ENABLED": "false"
        for s in ("OLLAMA_HEALTH", "RESTORE_LOOP", "HEARTBEAT", "CLAIM_SWEEPER")
    }
    env = {**fleet_env, **off, "FLEET_FLEET__ROLE": "standby"}
    checked = run_fleet(["check-config"], env, tmp_path)
    ran = run_fleet(["run", "--all", "--once"], env, tmp_path, timeout=120)
    assert checked.returncode == 78, checked.stdout + checked.stderr
    assert ran.returncode == 78, ran.stdout[-3000:]
    assert "Traceback" not in checked.stderr + ran.stderr
    expected = {"email-reactor", "blueprint-watchdog"}
    assert fenced_by_check(checked.stderr) == expected == fenced_by_run(ran.stdout)
    # A primary whose only enabled daemon is restore-loop: the same, the other way round.
    only_restore = {
        **fleet_env,
        **{
            f"FLEET_{s}__ENABLED": "false"
            for s in (
                "EMAIL_REACTOR",
                "OLLAMA_HEALTH",
                "HEARTBEAT",
                "BLUEPRINT_WATCHDOG",
                "CLAIM_SWEEPER",
            )
        },
    }
    checked = run_fleet(["check-config"], only_restore, tmp_path)
    ran = run_fleet(["run", "--all", "--once"], only_restore, tmp_path)
    assert checked.returncode == 78 and ran.returncode == 78, checked.stdout + ran.stdout
    assert fenced_by_check(checked.stderr) == {"restore-loop"}
    assert "runs only on a standby" in checked.stderr


@pytest.mark.parametrize(
    ("name", "role", "code"),
    [
        ("email-reactor", "standby", 78),
        ("blueprint-watchdog", "standby", 78),
        ("restore-loop", "primary", 78),
        ("claim-sweeper", "standby", 0),
    ],
)
def test_one_named_daemon_check_config_and_run_agree(
    name: str, role: str, code: int, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "FLEET_FLEET__ROLE": role}
    checked = run_fleet(["check-config", name], env, tmp_path)
    ran = run_fleet(["run", name, "--once"], env, tmp_path, timeout=120)
    assert checked.returncode == code, checked.stdout + checked.stderr
    assert ran.returncode == code, ran.stdout[-3000:] + ran.stderr[-2000:]
    if code == 78:
        assert f"{name}:" in checked.stderr and "Traceback" not in checked.stderr


def test_check_config_with_an_unknown_daemon_is_a_usage_error(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    res = run_fleet(["check-config", "no-such-daemon"], fleet_env, tmp_path)
    assert res.returncode == 64 and "unknown daemon" in res.stderr

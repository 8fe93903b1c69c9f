"""`fleet heartbeat github-workflow`: the printed workflow parses as YAML with the expected
structure, references secrets by name and never inlines one, and its poll script, run by the real
bash and curl against a fake peer, alerts after exactly 2 consecutive failures. Also the
read-only `fleet heartbeat health` and `peers` commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemons.heartbeat.workflow import poll_script
from tests.conftest import run_fleet
from tests.fakes.peer import FakePeer
from tests.heartbeat_support import only_enabled, write_config

SLACK_TOKEN = "xoxb-1111-secret-token-value"


def load_yaml(text: str) -> Any:
    """Parse with PyYAML: the venv's if installed, else the system python3's. Skipped (failed
    in CI) when neither has it."""
    try:
        import yaml  # type: ignore[import-untyped]

        return yaml.safe_load(text)
    except ImportError:
        pass
    for python in ("/usr/bin/python3", shutil.which("python3")):
        if not python or Path(python).resolve() == Path(sys.executable).resolve():
            continue
        res = subprocess.run(
            [
                python,
                "-c",
                "import json,sys,yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
            ],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if res.returncode == 0:
            return json.loads(res.stdout)
        if "No module named 'yaml'" not in res.stderr:
            pytest.fail(f"workflow is not valid YAML:\n{res.stderr}")
    if os.environ.get("CI"):
        pytest.fail("no YAML parser: add pyyaml to the test extras (or python3-yaml to .ci/run)")
    pytest.skip("PyYAML not installed (venv or system python3)")


@pytest.fixture
def cli_env(fleet_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = write_config(
        tmp_path / "fleet.toml",
        heartbeat={"escalation_channel": "U0ESCALATE"},
        peers=[
            {"name": "anvil", "url": "http://anvil.example.org:8099/health", "interval_s": 60},
            {"name": "forge", "url": "http://forge.example.org:8099/health"},
        ],
    )
    return {
        **only_enabled(fleet_env, "heartbeat"),
        "FLEET_CONFIG": str(config),
        "FLEET_SLACK__TOKEN": SLACK_TOKEN,
    }


def test_workflow_parses_and_references_secrets_by_name(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    res = run_fleet(["heartbeat", "github-workflow", "--peer", "anvil"], cli_env, tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert SLACK_TOKEN not in text and "hooks.slack.com" not in text
    wf = load_yaml(text)
    on = wf.get("on", wf.get(True))
    assert on["schedule"] == [{"cron": "*/5 * * * *"}]
    assert "workflow_dispatch" in on
    assert wf["permissions"] == {"contents": "read"}
    job = wf["jobs"]["watch"]
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] <= 30
    poll, alert, fail = job["steps"]
    assert poll["env"]["HEALTH_URL"] == "http://anvil.example.org:8099/health"
    assert poll["env"]["POLLS"] == "5" and poll["env"]["INTERVAL"] == "60"
    assert poll["env"]["ALERT_AFTER"] == "2"
    assert poll["run"] == poll_script()
    assert "$HEALTH_URL" in poll["run"] and "anvil.example.org" not in poll["run"]
    assert alert["if"] == "steps.poll.outputs.down == 'true'"
    assert alert["env"]["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_WEBHOOK_URL }}"
    assert "$SLACK_WEBHOOK_URL" in alert["run"]
    assert fail["run"] == "exit 1"
    # Every ${{ }} expression is a secret by name or a step/github context value.
    for line in text.splitlines():
        if "${{" in line:
            assert "secrets." in line or "steps.poll.outputs" in line or "github." in line


def test_workflow_options_url_secret_and_tailscale(cli_env: dict[str, str], tmp_path: Path) -> None:
    res = run_fleet(
        [
            "heartbeat",
            "github-workflow",
            "--peer",
            "forge",
            "--url-secret",
            "FORGE_HEALTH_URL",
            "--webhook-secret",
            "SLACK_OPS_WEBHOOK",
            "--tailscale",
        ],
        cli_env,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    wf = load_yaml(res.stdout)
    steps = wf["jobs"]["watch"]["steps"]
    assert steps[0]["uses"].startswith("tailscale/github-action@")
    assert steps[0]["with"]["oauth-secret"] == "${{ secrets.TS_OAUTH_SECRET }}"
    assert steps[1]["env"]["HEALTH_URL"] == "${{ secrets.FORGE_HEALTH_URL }}"
    assert steps[2]["env"]["SLACK_WEBHOOK_URL"] == "${{ secrets.SLACK_OPS_WEBHOOK }}"
    assert "forge.example.org" not in res.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--peer", "nope"], "no peer 'nope'", 2),  # not found (docs/cli.md)
        (["--peer", "anvil", "--url-secret", "bad name; rm -rf /"], "secret name", 64),
        (["--peer", "anvil", "--webhook-secret", "GITHUB_TOKEN"], "secret name", 64),
    ],
)
def test_workflow_bad_arguments_exit_64_or_2(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    res = run_fleet(["heartbeat", "github-workflow", *args], cli_env, tmp_path)
    assert res.returncode == code and message in res.stderr
    assert res.stdout == ""


def run_poll(peer: FakePeer, tmp_path: Path, polls: int = 5) -> dict[str, str]:
    bash, curl = shutil.which("bash"), shutil.which("curl")
    if bash is None or curl is None:
        pytest.skip("bash and curl needed to run the workflow's script")
    out = tmp_path / "github_output"
    out.write_text("")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HEALTH_URL": peer.health_url,
        "POLLS": str(polls),
        "INTERVAL": "0",
        "TIMEOUT": "5",
        "ALERT_AFTER": "2",
        "GITHUB_OUTPUT": str(out),
    }
    res = subprocess.run(
        [bash, "-e", "-c", poll_script()], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


@pytest.mark.system
def test_poll_script_alerts_after_exactly_two_consecutive_failures(tmp_path: Path) -> None:
    with FakePeer(default="fail") as dead:
        assert run_poll(dead, tmp_path) == {"down": "true", "code": "503", "failures": "2"}
        assert len(dead.requests) == 2, "stops polling once it alerts"
    with FakePeer(default="ok") as alive:
        assert run_poll(alive, tmp_path) == {"down": "false"}
        assert len(alive.requests) == 5
    with FakePeer(default="ok") as flapping:
        flapping.script("fail", "ok", "fail", "ok", "fail")
        assert run_poll(flapping, tmp_path) == {"down": "false"}
    with FakePeer() as dying:
        dying.script("ok", "ok", "fail", "fail")
        assert run_poll(dying, tmp_path)["down"] == "true"
        assert len(dying.requests) == 4
    with FakePeer() as gone:
        gone.stop()  # connection refused: curl reports 000
        assert run_poll(gone, tmp_path)["code"] == "000"


def test_health_and_peers_commands(
    cli_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    res = run_fleet(["heartbeat", "health", "--json"], cli_env, tmp_path)
    assert res.returncode == 1, "no heartbeat file yet: degraded"
    body = json.loads(res.stdout)
    assert body["status"] == "degraded" and body["stale"] == ["heartbeat"]
    res = run_fleet(["heartbeat", "peers"], cli_env, tmp_path)
    assert res.returncode == 0 and "anvil" in res.stdout and "never probed" in res.stdout
    state = fleet_root / "state/heartbeat-peers.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text("{not json")
    res = run_fleet(["heartbeat", "peers", "--json"], cli_env, tmp_path)
    assert res.returncode == 0 and "unreadable" in res.stderr
    assert set(json.loads(res.stdout)) == {"anvil", "forge"}

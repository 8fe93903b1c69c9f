"""`fleet cutover` against hostile and broken inputs: a legacy plist that is not a plist, an
ops-watchdog.json that is not JSON, Slack tokens the outbox cannot use (and `--online` against
a fake Slack on 127.0.0.1), secrets files too open or missing a variable no legacy job has,
and a port the fleet's own heartbeat already holds. Each is a finding with its fix, never a
traceback, and apply refuses what it cannot fix."""

from __future__ import annotations

import json
import os
import plistlib
import socket
import time
from pathlib import Path

import pytest

from shared.heartbeats import Heartbeat, write_heartbeat
from tests.conftest import free_port, run_fleet
from tests.cutover_support import (
    AZURE_KEY,
    LegacyHost,
    build_legacy_host,
    fake_env,
    install_fakes,
    logged_calls,
)
from tests.fakes.slack import DEFAULT_TOKEN, FakeSlack

pytestmark = pytest.mark.system


def check(host: LegacyHost, env: dict[str, str], cwd: Path, *more: str) -> dict:  # type: ignore[type-arg]
    res = run_fleet(host.args("cutover", "check", "--json", *more), env, cwd)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    report: dict = json.loads(res.stdout)  # type: ignore[type-arg]
    assert report["clean"] is (res.returncode == 0)
    return report


def kinds(report: dict, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [c for c in report["conflicts"] if c["kind"] == kind]


@pytest.fixture
def host(tmp_path: Path, fleet_root: Path) -> LegacyHost:
    # health_port 0: no port is probed unless a test is about ports (a free port picked now
    # could be taken by another process before the test probes it)
    return build_legacy_host(tmp_path, 0)


def test_a_legacy_plist_that_is_not_a_plist_is_found_and_moved_aside(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    host.plist("no.alai.inbox-watcher").write_bytes(b"\x00\xffnot a plist at all")
    host.plist("com.example.list").write_bytes(plistlib.dumps(["not", "a", "dict"]))
    report = check(host, fleet_env, tmp_path)
    (inbox,) = [c for c in kinds(report, "legacy-job") if "no.alai.inbox-watcher" in c["subject"]]
    assert "the file is unusable: not a valid plist" in inbox["problem"]
    assert any("com.example.list.plist: not a plist dictionary" in n for n in report["notes"])
    env = fake_env(fleet_env, install_fakes(tmp_path / "bin"), tmp_path / "fakes", [])
    res = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (host.agents / "disabled-by-fleet" / "no.alai.inbox-watcher.plist").exists()
    # not loaded (launchd could not parse it either): asked, not booted out
    assert [c for c in logged_calls(env) if c[:2] == ["launchctl", "bootout"]] == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{ critical_services: [", "not valid JSON"),
        ('["no.alai.inbox-watcher"]', "not a JSON object"),
        ('{"critical_services": "no.alai.inbox-watcher"}', "critical_services is not a list"),
    ],
)
def test_an_unreadable_ops_watchdog_is_reported_and_blocks_apply(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path, text: str, problem: str
) -> None:
    watchdog = host.system_config / "ops-watchdog.json"
    watchdog.write_text(text)
    (conflict,) = kinds(check(host, fleet_env, tmp_path), "ops-watchdog")
    assert problem in conflict["problem"] and conflict["apply_fixes"] is False
    res = run_fleet(host.args("cutover", "apply", "--yes"), fleet_env, tmp_path)
    assert res.returncode == 1
    assert f"{watchdog}: {problem}" in res.stderr
    assert watchdog.read_text() == text  # never rewritten


def test_slack_tokens_the_outbox_cannot_use(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    host.token_file.write_text("hunter2-not-a-slack-token\n")
    host.token_file.chmod(0o600)
    report = check(host, fleet_env, tmp_path)
    (bad,) = kinds(report, "slack-token")
    assert "not a bot (xoxb-) or user (xoxp-) token" in bad["problem"]
    assert bad["apply_fixes"] is False
    assert "hunter2" not in json.dumps(report)
    res = run_fleet(host.args("cutover", "apply", "--yes"), fleet_env, tmp_path)
    assert res.returncode == 1 and "xoxb-" in res.stderr and "hunter2" not in res.stderr

    host.config.write_text(host.config.read_text().replace(f'token_file = "{host.token_file}"', ""))
    (missing,) = kinds(check(host, fleet_env, tmp_path), "slack-token")
    assert "no Slack token" in missing["problem"] and "wait in the outbox" in missing["problem"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_token_file_owned_by_someone_else_is_not_chmodded(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    os.chown(host.token_file, 65534, 65534)
    (conflict,) = kinds(check(host, fleet_env, tmp_path), "slack-token")
    assert "owned by uid 65534" in conflict["problem"] and conflict["apply_fixes"] is False


def test_online_asks_slack_auth_test(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    host.token_file.chmod(0o600)
    with FakeSlack() as slack:
        env = {**fleet_env, "FLEET_SLACK__BASE_URL": slack.base_url}
        assert kinds(check(host, env, tmp_path, "--online"), "slack-token") == []
        assert [r.path for r in slack.requests] == ["/api/auth.test"]
    with FakeSlack(token="xoxb-another-token") as slack:
        env = {**fleet_env, "FLEET_SLACK__BASE_URL": slack.base_url}
        (refused,) = kinds(check(host, env, tmp_path, "--online"), "slack-token")
        assert "refused the token: invalid_auth" in refused["problem"]
    env = {**fleet_env, "FLEET_SLACK__BASE_URL": f"http://127.0.0.1:{free_port()}/api/"}
    (down,) = kinds(check(host, env, tmp_path, "--online"), "slack-token")
    assert "cannot reach Slack" in down["problem"] and DEFAULT_TOKEN not in down["problem"]


def test_secrets_file_too_open_or_missing_a_variable_nobody_has(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    host.env_file.write_text(
        f"LITESTREAM_AZURE_ACCOUNT=x\nLITESTREAM_AZURE_ACCOUNT_KEY={AZURE_KEY}\n"
    )
    host.env_file.chmod(0o644)
    (loose,) = kinds(check(host, fleet_env, tmp_path), "secrets-file")
    assert "mode 0644" in loose["problem"] and loose["apply_fixes"] is True
    assert AZURE_KEY not in json.dumps(loose)

    host.env_file.unlink()
    plist = plistlib.loads(host.plist("com.alai.litestream").read_bytes())
    del plist["EnvironmentVariables"]["LITESTREAM_AZURE_ACCOUNT_KEY"]
    host.plist("com.alai.litestream").write_bytes(plistlib.dumps(plist))
    (missing,) = kinds(check(host, fleet_env, tmp_path), "secrets-file")
    assert missing["apply_fixes"] is False
    assert "add LITESTREAM_AZURE_ACCOUNT_KEY=..." in missing["fix"]
    res = run_fleet(host.args("cutover", "apply", "--yes"), fleet_env, tmp_path)
    assert res.returncode == 1 and "LITESTREAM_AZURE_ACCOUNT_KEY" in res.stderr
    assert not host.env_file.exists()


def test_a_port_the_fleets_own_heartbeat_holds_is_no_conflict(
    tmp_path: Path, fleet_env: dict[str, str], fleet_root: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        host = build_legacy_host(tmp_path, sock.getsockname()[1])
        assert len(kinds(check(host, fleet_env, tmp_path), "port")) == 1
        now = time.time()
        beat = Heartbeat(
            "heartbeat", "testhost", os.getpid(), "0.1.0", "primary", now, 0.1, 3, 30.0, now - 60
        )
        write_heartbeat(fleet_root / "state" / "heartbeats", beat)
        assert kinds(check(host, fleet_env, tmp_path), "port") == []


def test_an_invalid_config_exits_78_naming_the_key(
    host: LegacyHost, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    host.config.write_text(host.config.read_text() + "\n[cutover_nonsense]\nx = 1\n")
    for verb in ("check", "plan", "apply"):
        res = run_fleet(host.args("cutover", verb), fleet_env, tmp_path)
        assert res.returncode == 78, res.stdout + res.stderr
        assert "cutover_nonsense" in res.stderr and "Traceback" not in res.stderr


def test_a_bind_address_this_host_lacks_is_a_conflict_with_its_own_fix(
    fleet_env: dict[str, str], tmp_path: Path, fleet_root: Path
) -> None:
    host = build_legacy_host(tmp_path, free_port())  # 192.0.2.1 is nobody's: any port fails
    text = host.config.read_text()
    host.config.write_text(
        text.replace("[heartbeat]\n", '[heartbeat]\nhealth_bind = "192.0.2.1"\n')
    )
    (conflict,) = kinds(check(host, fleet_env, tmp_path), "port")
    assert conflict["subject"] == f"192.0.2.1:{host.port}"
    assert "cannot bind it" in conflict["problem"] and "heartbeat.health_bind" in conflict["fix"]

"""The cutover differs per platform and role: on Linux the legacy jobs are systemd units (user
and system, matched by unit name and by the script in ExecStart=) stopped with a fake
`systemctl` first on PATH; on the standby the restore shell loop is what the fleet replaces and
the inbox watcher is left alone."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import run_fleet
from tests.cutover_support import (
    AZURE_ACCOUNT,
    AZURE_KEY,
    LegacyHost,
    build_legacy_host,
    fake_env,
    install_fakes,
    logged_calls,
)

pytestmark = pytest.mark.system


def _linux_host(tmp_path: Path) -> LegacyHost:
    host = build_legacy_host(tmp_path, 0)
    system = host.home / "etc-systemd-system"
    system.mkdir()
    (system / "litestream.service").write_text(
        "[Service]\nExecStart=/usr/bin/litestream replicate -config /etc/litestream.yml\n"
        f'Environment="LITESTREAM_AZURE_ACCOUNT={AZURE_ACCOUNT}" '
        f"LITESTREAM_AZURE_ACCOUNT_KEY={AZURE_KEY}\n"
    )
    user = host.home / ".config" / "systemd" / "user"
    (user / "email-reactor-digest.timer").write_text("[Timer]\nOnCalendar=08:00\n")
    (user / "health.service").write_text(
        "[Service]\nExecStart=-/usr/bin/node /srv/tools/health-server.js --port 8099\n"
    )
    return host


def test_linux_check_plan_and_apply_with_systemd_units(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    host = _linux_host(tmp_path)
    env = fake_env(fleet_env, install_fakes(tmp_path / "bin"), tmp_path / "fakes", [])
    args = host.args("cutover", "check", "--json", platform="linux")
    res = run_fleet(args, env, tmp_path)
    assert res.returncode == 1, res.stderr
    report = json.loads(res.stdout)
    legacy = sorted(c["subject"].split(" ")[0] for c in report["conflicts"])
    legacy = [s for s in legacy if s.endswith((".service", ".timer"))]
    assert legacy == [
        "email-reactor-digest.timer",
        "health.service",  # by the script in ExecStart=
        "inbox-watcher.service",
        "litestream.service",  # a system unit
    ]
    assert str(host.agents) not in res.stdout  # plists are not this platform's
    # ops-watchdog.json's legacy entries point at the fleet's units here
    watchdog = [c["fix"] for c in report["conflicts"] if c["kind"] == "ops-watchdog"]
    assert any("alai-fleet-email-reactor.service" in fix for fix in watchdog)

    plan = run_fleet(host.args("cutover", "plan", platform="linux"), env, tmp_path)
    assert plan.returncode == 0, plan.stderr
    out = plan.stdout
    assert "do:       systemctl --user disable --now inbox-watcher.service" in out
    assert "do:       systemctl disable --now litestream.service" in out
    assert "rollback: systemctl --user enable --now inbox-watcher.service" in out
    unit_dir = host.home / ".config" / "systemd" / "user"
    assert f"fleet units install --target systemd --mode user --dest {unit_dir}" in out
    assert "launchctl" not in out

    res = run_fleet(host.args("cutover", "apply", "--yes", platform="linux"), env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    calls = logged_calls(env)
    assert ["systemctl", "--user", "disable", "--now", "inbox-watcher.service"] in calls
    assert ["systemctl", "--user", "disable", "--now", "email-reactor-digest.timer"] in calls
    assert ["systemctl", "disable", "--now", "litestream.service"] in calls
    assert ["systemctl", "daemon-reload"] in calls
    enable = [c for c in calls if c[:4] == ["systemctl", "--user", "enable", "--now"]]
    assert enable and "alai-fleet-litestream-p0-critical.service" in enable[0]
    for name in ("inbox-watcher.service", "health.service"):
        assert not (unit_dir / name).exists()
        assert (unit_dir / "disabled-by-fleet" / name).exists()
    assert (host.home / "etc-systemd-system" / "disabled-by-fleet" / "litestream.service").exists()
    assert (unit_dir / "unrelated.service").exists()
    companion = (unit_dir / "alai-fleet-litestream-p0-critical.service").read_text()
    assert f"EnvironmentFile={host.env_file}\n" in companion
    # the secrets came from the systemd twin's Environment= (no plist is read on Linux)
    assert f"LITESTREAM_AZURE_ACCOUNT={AZURE_ACCOUNT}\n" in host.env_file.read_text()
    assert (host.env_file.stat().st_mode & 0o777) == 0o600

    again = run_fleet(host.args("cutover", "apply", "--yes", platform="linux"), env, tmp_path)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    res = run_fleet(args, env, tmp_path)
    assert res.returncode == 0, res.stdout


def test_the_standby_retires_the_restore_loop_not_the_inbox_watcher(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    host = build_legacy_host(tmp_path, 0, role="standby")
    env = {**fleet_env, "FLEET_FLEET__ROLE": "standby"}
    res = run_fleet(host.args("cutover", "check", "--json"), env, tmp_path)
    report = json.loads(res.stdout)
    legacy = [c["subject"].split(" ")[0] for c in report["conflicts"] if c["kind"] == "legacy-job"]
    # the restore shell loop goes; health and ollama monitors go on both hosts
    assert sorted(legacy) == [
        "com.alai.litestream-restore",
        "com.example.health",
        "com.example.ollama-monitor",
    ]
    notes = "\n".join(report["notes"])
    for kept in ("no.alai.inbox-watcher", "com.john.email-reactor-digest", "com.alai.litestream"):
        assert f"{kept} (" in notes
    # restore-loop's restore config is generated from the tier table; no replicate config here
    configs = [c["subject"] for c in report["conflicts"] if c["kind"] == "litestream-config"]
    assert configs == [str(host.root / "config" / "litestream-restore.yml")]
    secrets = [c for c in report["conflicts"] if c["kind"] == "secrets-file"]
    # restore-loop and the standby's monthly `fleet dr drill` job both read the replicas
    assert "restore-loop, dr-drill need" in secrets[0]["problem"]
    plan = run_fleet(host.args("cutover", "plan"), env, tmp_path).stdout
    assert "fleet litestream config --role standby" in plan
    assert (
        f"launchctl bootout gui/{os.getuid()} {host.plist('com.alai.litestream-restore')}" in plan
    )
    assert "inbox-watcher" not in plan.split("then verify")[0]


def test_the_anvil_plan_in_the_docs_is_what_plan_prints(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """docs/cutover.md pastes a real run on this fixture (its prefix cut from the paths)."""
    base = tmp_path / "anvil"
    home = base / "Users" / "alai"
    host = build_legacy_host(
        base,
        0,
        home=home,
        root=home / "system",
        fleet='install_prefix = "/opt/alai-fleet/venv"\nhost = "anvil"',
    )
    host.config.write_text(host.config.read_text().replace('host = "testhost"\n', ""))
    env = {k: v for k, v in fleet_env.items() if not k.startswith("FLEET_FLEET__")}
    env["HOME"] = str(home)
    res = run_fleet(
        ["cutover", "plan", "--config", str(host.config), "--platform", "darwin"], env, base
    )
    assert res.returncode == 0, res.stderr
    printed = res.stdout.replace(str(base), "").replace(f"gui/{os.getuid()}", "gui/0")

    def steps(text: str) -> list[str]:
        lines = text.split("then verify")[0].splitlines()
        return [line for line in lines if re.match(r"^ ?\d+\. |^ +(do|rollback): ", line)]

    doc = (Path(__file__).resolve().parents[2] / "docs" / "cutover.md").read_text()
    block = doc.split("$ fleet cutover plan --config fleet.toml --platform darwin\n")[1]
    assert block.startswith("cutover plan: host anvil")
    assert len(steps(printed)) > 30
    assert steps(block) == steps(printed)

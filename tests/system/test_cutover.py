"""`fleet cutover check | plan | apply` on a legacy macOS host built from the seed (see
tests/cutover_support.py): every conflict found and named with its fix, a plan whose every step
has a rollback, and an apply (through fake launchctl executables first on PATH) that refuses
while a foreign process holds the heartbeat's port, then clears everything else, is a no-op the
second time, writes one audit line per step, and stops at a failing step with the rollback."""

from __future__ import annotations

import json
import os
import plistlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.units import LaunchDaemonPlist
from tests.conftest import run_fleet
from tests.cutover_support import (
    AZURE_KEY,
    LegacyHost,
    build_legacy_host,
    fake_env,
    install_fakes,
    logged_calls,
)

pytestmark = pytest.mark.system

LEGACY_LABELS = [
    "no.alai.inbox-watcher",
    "com.john.email-reactor-digest",
    "com.alai.litestream",
    "com.example.health",  # health-server.js, by its script
    "com.example.ollama-monitor",  # ollama-health-monitor.js inside `sh -c`
]
LOADED = ["no.alai.inbox-watcher", "com.alai.litestream", "com.example.health"]


class HeldPort:
    """A real listener on 127.0.0.1:port, as health-server.js would hold :8099."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])

    def release(self) -> None:
        self.sock.close()


@pytest.fixture
def held() -> Iterator[HeldPort]:
    port = HeldPort()
    yield port
    port.release()


@pytest.fixture
def host(tmp_path: Path, held: HeldPort, fleet_root: Path) -> LegacyHost:
    built = build_legacy_host(tmp_path, held.port)
    assert built.root == fleet_root  # the fleet_env's FLEET_FLEET__ROOT is the same
    return built


@pytest.fixture
def env(fleet_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return fake_env(fleet_env, install_fakes(tmp_path / "bin"), tmp_path / "fakes", LOADED)


def check_json(host: LegacyHost, env: dict[str, str], cwd: Path) -> tuple[int, dict]:  # type: ignore[type-arg]
    res = run_fleet(host.args("cutover", "check", "--json"), env, cwd)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def subjects(report: dict, kind: str) -> list[str]:  # type: ignore[type-arg]
    return [c["subject"] for c in report["conflicts"] if c["kind"] == kind]


def test_check_lists_every_conflict_with_its_fix(
    host: LegacyHost, held: HeldPort, env: dict[str, str], tmp_path: Path
) -> None:
    code, report = check_json(host, env, tmp_path)
    assert code == 1 and report["clean"] is False
    assert (report["role"], report["platform"]) == ("primary", "darwin")
    legacy = subjects(report, "legacy-job")
    assert sorted(s.split(" ")[0] for s in legacy) == sorted(LEGACY_LABELS)
    assert f"127.0.0.1:{held.port}" in subjects(report, "port")
    (port,) = [c for c in report["conflicts"] if c["kind"] == "port"]
    assert "heartbeat.health_port" in port["problem"] and port["apply_fixes"] is False
    assert "com.example.health" in port["fix"]  # the likely holder and how to stop it
    watchdog = [c["problem"] for c in report["conflicts"] if c["kind"] == "ops-watchdog"]
    assert any("no.alai.inbox-watcher" in p for p in watchdog)
    assert any("com.alai.litestream" in p for p in watchdog)
    configs = subjects(report, "litestream-config")
    assert str(host.system_config / "litestream.yml") in configs  # lint: 2 replicas
    assert str(host.root / "config" / "litestream-p0-critical.yml") in configs  # not generated
    (old,) = [c for c in report["conflicts"] if c["subject"].endswith("config/litestream.yml")]
    assert "exactly one per DB" in old["problem"]
    secrets = [c for c in report["conflicts"] if c["kind"] == "secrets-file"]
    assert [c["subject"] for c in secrets] == [str(host.env_file)]
    assert "LITESTREAM_AZURE_ACCOUNT_KEY" in secrets[0]["problem"]
    assert "com.alai.litestream.plist" in secrets[0]["fix"]
    assert subjects(report, "slack-token") == [str(host.token_file)]
    assert all(c["fix"] for c in report["conflicts"])
    notes = "\n".join(report["notes"])
    assert "com.alai.litestream-restore" in notes and "does not run restore-loop" in notes
    assert "com.example.broken.plist" in notes  # malformed: a finding, not a crash
    assert "unrelated" not in json.dumps(report)
    assert AZURE_KEY not in json.dumps(report)
    text = run_fleet(host.args("cutover", "check"), env, tmp_path)
    assert text.returncode == 1
    assert text.stdout.count("CONFLICT ") == len(report["conflicts"])
    assert text.stdout.count("    fix: ") == len(report["conflicts"])


def test_plan_prints_each_step_with_its_rollback(
    host: LegacyHost, env: dict[str, str], tmp_path: Path
) -> None:
    res = run_fleet(host.args("cutover", "plan"), env, tmp_path)
    assert res.returncode == 0, res.stderr
    numbered: list[list[str]] = []
    for line in res.stdout.splitlines():
        if re.match(r"^ ?\d+\. ", line):
            numbered.append([line])
        elif numbered and line.startswith("      "):
            numbered[-1].append(line)
    assert [int(step[0].split(".")[0]) for step in numbered] == list(range(1, 13))
    for step in numbered:
        assert any("do: " in line for line in step), step
        assert any("rollback: " in line for line in step), step
    out = res.stdout
    uid = os.getuid()
    order = [
        "mode 0600",  # the secrets file first
        "fleet litestream config --role primary",
        "fleet units install --target launchd",
        f"launchctl bootout gui/{uid} {host.plist('com.alai.litestream')}",
        f"launchctl bootout gui/{uid} {host.plist('no.alai.inbox-watcher')}",
        "critical_services: no.alai.inbox-watcher -> no.alai.fleet.email-reactor",
        f"--config {host.config} --now",  # the fleet starts last
    ]
    positions = [out.index(marker) for marker in order]
    assert positions == sorted(positions), out
    assert f"launchctl bootstrap gui/{uid} {host.plist('no.alai.inbox-watcher')}" in out
    assert "rollback: cp -p " in out and "ops-watchdog.json.pre-cutover" in out
    assert "fleet units uninstall --now --target launchd" in out
    assert "then verify, once every daemon has run a cycle: fleet status" in out
    assert "apply refuses to start while these remain" in out and str(host.port) in out
    assert AZURE_KEY not in out


def test_apply_refuses_while_the_port_is_held_then_switches_the_host(
    host: LegacyHost, held: HeldPort, env: dict[str, str], tmp_path: Path
) -> None:
    refused = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert refused.returncode == 1
    assert f"127.0.0.1:{host.port}" in refused.stderr and "heartbeat" in refused.stderr
    assert logged_calls(env) == [] and not host.env_file.exists()
    assert host.plist("no.alai.inbox-watcher").exists()

    held.release()
    res = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "switched: " in res.stdout
    uid = os.getuid()
    calls = logged_calls(env)
    bootouts = [c for c in calls if c[:2] == ["launchctl", "bootout"]]
    assert bootouts == [
        ["launchctl", "bootout", f"gui/{uid}", str(host.plist(label))]
        for label in ("com.alai.litestream", "com.example.health", "no.alai.inbox-watcher")
    ]  # the loaded ones; the others were asked about and moved aside
    for label in LEGACY_LABELS:
        assert ["launchctl", "print", f"gui/{uid}/{label}"] in calls
        assert not host.plist(label).exists()
        assert (host.agents / "disabled-by-fleet" / f"{label}.plist").exists()
    bootstraps = {c[3] for c in calls if c[:2] == ["launchctl", "bootstrap"]}
    assert str(host.plist("no.alai.fleet.email-reactor")) in bootstraps
    assert str(host.plist("no.alai.fleet.litestream-p0-critical")) in bootstraps
    assert host.plist("com.alai.litestream-restore").exists()  # not this host's to retire
    assert (host.env_file.stat().st_mode & 0o777) == 0o600
    env_text = host.env_file.read_text()
    assert "LITESTREAM_AZURE_ACCOUNT=" in env_text and AZURE_KEY in env_text
    assert AZURE_KEY not in res.stdout + res.stderr
    assert (host.token_file.stat().st_mode & 0o777) == 0o600
    assert (host.root / "config" / "litestream-p0-critical.yml").exists()
    watchdog = json.loads((host.system_config / "ops-watchdog.json").read_text())
    assert watchdog["critical_services"] == [
        "no.alai.fleet.email-reactor",
        {"label": "no.alai.fleet.litestream-p0-critical", "restart": True},
        "no.alai.mehanik",
    ]
    backup = json.loads((host.system_config / "ops-watchdog.json.pre-cutover").read_text())
    assert backup["critical_services"][0] == "no.alai.inbox-watcher"
    assert not (host.system_config / "litestream.yml").exists()

    audit = host.root / "state" / "cutover" / "audit.jsonl"
    assert f"audit: {audit}" in res.stdout
    assert (audit.stat().st_mode & 0o777) == 0o600
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    steps_done = int(res.stdout.split("switched: ")[1].split(" ")[0])
    assert len(lines) == steps_done >= 12
    assert {line["outcome"] for line in lines} == {"done"}
    assert len({line["step"] for line in lines}) == len(lines)
    assert AZURE_KEY not in audit.read_text()

    again = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: every step is already done" in again.stdout
    assert len(audit.read_text().splitlines()) == len(lines)
    new_calls = logged_calls(env)[len(calls) :]
    assert all(c[1] == "print" for c in new_calls), new_calls  # only asked, changed nothing

    code, report = check_json(host, env, tmp_path)
    assert code == 0 and report["clean"] is True, report["conflicts"]


def test_apply_stops_at_a_failing_step_and_prints_the_rollback(
    host: LegacyHost, held: HeldPort, env: dict[str, str], tmp_path: Path
) -> None:
    held.release()
    failing = {**env, "FAKE_FAIL": f"bootout gui/{os.getuid()} {host.plist('com.example.health')}"}
    res = run_fleet(host.args("cutover", "apply", "--yes"), failing, tmp_path)
    assert res.returncode == 1
    assert "FAILED at step " in res.stderr and "com.example.health" in res.stderr
    assert "injected failure" in res.stderr
    undo = res.stderr.split("to roll back the steps done in this run (newest first):\n")[1]
    undo_lines = [line.strip() for line in undo.splitlines() if line.startswith("  ")]
    # newest first: the litestream agent stopped just before comes back first
    assert undo_lines[0].startswith("mv ") and "com.alai.litestream.plist" in undo_lines[0]
    assert undo_lines[1] == f"launchctl bootstrap gui/{os.getuid()} " + str(
        host.plist("com.alai.litestream")
    )
    assert any(line.startswith("fleet units uninstall --now") for line in undo_lines)
    assert undo_lines[-1] == f"rm {host.env_file}"
    assert host.plist("com.example.health").exists()  # the failing step left it in place
    assert host.plist("no.alai.inbox-watcher").exists()  # later steps never ran
    audit = host.root / "state" / "cutover" / "audit.jsonl"
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert lines[-1]["outcome"] == "failed" and "com.example.health" in lines[-1]["step"]
    assert all(line["outcome"] == "done" for line in lines[:-1])

    code, report = check_json(host, env, tmp_path)
    assert code == 1 and "com.example.health" in " ".join(subjects(report, "legacy-job"))
    res = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "already done" in res.stdout
    code, report = check_json(host, env, tmp_path)
    assert code == 0, report["conflicts"]


def test_the_port_of_a_disabled_daemon_is_not_a_conflict(
    tmp_path: Path, env: dict[str, str], held: HeldPort
) -> None:
    host = build_legacy_host(tmp_path / "h", held.port)
    text = host.config.read_text().replace(
        "[heartbeat]\nenabled = true", "[heartbeat]\nenabled = false"
    )
    host.config.write_text(text)
    _code, report = check_json(host, env, tmp_path)
    assert subjects(report, "port") == []
    # health-server.js is not replaced either: left alone, noted
    assert "com.example.health" not in " ".join(subjects(report, "legacy-job"))
    assert "health-server" in "\n".join(report["notes"])


def test_a_second_apply_after_a_config_change_reloads_the_rewritten_agents(
    host: LegacyHost, held: HeldPort, env: dict[str, str], tmp_path: Path
) -> None:
    held.release()
    assert run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path).returncode == 0
    before = len(logged_calls(env))
    text = host.config.read_text()
    host.config.write_text(text.replace("[fleet]\n", "[fleet]\nstop_grace_s = 20\n", 1))
    res = run_fleet(host.args("cutover", "apply", "--yes"), env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "switched: 2 step(s) done" in res.stdout  # rewrite the plists, reload them
    calls = logged_calls(env)[before:]
    uid = os.getuid()
    label = "no.alai.fleet.email-reactor"
    bootout = calls.index(["launchctl", "bootout", f"gui/{uid}/{label}"])
    bootstrap = calls.index(["launchctl", "bootstrap", f"gui/{uid}", str(host.plist(label))])
    assert bootout < bootstrap
    assert b"<integer>35</integer>" in host.plist(label).read_bytes()  # ExitTimeOut: 20 + 15


def test_apply_in_the_system_domain_installs_launchdaemons(
    tmp_path: Path, held: HeldPort, fleet_env: dict[str, str]
) -> None:
    """`--mode system` (launchd's `--domain system`, run as root): the fleet's plists go where
    LaunchDaemons live and are bootstrapped into `system`, to run as the service account from
    boot; the legacy agents still leave the gui domain of the home's owner."""
    held.release()
    host = build_legacy_host(tmp_path, held.port, fleet='service_user = "nobody"')
    os.chown(host.home, 65534, 65534)  # the operator's home: its agents are in gui/65534
    env = fake_env(fleet_env, install_fakes(tmp_path / "bin"), tmp_path / "fakes", LOADED)
    plan = run_fleet(host.args("cutover", "plan", mode="system"), env, tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert f"--mode system --dest {host.launch_daemons}" in plan.stdout
    assert "--user nobody" in plan.stdout
    res = run_fleet(host.args("cutover", "apply", "--yes", mode="system"), env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    calls = logged_calls(env)
    bootouts = [c for c in calls if c[:2] == ["launchctl", "bootout"] and c[2].startswith("gui/")]
    assert bootouts == [
        ["launchctl", "bootout", "gui/65534", str(host.plist(label))]
        for label in ("com.alai.litestream", "com.example.health", "no.alai.inbox-watcher")
    ]
    bootstraps = [c for c in calls if c[:2] == ["launchctl", "bootstrap"]]
    plist = host.launch_daemons / "no.alai.fleet.email-reactor.plist"
    assert ["launchctl", "bootstrap", "system", str(plist)] in bootstraps
    assert {c[2] for c in bootstraps} == {"system"}, bootstraps
    installed = sorted(host.launch_daemons.glob("no.alai.fleet.*.plist"))
    assert plist in installed
    for path in installed:
        job = LaunchDaemonPlist.model_validate(plistlib.loads(path.read_bytes()))
        assert (job.UserName, job.GroupName) == ("nobody", "nogroup")
    assert not list(host.agents.glob("no.alai.fleet.*")), "no LaunchAgents for the fleet"
    again = run_fleet(host.args("cutover", "apply", "--yes", mode="system"), env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do: every step is already done" in again.stdout

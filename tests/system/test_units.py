"""Unit generation: what each generated systemd unit says, checked against the config it came
from and the daemon's manifest, `systemd-analyze verify` (stderr must be empty) and
`systemd-analyze security` (exposure <= 1.3), and the committed units/ and launchagents/
regenerated and diffed. The daemons enabled here come from configs the tests write, never from
assumptions about which daemons are finished. LaunchAgents: test_units_launchd.py; install and
uninstall: test_units_install.py."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from daemons.claim_sweeper.config import ClaimSweeperSection
from daemons.claim_sweeper.manifest import MANIFEST as CLAIM_SWEEPER
from fleet.examples import unit_examples
from fleet.registry import manifests
from shared.config import FleetConfig
from shared.manifest import CompanionService, UnitProfile
from shared.roles import Role
from shared.units import (
    GENERATED_MARKER,
    LaunchAgentPlist,
    ServiceTimings,
    generate,
    service_specs,
)
from tests.conftest import run_fleet
from tests.units_support import (
    REPO,
    VENV,
    directives,
    exposure,
    gen,
    layout,
    load,
    one,
    runnable,
    verify,
    write_all,
    write_config,
)


@pytest.mark.parametrize("enable", ["claim_sweeper", "all"])
def test_one_unit_and_plist_per_enabled_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enable: str
) -> None:
    config = load(
        write_config(tmp_path / "fleet.toml", tmp_path / "root", enable=enable), monkeypatch
    )
    expected = runnable(config, Role.PRIMARY)
    units = gen(config, "systemd", layout()).files
    plists = gen(config, "launchd", layout("user")).files
    assert set(units) == {f"alai-fleet-{n}.service" for n in expected}
    assert set(plists) == {f"no.alai.fleet.{n}.plist" for n in expected}
    disabled = {m.name for m in manifests()} - {s.replace("_", "-") for s in enable.split()}
    if enable != "all":
        assert not any(n in name for n in disabled for name in units)


def test_disabled_or_refusing_daemons_get_no_unit_and_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(
        tmp_path / "fleet.toml",
        tmp_path / "root",
        "[claim_sweeper]\nauto_release = true\n",
        fleet='role = "standby"',
    )
    config = load(cfg, monkeypatch)
    generated = gen(config, "systemd", layout())
    assert "alai-fleet-claim-sweeper.service" not in generated.files
    reasons = dict(generated.skipped)
    assert "refuses role standby" in reasons["claim-sweeper"]
    assert "auto_release" in reasons["claim-sweeper"]
    assert reasons["email-reactor"] == "[email_reactor] enabled = false"


def test_system_unit_directives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    token = tmp_path / "secrets" / "slack-token"
    token.parent.mkdir()
    token.write_text("xoxb-NEVER-IN-A-UNIT")
    token.chmod(0o600)
    cfg = write_config(
        tmp_path / "fleet.toml",
        root,
        f'[slack]\ntoken_file = "{token}"\n',
        fleet="stop_grace_s = 20.0",
    )
    config = load(cfg, monkeypatch)
    text = (
        gen(config, "systemd", layout("system", cfg))
        .files["alai-fleet-claim-sweeper.service"]
        .decode()
    )
    assert "xoxb-NEVER-IN-A-UNIT" not in text
    assert text.startswith(f"# {GENERATED_MARKER}")
    d = directives(text)
    assert one(d, "Service.Type") == "notify"
    assert one(d, "Service.NotifyAccess") == "main"
    assert one(d, "Service.WatchdogSec") == f"{ServiceTimings().watchdog_s}s"
    assert one(d, "Service.ExecStart") == (f"{VENV}/bin/fleet run claim-sweeper --config {cfg}")
    # systemctl reload: SIGHUP, which the daemon answers by reloading its config in process
    assert one(d, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(d, "Service.User") == "alai"
    assert one(d, "Service.Restart") == "on-failure"
    assert one(d, "Service.RestartPreventExitStatus") == "78"
    assert int(one(d, "Unit.StartLimitBurst")) >= 1
    assert one(d, "Unit.StartLimitIntervalSec").endswith("s")
    timeout = int(one(d, "Service.TimeoutStopSec").rstrip("s"))
    assert timeout > config.fleet.stop_grace_s == 20.0
    assert one(d, "Service.UMask") == "0077"
    # exactly the dirs it writes: its profile's plus state/ and logs/, each optional
    profile = CLAIM_SWEEPER.unit_profile(config, config.section(ClaimSweeperSection))
    want = {f"-{p}" for p in (*profile.write_paths, root / "state", root / "logs")}
    assert set(one(d, "Service.ReadWritePaths").split()) == want
    assert one(d, "Service.TasksMax") == str(profile.tasks_max)
    assert one(d, "Service.MemoryMax") == f"{profile.memory_max_mb}M"
    # fleet.env for every daemon, then the one only this daemon loads
    assert d["Service.EnvironmentFile"] == [
        "-/etc/alai-fleet/fleet.env",
        "-/etc/alai-fleet/fleet-claim-sweeper.env",
    ]
    # the secret file reaches the daemon through systemd's credentials, not the unit
    assert one(d, "Service.LoadCredential") == f"slack.token:{token}"
    assert "FLEET_SLACK__TOKEN_FILE=%d/slack.token" in d["Service.Environment"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
    }.items():
        assert one(d, f"Service.{key}") == value
    assert "@system-service" in d["Service.SystemCallFilter"]
    # root and the token file live under /tmp here: a private /tmp would hide them
    assert "Service.PrivateTmp" not in d
    assert one(d, "Install.WantedBy") == "multi-user.target"


def test_private_tmp_only_when_nothing_configured_lives_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path / "fleet.toml", Path("/srv/alai-fleet"))
    config = load(cfg, monkeypatch)
    d = directives(
        gen(config, "systemd", layout()).files["alai-fleet-claim-sweeper.service"].decode()
    )
    assert one(d, "Service.PrivateTmp") == "yes"
    from_tmp = gen(config, "systemd", layout("system", Path("/tmp/trial/fleet.toml")))
    assert "PrivateTmp" not in from_tmp.files["alai-fleet-claim-sweeper.service"].decode()
    cfg2 = write_config(
        tmp_path / "fleet2.toml",
        Path("/srv/alai-fleet"),
        '[mission_control]\ndb = "/tmp/shared/mission-control.db"\n',
    )
    d2 = directives(
        gen(load(cfg2, monkeypatch), "systemd", layout())
        .files["alai-fleet-claim-sweeper.service"]
        .decode()
    )
    assert "Service.PrivateTmp" not in d2
    assert "-/tmp/shared" in one(d2, "Service.ReadWritePaths").split()


def test_user_mode_and_install_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(
        tmp_path / "fleet.toml", Path("/srv/alai-fleet"), fleet='install_prefix = "/opt/other-venv"'
    )
    config = load(cfg, monkeypatch)
    from fleet.install import install_layout

    lay = install_layout(config, str(cfg), "user", None, None)
    assert lay.prefix == Path("/opt/other-venv") and lay.user is None
    d = directives(gen(config, "systemd", lay).files["alai-fleet-claim-sweeper.service"].decode())
    assert one(d, "Service.ExecStart").startswith("/opt/other-venv/bin/fleet run claim-sweeper")
    assert "Service.User" not in d
    assert one(d, "Install.WantedBy") == "default.target"
    assert d["Service.EnvironmentFile"] == [
        f"-{Path.home()}/.config/alai-fleet/fleet.env",
        f"-{Path.home()}/.config/alai-fleet/fleet-claim-sweeper.env",
    ]
    # without a config file the unit leaves the lookup to the daemon
    bare = install_layout(config, None, "system", None, "svc")
    monkeypatch.chdir(tmp_path)
    assert bare.user == "svc"
    assert bare.group is None  # no such account here: a LaunchDaemon would need --group
    assert install_layout(config, None, "system", None, "nobody").group == "nogroup"


def test_paths_with_spaces_and_percent_survive_systemd_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path("/srv/alai fleet/100%")
    cfg_dir = tmp_path / "conf dir"
    cfg_dir.mkdir()
    cfg = write_config(cfg_dir / "fleet.toml", root)
    config = load(cfg, monkeypatch)
    files = gen(config, "systemd", layout("system", cfg)).files
    text = files["alai-fleet-claim-sweeper.service"].decode()
    d = directives(text)
    assert f'--config "{cfg!s}"' in one(d, "Service.ExecStart")
    assert '"-/srv/alai fleet/100%%/state"' in one(d, "Service.ReadWritePaths")
    verify(write_all(files, tmp_path / "out"))


def test_companion_services_get_a_plain_unit_and_an_env_file_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest asking for a companion process, as restore-loop's does for litestream."""
    asked: list[Path] = []

    def companions(config: FleetConfig, prefix: Path) -> list[CompanionService]:
        asked.append(prefix)
        if config.fleet.role != "primary":
            return []
        return [
            CompanionService(
                name="litestream-p0",
                description="litestream replicate (P0 retention)",
                argv=(
                    str(prefix / "bin" / "litestream"),
                    "replicate",
                    "-config",
                    str(config.fleet.root / "config" / "litestream-p0.yml"),
                ),
                profile=UnitProfile(write_paths=(config.fleet.root / "databases",), tasks_max=16),
                environment_file=Path("/etc/alai-fleet/litestream.env"),
            )
        ]

    daemons = [dataclasses.replace(CLAIM_SWEEPER, companions=companions)]
    root = Path("/srv/alai-fleet")
    config = load(write_config(tmp_path / "fleet.toml", root, enable=""), monkeypatch)
    # the daemon itself is disabled, its companion is still asked for
    generated = generate(config, daemons, "systemd", layout())
    assert asked == [VENV]
    assert set(generated.files) == {"alai-fleet-litestream-p0.service"}
    d = directives(generated.files["alai-fleet-litestream-p0.service"].decode())
    assert one(d, "Service.Type") == "exec"
    assert "Service.WatchdogSec" not in d and "Service.NotifyAccess" not in d
    assert one(d, "Service.ExecStart") == (
        f"{VENV}/bin/litestream replicate -config {root}/config/litestream-p0.yml"
    )
    # a secrets file the service cannot run without: required (no "-"), so a missing one
    # fails the start with systemd's own message
    assert one(d, "Service.EnvironmentFile") == "/etc/alai-fleet/litestream.env"
    assert one(d, "Service.TasksMax") == "16"
    assert one(d, "Service.RestartPreventExitStatus") == "78"
    plist = plistlib.loads(
        generate(config, daemons, "launchd", layout("user")).files[
            "no.alai.fleet.litestream-p0.plist"
        ]
    )
    LaunchAgentPlist.model_validate(plist)
    args = plist["ProgramArguments"]
    litestream = [
        f"{VENV}/bin/litestream",
        "replicate",
        "-config",
        f"{root}/config/litestream-p0.yml",
    ]
    assert args == [
        f"{VENV}/bin/fleet",
        "units",
        "launchd-exec",
        "--name",
        "litestream-p0",
        "--env-file",
        "/etc/alai-fleet/litestream.env",
        "--",
        *litestream,
    ]
    # the loader really checks the file, exports its variables and execs the program
    env_file = tmp_path / "lite.env"
    env_file.write_text("AZURE_CLIENT_SECRET=s3cr3t\n")
    env_file.chmod(0o600)
    show = ["/bin/sh", "-c", 'echo "$AZURE_CLIENT_SECRET"']
    out = subprocess.run(
        [*args[:6], str(env_file), "--", *show], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "s3cr3t", out.stderr
    verify(write_all(generated.files, tmp_path / "out"))


def test_duplicate_service_names_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def clash(_config: FleetConfig, _prefix: Path) -> list[CompanionService]:
        return [CompanionService("claim-sweeper", "clash", ("/bin/true",))]

    daemons = [dataclasses.replace(CLAIM_SWEEPER, companions=clash)]
    config = load(write_config(tmp_path / "fleet.toml", tmp_path / "root"), monkeypatch)
    with pytest.raises(ValueError, match="share the name"):
        service_specs(config, daemons, layout())


# systemd-analyze -----------------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.parametrize("mode", ["system", "user"])
def test_every_unit_verifies_clean_and_system_units_score_at_most_1_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Both roles, with the config file in /tmp (a trial: no PrivateTmp) too; the hosts'
    layouts are in test_units_hardening.py."""
    for role in ("primary", "standby"):
        cfg = write_config(
            tmp_path / f"{role}.toml",
            Path("/srv/alai-fleet"),
            enable="all",
            fleet=f'role = "{role}"',
        )
        config = load(cfg, monkeypatch)
        files = gen(config, "systemd", layout(mode, cfg)).files
        assert files
        paths = write_all(files, tmp_path / role / mode)
        verify(paths)
        if mode == "system":
            for path in paths:
                if path.suffix == ".service":  # a .timer runs nothing itself
                    assert exposure(path) <= 1.3, (role, path.name)


@pytest.mark.system
def test_committed_examples_verify_and_score(tmp_path: Path) -> None:
    """The committed example units, with the example venv swapped for this one (verify checks
    that ExecStart's program exists)."""
    rendered = {
        rel.removeprefix("units/"): data
        for rel, data in unit_examples(REPO / "config" / "fleet.example.toml").items()
        if rel.startswith("units/")
    }
    assert rendered
    paths = write_all(
        {n: d.replace(b"/opt/alai-fleet/current", str(VENV).encode()) for n, d in rendered.items()},
        tmp_path,
    )
    verify(paths)
    for path in paths:
        assert exposure(path) <= 1.3, path.name


@pytest.mark.system
def test_committed_units_and_plists_match_the_example_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_FLEET__ROOT"] = "/somewhere/else"  # must not leak into the example files
    res = run_fleet(["units", "example", "--check"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr + "\nregenerate with: fleet units example"
    # --check notices drift; a plain run repairs it and removes files no longer generated
    repo = tmp_path / "repo"
    for sub in ("config", "units", "launchagents", "launchdaemons"):
        shutil.copytree(REPO / sub, repo / sub)
    victim = next((repo / "units").glob("alai-fleet-*.service"))
    victim.write_text(victim.read_text().replace("WatchdogSec=", "WatchdogSec=9"))
    stale = repo / "launchagents" / "no.alai.fleet.retired.plist"
    stale.write_bytes(next((repo / "launchagents").glob("no.alai.fleet.*.plist")).read_bytes())
    (repo / "units" / "alai-fleet-hand-written.service").write_text("[Service]\n")
    res = run_fleet(["units", "example", "--check", "--repo", str(repo)], env, tmp_path)
    assert res.returncode == 1
    assert f"units/{victim.name}: differs" in res.stdout
    assert "launchagents/no.alai.fleet.retired.plist: no longer generated" in res.stdout
    assert "hand-written" not in res.stdout
    assert "regenerate with: fleet units example" in res.stderr
    assert victim.read_bytes() != (REPO / "units" / victim.name).read_bytes(), "--check wrote"
    res = run_fleet(["units", "example", "--repo", str(repo)], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == (REPO / "units" / victim.name).read_bytes()
    assert not stale.exists()
    assert (repo / "units" / "alai-fleet-hand-written.service").exists()
    assert (repo / "units" / "README.md").exists()
    again = run_fleet(["units", "example", "--check", "--repo", str(repo)], env, tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout


def test_readmes_name_the_regeneration_command() -> None:
    for sub in ("units", "launchagents", "launchdaemons"):
        assert "fleet units example" in (REPO / sub / "README.md").read_text()

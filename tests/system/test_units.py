"""Unit and plist generation: what each generated systemd unit and LaunchAgent says, checked
against the config it came from, `systemd-analyze verify` (stderr must be empty) and
`systemd-analyze security` (exposure <= 2.5), a typed model of the launchd keys, and the
committed units/ and launchagents/ regenerated and diffed. The daemons enabled here come from
configs the tests write, never from assumptions about which daemons are finished."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from daemons import REGISTRY, DaemonSpec
from daemons.claim_sweeper.daemon import ClaimSweeper
from shared.config import FleetConfig, load_config
from shared.runtime import UnitProfile
from shared.units import (
    GENERATED_MARKER,
    CompanionService,
    InstallLayout,
    LaunchAgentPlist,
    ServiceTimings,
    generate,
    render_examples,
    service_specs,
    stop_timeout_s,
)
from tests.conftest import FLEET_BIN, NotifySocket, run_fleet

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


# helpers -------------------------------------------------------------------------------------
def write_config(
    path: Path, root: Path, body: str = "", enable: str = "claim_sweeper", fleet: str = ""
) -> Path:
    """A config enabling exactly the sections in ``enable`` ("all" for every daemon); ``fleet``
    adds lines to [fleet], ``body`` adds tables (daemon tables are merged)."""
    wanted = set(REGISTRY) if enable == "all" else {s.replace("_", "-") for s in enable.split()}
    lines = [f'[fleet]\nroot = "{root}"\nhost = "testhost"\n{fleet}\n']
    tables = parse_toml_tables(body)
    for spec in REGISTRY.values():
        extra = tables.pop(spec.section, "")
        lines.append(
            f"[{spec.section}]\nenabled = {'true' if spec.name in wanted else 'false'}\n{extra}"
        )
    for name, text in tables.items():
        lines.append(f"[{name}]\n{text}")
    path.write_text("\n".join(lines))
    return path


def parse_toml_tables(body: str) -> dict[str, str]:
    """Split ``body`` into {table: its lines} so write_config can merge daemon tables."""
    tables: dict[str, str] = {}
    current = None
    for line in body.strip().splitlines():
        m = re.match(r"^\[([a-z_]+)\]$", line.strip())
        if m:
            current = m.group(1)
            tables.setdefault(current, "")
        elif current is not None:
            tables[current] += line + "\n"
    return tables


def load(path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetConfig:
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    return load_config(path)


def layout(
    mode: str = "system", config_file: Path | None = None, prefix: Path = VENV
) -> InstallLayout:
    return InstallLayout(
        mode=mode,  # type: ignore[arg-type]
        prefix=prefix,
        config_file=config_file,
        user="alai" if mode == "system" else None,
        home=Path("/home/alai"),
    )


def directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value (units repeat keys such as SystemCallFilter)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def runnable(config: FleetConfig, role: str) -> set[str]:
    """Daemons enabled in ``config`` whose class accepts ``role`` (asked, not assumed)."""
    names = set()
    for spec in REGISTRY.values():
        cls = getattr(__import__(spec.module, fromlist=[spec.class_name]), spec.class_name)
        section = config.daemon_section(spec.section)
        if section.enabled and cls.refuse_reason(section, role) is None:
            names.add(spec.name)
    return names


def verify(paths: list[Path]) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 0


def exposure(path: Path) -> float:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1))


def write_all(files: dict[str, bytes], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths


# generation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("enable", ["claim_sweeper", "all"])
def test_one_unit_and_plist_per_enabled_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enable: str
) -> None:
    config = load(
        write_config(tmp_path / "fleet.toml", tmp_path / "root", enable=enable), monkeypatch
    )
    expected = runnable(config, "primary")
    units = generate(config, "systemd", layout()).files
    plists = generate(config, "launchd", layout("user")).files
    assert set(units) == {f"alai-fleet-{n}.service" for n in expected}
    assert set(plists) == {f"no.alai.fleet.{n}.plist" for n in expected}
    disabled = set(REGISTRY) - {s.replace("_", "-") for s in enable.split()}
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
    gen = generate(config, "systemd", layout())
    assert "alai-fleet-claim-sweeper.service" not in gen.files
    reasons = dict(gen.skipped)
    assert "refuses role standby" in reasons["claim-sweeper"]
    assert "auto_release" in reasons["claim-sweeper"]


def test_system_unit_directives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    token = tmp_path / "secrets" / "slack-token"
    token.parent.mkdir()
    token.write_text("xoxb-NEVER-IN-A-UNIT")
    cfg = write_config(
        tmp_path / "fleet.toml",
        root,
        f'[slack]\ntoken_file = "{token}"\n',
        fleet="stop_grace_s = 20.0",
    )
    config = load(cfg, monkeypatch)
    text = (
        generate(config, "systemd", layout("system", cfg))
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
    assert one(d, "Service.User") == "alai"
    assert one(d, "Service.Restart") == "on-failure"
    assert one(d, "Service.RestartPreventExitStatus") == "78"
    assert int(one(d, "Unit.StartLimitBurst")) >= 1
    assert one(d, "Unit.StartLimitIntervalSec").endswith("s")
    timeout = int(one(d, "Service.TimeoutStopSec").rstrip("s"))
    assert timeout > config.fleet.stop_grace_s == 20.0
    assert one(d, "Service.UMask") == "0077"
    # exactly the dirs it writes: its profile's plus state/ and logs/, each optional
    profile = ClaimSweeper.unit_profile(config)
    want = {f"-{p}" for p in (*profile.write_paths, root / "state", root / "logs")}
    assert set(one(d, "Service.ReadWritePaths").split()) == want
    assert one(d, "Service.TasksMax") == str(profile.tasks_max)
    assert one(d, "Service.MemoryMax") == f"{profile.memory_max_mb}M"
    assert one(d, "Service.EnvironmentFile") == "-/etc/alai-fleet/fleet.env"
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
        generate(config, "systemd", layout()).files["alai-fleet-claim-sweeper.service"].decode()
    )
    assert one(d, "Service.PrivateTmp") == "yes"
    from_tmp = generate(config, "systemd", layout("system", Path("/tmp/trial/fleet.toml")))
    assert "PrivateTmp" not in from_tmp.files["alai-fleet-claim-sweeper.service"].decode()
    cfg2 = write_config(
        tmp_path / "fleet2.toml",
        Path("/srv/alai-fleet"),
        '[mission_control]\ndb = "/tmp/shared/mission-control.db"\n',
    )
    d2 = directives(
        generate(load(cfg2, monkeypatch), "systemd", layout())
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
    from shared.units_cli import _layout

    lay = _layout(config, str(cfg), "user", None, None)
    assert lay.prefix == Path("/opt/other-venv") and lay.user is None
    d = directives(
        generate(config, "systemd", lay).files["alai-fleet-claim-sweeper.service"].decode()
    )
    assert one(d, "Service.ExecStart").startswith("/opt/other-venv/bin/fleet run claim-sweeper")
    assert "Service.User" not in d
    assert one(d, "Install.WantedBy") == "default.target"
    assert one(d, "Service.EnvironmentFile") == f"-{Path.home()}/.config/alai-fleet/fleet.env"
    # without a config file the unit leaves the lookup to the daemon
    bare = _layout(config, None, "system", None, "svc")
    monkeypatch.chdir(tmp_path)
    assert bare.user == "svc"


def test_paths_with_spaces_and_percent_survive_systemd_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path("/srv/alai fleet/100%")
    cfg_dir = tmp_path / "conf dir"
    cfg_dir.mkdir()
    cfg = write_config(cfg_dir / "fleet.toml", root)
    config = load(cfg, monkeypatch)
    files = generate(config, "systemd", layout("system", cfg)).files
    text = files["alai-fleet-claim-sweeper.service"].decode()
    d = directives(text)
    assert f'--config "{cfg!s}"' in one(d, "Service.ExecStart")
    assert '"-/srv/alai fleet/100%%/state"' in one(d, "Service.ReadWritePaths")
    verify(write_all(files, tmp_path / "out"))


class CompanionSweeper(ClaimSweeper):
    """A daemon class asking for a companion process, as restore-loop does for litestream."""

    calls: ClassVar[list[Path]] = []

    @classmethod
    def companion_services(cls, config: FleetConfig, prefix: Path) -> list[CompanionService]:
        cls.calls.append(prefix)
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


def test_companion_services_get_a_plain_unit_and_an_env_file_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = {"claim-sweeper": DaemonSpec("claim-sweeper", __name__, "CompanionSweeper")}
    root = Path("/srv/alai-fleet")
    config = load(write_config(tmp_path / "fleet.toml", root, enable=""), monkeypatch)
    # the daemon itself is disabled, its companion is still asked for
    gen = generate(config, "systemd", layout(), registry=registry)
    assert set(gen.files) == {"alai-fleet-litestream-p0.service"}
    d = directives(gen.files["alai-fleet-litestream-p0.service"].decode())
    assert one(d, "Service.Type") == "exec"
    assert "Service.WatchdogSec" not in d and "Service.NotifyAccess" not in d
    assert one(d, "Service.ExecStart") == (
        f"{VENV}/bin/litestream replicate -config {root}/config/litestream-p0.yml"
    )
    assert one(d, "Service.EnvironmentFile") == "-/etc/alai-fleet/litestream.env"
    assert one(d, "Service.TasksMax") == "16"
    assert one(d, "Service.RestartPreventExitStatus") == "78"
    plist = plistlib.loads(
        generate(config, "launchd", layout("user"), registry=registry).files[
            "no.alai.fleet.litestream-p0.plist"
        ]
    )
    LaunchAgentPlist.model_validate(plist)
    args = plist["ProgramArguments"]
    assert args[:2] == ["/bin/sh", "-c"] and args[3] == "/etc/alai-fleet/litestream.env"
    assert args[4:] == [
        f"{VENV}/bin/litestream",
        "replicate",
        "-config",
        f"{root}/config/litestream-p0.yml",
    ]
    # the wrapper really exports the file's variables and execs the program
    env_file = tmp_path / "lite.env"
    env_file.write_text("AZURE_CLIENT_SECRET=s3cr3t\n")
    out = subprocess.run(
        ["/bin/sh", "-c", args[2], str(env_file), "/bin/sh", "-c", 'echo "$AZURE_CLIENT_SECRET"'],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout.strip() == "s3cr3t"
    verify(write_all(gen.files, tmp_path / "out"))


def test_duplicate_service_names_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Clash(ClaimSweeper):
        @classmethod
        def companion_services(cls, config: FleetConfig, prefix: Path) -> list[CompanionService]:
            return [CompanionService("claim-sweeper", "clash", ("/bin/true",))]

    globals()["Clash"] = Clash
    registry = {"claim-sweeper": DaemonSpec("claim-sweeper", __name__, "Clash")}
    config = load(write_config(tmp_path / "fleet.toml", tmp_path / "root"), monkeypatch)
    with pytest.raises(ValueError, match="share the name"):
        service_specs(config, layout(), registry)


# systemd-analyze -----------------------------------------------------------------------------
@pytest.mark.system
@pytest.mark.parametrize("mode", ["system", "user"])
def test_every_unit_verifies_clean_and_system_units_score_at_most_2_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    cfg = write_config(tmp_path / "fleet.toml", Path("/srv/alai-fleet"), enable="all")
    config = load(cfg, monkeypatch)
    files = generate(config, "systemd", layout(mode, cfg)).files
    assert files
    paths = write_all(files, tmp_path / mode)
    verify(paths)
    if mode == "system":
        for path in paths:
            assert exposure(path) <= 2.5, path.name


@pytest.mark.system
def test_committed_examples_verify_and_score(tmp_path: Path) -> None:
    """The committed example units, with the example venv swapped for this one (verify checks
    that ExecStart's program exists)."""
    rendered = render_examples(REPO / "config" / "fleet.example.toml")["units"]
    paths = write_all(
        {n: d.replace(b"/opt/alai-fleet/venv", str(VENV).encode()) for n, d in rendered.items()},
        tmp_path,
    )
    verify(paths)
    for path in paths:
        assert exposure(path) <= 2.5, path.name


@pytest.mark.system
def test_committed_units_and_plists_match_the_example_config(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_FLEET__ROOT"] = "/somewhere/else"  # must not leak into the example files
    res = run_fleet(["units", "example", "--check"], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr + "\nregenerate with: fleet units example"
    # --check notices drift; a plain run repairs it and removes files no longer generated
    repo = tmp_path / "repo"
    for sub in ("config", "units", "launchagents"):
        shutil.copytree(REPO / sub, repo / sub)
    victim = next((repo / "units").glob("alai-fleet-*.service"))
    victim.write_text(victim.read_text().replace("WatchdogSec=", "WatchdogSec=9"))
    stale = repo / "launchagents" / "no.alai.fleet.retired.plist"
    stale.write_bytes(next((repo / "launchagents").glob("no.alai.fleet.*.plist")).read_bytes())
    (repo / "units" / "alai-fleet-hand-written.service").write_text("[Service]\n")
    res = run_fleet(["units", "example", "--check", "--repo", str(repo)], env, tmp_path)
    assert res.returncode == 1
    assert f"units/{victim.name}: differs" in res.stdout
    assert "no.alai.fleet.retired.plist: no longer generated" in res.stdout
    res = run_fleet(["units", "example", "--repo", str(repo)], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == (REPO / "units" / victim.name).read_bytes()
    assert not stale.exists()
    assert (repo / "units" / "alai-fleet-hand-written.service").exists()
    assert (repo / "units" / "README.md").exists()


def test_readmes_name_the_regeneration_command() -> None:
    for sub in ("units", "launchagents"):
        assert "fleet units example" in (REPO / sub / "README.md").read_text()


# launchd -------------------------------------------------------------------------------------
def test_plist_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path("/Users/alai/system")
    cfg = write_config(tmp_path / "fleet.toml", root)
    config = load(cfg, monkeypatch)
    data = generate(config, "launchd", layout("user", cfg)).files[
        "no.alai.fleet.claim-sweeper.plist"
    ]
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
    ]
    assert agent.RunAtLoad is True
    assert agent.KeepAlive.SuccessfulExit is False
    assert agent.ExitTimeOut >= config.fleet.stop_grace_s
    assert agent.ExitTimeOut == stop_timeout_s(config)
    assert agent.ThrottleInterval >= 1
    assert agent.StandardOutPath == f"{root}/logs/claim-sweeper.log"
    assert agent.StandardErrorPath == f"{root}/logs/claim-sweeper.err.log"
    assert agent.ProcessType == "Background"
    assert agent.Umask == 0o077
    assert agent.EnvironmentVariables["PYTHONUNBUFFERED"] == "1"
    assert set(raw) == set(LaunchAgentPlist.model_fields)


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
        generate(config, "launchd", layout("user")).files["no.alai.fleet.claim-sweeper.plist"]
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


# install / uninstall -------------------------------------------------------------------------
@pytest.mark.system
def test_install_and_uninstall_print_the_systemctl_plan(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    dest = tmp_path / "units"
    cfg = write_config(tmp_path / "fleet.toml", root)
    args = [
        "units",
        "install",
        "--target",
        "systemd",
        "--mode",
        "user",
        "--dest",
        str(dest),
        "--config",
        str(cfg),
    ]
    first = run_fleet(args, fleet_env, tmp_path)
    assert first.returncode == 0, first.stderr
    unit = dest / "alai-fleet-claim-sweeper.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert "systemctl --user daemon-reload" in first.stdout
    assert "systemctl --user enable --now alai-fleet-claim-sweeper.service" in first.stdout
    assert "try-restart" not in first.stdout
    for sub in ("state", "logs", "databases"):  # ProtectSystem=strict cannot create them
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700
    again = run_fleet(args, fleet_env, tmp_path)
    assert "installed" not in again.stdout and "try-restart" not in again.stdout
    # an upgrade that changes the unit restarts it; a generated unit no longer wanted goes
    retired = dest / "alai-fleet-retired.service"
    retired.write_text(f"# {GENERATED_MARKER} (user mode)\n[Service]\nExecStart=/bin/true\n")
    own = dest / "alai-fleet-operators-own.service"
    own.write_text("[Service]\nExecStart=/bin/true\n")
    write_config(cfg, root, fleet="stop_grace_s = 30.0")
    upgrade = run_fleet(args, fleet_env, tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"updated {unit}" in upgrade.stdout
    assert "systemctl --user try-restart alai-fleet-claim-sweeper.service" in upgrade.stdout
    assert "systemctl --user disable --now alai-fleet-retired.service" in upgrade.stdout
    assert f"rm -f {retired}" in upgrade.stdout
    assert "operators-own" not in upgrade.stdout
    gone = run_fleet(
        ["units", "uninstall", "--target", "systemd", "--mode", "user", "--dest", str(dest)],
        fleet_env,
        tmp_path,
    )
    assert gone.returncode == 0
    assert (
        "systemctl --user disable --now alai-fleet-claim-sweeper.service alai-fleet-retired.service"
    ) in gone.stdout
    assert "operators-own" not in gone.stdout
    assert unit.exists(), "without --now nothing is removed"


@pytest.mark.system
def test_install_launchd_plan(fleet_env: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    dest = tmp_path / "LaunchAgents"
    cfg = write_config(tmp_path / "fleet.toml", root)
    res = run_fleet(
        ["units", "install", "--target", "launchd", "--dest", str(dest), "--config", str(cfg)],
        fleet_env,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    plist = dest / "no.alai.fleet.claim-sweeper.plist"
    LaunchAgentPlist.model_validate(plistlib.loads(plist.read_bytes()))
    uid = os.getuid()
    assert f"launchctl bootstrap gui/{uid} {plist}" in res.stdout
    assert f"launchctl enable gui/{uid}/no.alai.fleet.claim-sweeper" in res.stdout
    assert (root / "logs").is_dir(), "launchd cannot open StandardOutPath in a missing dir"
    gone = run_fleet(
        ["units", "uninstall", "--target", "launchd", "--dest", str(dest), "--now"],
        fleet_env,
        tmp_path,
    )
    # launchctl does not exist here: bootout is allowed to fail, the file still goes
    assert gone.returncode == 0, gone.stderr
    assert not plist.exists()


def test_execute_stops_at_the_first_failing_checked_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.units_cli import Step, _execute

    ran: list[list[str]] = []

    def runner(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        code = 1 if argv[0] in ("fails", "may-fail") else 0
        return subprocess.CompletedProcess(argv, code, "", "boom")

    victim = tmp_path / "victim"
    victim.write_text("x")
    steps = [
        Step(argv=("may-fail",), check=False),
        Step(remove=victim),
        Step(argv=("fails",)),
        Step(argv=("never",)),
    ]
    assert _execute(steps, now=True, runner=runner) == 1
    assert ran == [["may-fail"], ["fails"]]
    assert not victim.exists()
    assert "error: exit 1: fails" in capsys.readouterr().err
    assert _execute(steps, now=False, runner=runner) == 0
    assert ran == [["may-fail"], ["fails"]], "printing the plan runs nothing"

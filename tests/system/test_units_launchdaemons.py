"""LaunchDaemons: the Macs run the fleet from boot, before anyone logs in. One plist per service
in /Library/LaunchDaemons, run as the service account (UserName/GroupName), checked against the
typed model and against launchd.plist(5)'s documented keys and types (plutil is not on Linux);
ProcessType per daemon as docs/operations.md documents it; `fleet units install --domain system`
writes root-owned 0644 files and bootstraps them into the `system` domain (a fake launchctl
first on PATH logs what it is asked), `--domain user` still writes LaunchAgents for gui/UID."""

from __future__ import annotations

import os
import plistlib
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fleet.registry import manifests
from shared.units import (
    InstallLayout,
    LaunchAgentPlist,
    LaunchDaemonPlist,
    stop_timeout_s,
)
from tests.conftest import run_fleet
from tests.cutover_support import fake_env, install_fakes, logged_calls
from tests.launchd_keys import launchd_plist_problems
from tests.units_support import REPO, VENV, gen, layout, load, write_config

# `units install` byte-compiles the venv; a fresh one once, outside the commands' timeouts
pytestmark = pytest.mark.usefixtures("units_byte_code")

DAEMONS_DIR = "/Library/LaunchDaemons"
_PROCESS_ROW = re.compile(r"^\| `([a-z<>-]+)` \| (Standard|Background|Adaptive|Interactive) \|")


def daemon_layout(config_file: Path | None = None) -> InstallLayout:
    return InstallLayout(
        mode="system",
        prefix=VENV,
        config_file=config_file,
        user="alai",
        home=Path("/Users/alai"),
        group="staff",
    )


def documented_process_types() -> dict[str, str]:
    """Service -> ProcessType, from the table in docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text()
    rows = {m[1]: m[2] for line in text.splitlines() if (m := _PROCESS_ROW.match(line))}
    assert rows, "docs/operations.md has no ProcessType table"
    return rows


def documented(rows: dict[str, str], service: str) -> str:
    if service.startswith("litestream-"):
        return rows["litestream-<class>"]
    return rows[service]


def test_the_docs_give_every_daemon_a_process_type() -> None:
    rows = documented_process_types()
    jobs = {"dr-drill"}  # scheduled jobs (restore-loop's manifest)
    assert {m.name for m in manifests()} | {"litestream-<class>"} | jobs == set(rows)
    # the two: throttled CPU and I/O made them miss their RPO and dead-man's pings
    assert rows["restore-loop"] == rows["heartbeat"] == "Standard"


@pytest.mark.parametrize("role", ["primary", "standby"])
def test_a_launchdaemon_per_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    (root / "config" / "databases.toml").write_bytes(
        (REPO / "config" / "databases.example.toml").read_bytes()
    )
    cfg = write_config(tmp_path / "fleet.toml", root, enable="all", fleet=f'role = "{role}"')
    config = load(cfg, monkeypatch)
    files = gen(config, "launchd", daemon_layout(cfg)).files
    agents = gen(config, "launchd", layout("user", cfg)).files
    assert set(files) == set(agents), "the same services in either domain"
    wanted = {"restore-loop"} if role == "standby" else {"email-reactor", "litestream-p0-critical"}
    names = {n.removeprefix("no.alai.fleet.").removesuffix(".plist") for n in files}
    assert wanted <= names and "heartbeat" in names, names
    rows = documented_process_types()
    for name, data in sorted(files.items()):
        assert launchd_plist_problems(data, "system") == [], name
        raw = plistlib.loads(data)
        job = LaunchDaemonPlist.model_validate(raw)
        service = job.Label.removeprefix("no.alai.fleet.")
        assert name == f"{job.Label}.plist"
        # a service has KeepAlive, a scheduled job StartCalendarInterval (never both)
        scheduled = "StartCalendarInterval" in raw
        other = "KeepAlive" if scheduled else "StartCalendarInterval"
        assert set(raw) == set(LaunchDaemonPlist.model_fields) - {other}, name
        assert (job.UserName, job.GroupName) == ("alai", "staff")
        if scheduled:
            assert job.RunAtLoad is False and service == "dr-drill"
        else:
            assert job.KeepAlive is not None
            assert job.KeepAlive.SuccessfulExit is False and job.RunAtLoad is True
        assert job.ThrottleInterval == 10
        assert job.ExitTimeOut == stop_timeout_s(config)
        assert job.WorkingDirectory == str(root) and job.Umask == 0o077
        assert Path(job.StandardOutPath).parent == root / "logs", name
        assert job.ProcessType == documented(rows, service), name
        assert b"gui/" not in data, "a LaunchDaemon never names a user's gui domain"
        args = job.ProgramArguments
        assert args[0] == f"{VENV}/bin/fleet"
        assert args[args.index("--domain") + 1] == "system"
        if "launchd-run" in args:  # the system env dir, as systemd system units read it
            optional = [args[i + 1] for i, a in enumerate(args) if a == "--optional-env-file"]
            assert optional == ["/etc/alai-fleet/fleet.env", f"/etc/alai-fleet/fleet-{service}.env"]
        # the LaunchAgent of the same service: same ProcessType, no account keys
        agent_raw = plistlib.loads(agents[name])
        assert launchd_plist_problems(agents[name], "user") == [], name
        assert LaunchAgentPlist.model_validate(agent_raw).ProcessType == job.ProcessType
        assert "--domain" not in agent_raw["ProgramArguments"]
        with pytest.raises(ValidationError, match="UserName"):
            LaunchDaemonPlist.model_validate(agent_raw)
        with pytest.raises(ValidationError, match="Extra inputs"):
            LaunchAgentPlist.model_validate(raw)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("ThrottleInterval", "10", "ThrottleInterval: must be an integer"),
        ("RunAtLoad", 1, "RunAtLoad: must be a boolean"),
        ("ExitTimeout", 30, "ExitTimeout: not a launchd.plist(5) key"),
        ("KeepAlive", {"SuccesfulExit": False}, "unknown key 'SuccesfulExit'"),
        ("ProcessType", "Daemon", "ProcessType: must be one of"),
        ("ProgramArguments", ["/bin/x", 3], "ProgramArguments: [1] must be a string"),
        ("EnvironmentVariables", {"A": 1}, "EnvironmentVariables: [A] must be a string"),
    ],
)
def test_the_key_table_catches_what_launchd_would_ignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: Any, problem: str
) -> None:
    config = load(write_config(tmp_path / "fleet.toml", tmp_path / "root"), monkeypatch)
    raw = plistlib.loads(
        gen(config, "launchd", daemon_layout()).files["no.alai.fleet.claim-sweeper.plist"]
    )
    raw[key] = value
    problems = launchd_plist_problems(plistlib.dumps(raw), "system")
    assert any(p.startswith(problem) or problem in p for p in problems), problems


def test_the_key_table_rejects_broken_bytes_and_account_keys_in_a_user_domain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert launchd_plist_problems(b"<plist><dict><key>Label", "user")[0].startswith(
        "not an XML property list"
    )
    assert launchd_plist_problems(plistlib.dumps(["x"]), "user") == [
        "top level must be a dictionary, not list"
    ]
    config = load(write_config(tmp_path / "fleet.toml", tmp_path / "root"), monkeypatch)
    data = gen(config, "launchd", daemon_layout()).files["no.alai.fleet.claim-sweeper.plist"]
    problems = launchd_plist_problems(data, "user")
    assert [p.split(":")[0] for p in problems] == ["GroupName", "UserName"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"UserName": ""}, "UserName"),
        ({"UserName": "al ai"}, "account name"),
        ({"GroupName": "staff;rm"}, "account name"),
        ({"ProcessType": "Daemon"}, "ProcessType"),
        ({"KeepAlive": True}, "KeepAlive"),
    ],
)
def test_the_daemon_model_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], message: str
) -> None:
    config = load(write_config(tmp_path / "fleet.toml", tmp_path / "root"), monkeypatch)
    raw = plistlib.loads(
        gen(config, "launchd", daemon_layout()).files["no.alai.fleet.claim-sweeper.plist"]
    )
    raw.update(change)
    with pytest.raises(ValidationError, match=message):
        LaunchDaemonPlist.model_validate(raw)


def test_committed_launchdaemons_parse_with_the_model_and_the_key_table() -> None:
    plists = sorted((REPO / "launchdaemons").glob("*.plist"))
    assert plists, "launchdaemons/ holds no plist: run `fleet units example`"
    rows = documented_process_types()
    for path in plists:
        data = path.read_bytes()
        assert launchd_plist_problems(data, "system") == [], path.name
        job = LaunchDaemonPlist.model_validate(plistlib.loads(data))
        assert path.name == f"{job.Label}.plist"
        assert (job.UserName, job.GroupName) == ("alai", "staff")
        assert job.ProcessType == documented(rows, job.Label.removeprefix("no.alai.fleet."))
    for path in sorted((REPO / "launchagents").glob("*.plist")):
        assert launchd_plist_problems(path.read_bytes(), "user") == [], path.name
    assert "fleet units example" in (REPO / "launchdaemons" / "README.md").read_text()


@pytest.fixture
def fakes(fleet_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = fake_env(fleet_env, install_fakes(tmp_path / "bin"), tmp_path / "fakes")
    env.pop("SUDO_USER", None)
    return env


@pytest.mark.system
def test_install_system_domain_bootstraps_launchdaemons(
    fakes: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "fleet.toml", root)
    stage = tmp_path / "stage"
    args = ["units", "install", "--target", "launchd", "--domain", "system"]
    args += ["--user", "nobody", "--destdir", str(stage), "--config", str(cfg)]
    plan = run_fleet(args, fakes, tmp_path)
    assert plan.returncode == 0, plan.stderr
    label = "no.alai.fleet.claim-sweeper"
    assert f"launchctl bootstrap system {DAEMONS_DIR}/{label}.plist" in plan.stdout
    assert f"launchctl enable system/{label}" in plan.stdout
    assert "gui/" not in plan.stdout
    assert logged_calls(fakes) == [], "without --now nothing runs"
    # an operator's file with our prefix that is not even XML: neither ours nor fatal
    broken = stage / DAEMONS_DIR.lstrip("/") / "no.alai.fleet.hand-made.plist"
    broken.write_text("<?xml version='1.0'?><plist><dict><key>")

    res = run_fleet([*args, "--now"], fakes, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert broken.exists() and "hand-made" not in res.stdout
    plist = stage / DAEMONS_DIR.lstrip("/") / f"{label}.plist"
    st = plist.stat()
    assert stat.S_IMODE(st.st_mode) == 0o644
    if os.geteuid() == 0:  # launchd loads a LaunchDaemon only when root owns it
        assert (st.st_uid, st.st_gid) == (0, 0)
    job = LaunchDaemonPlist.model_validate(plistlib.loads(plist.read_bytes()))
    assert (job.UserName, job.GroupName) == ("nobody", "nogroup")  # from the account database
    assert launchd_plist_problems(plist.read_bytes(), "system") == []
    calls = logged_calls(fakes)
    assert ["launchctl", "enable", f"system/{label}"] in calls
    assert ["launchctl", "bootstrap", "system", f"{DAEMONS_DIR}/{label}.plist"] in calls
    assert not [c for c in calls if any("gui/" in a for a in c)], calls
    logs = root / "logs"  # StandardOutPath's directory, made for the account to write
    assert logs.is_dir()
    if os.geteuid() == 0:
        assert logs.stat().st_uid == 65534

    where = ["--target", "launchd", "--domain", "system", "--destdir", str(stage)]
    gone = run_fleet(["units", "uninstall", *where, "--now"], fakes, tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert ["launchctl", "bootout", f"system/{label}"] in logged_calls(fakes)
    assert not plist.exists() and broken.exists()


@pytest.mark.system
def test_install_user_domain_keeps_launchagents(fakes: dict[str, str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "fleet.toml", root)
    dest = tmp_path / "LaunchAgents"
    where = ["--target", "launchd", "--domain", "user", "--dest", str(dest)]
    res = run_fleet(["units", "install", *where, "--config", str(cfg), "--now"], fakes, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    plist = dest / "no.alai.fleet.claim-sweeper.plist"
    assert launchd_plist_problems(plist.read_bytes(), "user") == []
    LaunchAgentPlist.model_validate(plistlib.loads(plist.read_bytes()))
    uid = os.getuid()
    calls = logged_calls(fakes)
    assert ["launchctl", "bootstrap", f"gui/{uid}", str(plist)] in calls
    assert ["launchctl", "enable", f"gui/{uid}/no.alai.fleet.claim-sweeper"] in calls
    assert not [c for c in calls if "system" in c], calls


@pytest.mark.system
def test_system_domain_refusals(fakes: dict[str, str], tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "fleet.toml", tmp_path / "root")
    stage = tmp_path / "stage"
    base = ["units", "install", "--target", "launchd", "--domain", "system"]
    base += ["--destdir", str(stage), "--config", str(cfg)]
    as_root = run_fleet([*base, "--user", "root"], fakes, tmp_path)
    assert as_root.returncode == 78, as_root.stdout + as_root.stderr
    assert "run as root" in as_root.stderr and "Traceback" not in as_root.stderr
    unknown = run_fleet([*base, "--user", "no-such-account"], fakes, tmp_path)
    assert unknown.returncode == 78, unknown.stdout + unknown.stderr
    assert "no-such-account" in unknown.stderr and "--group" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert not stage.exists(), "a refusal writes nothing"
    named = run_fleet([*base, "--user", "no-such-account", "--group", "staff"], fakes, tmp_path)
    assert named.returncode == 0, named.stderr
    job = LaunchDaemonPlist.model_validate(
        plistlib.loads(
            (stage / DAEMONS_DIR.lstrip("/") / "no.alai.fleet.claim-sweeper.plist").read_bytes()
        )
    )
    assert (job.UserName, job.GroupName) == ("no-such-account", "staff")
    both = run_fleet([*base, "--user", "nobody", "--mode", "user"], fakes, tmp_path)
    assert both.returncode == 64 and "--domain" in both.stderr


@pytest.mark.system
def test_launchd_run_in_the_system_domain_names_it(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, "FLEET_FLEET__ROLE": "standby", "FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "true"}
    res = run_fleet(
        ["units", "launchd-run", "claim-sweeper", "--domain", "system"], env, tmp_path, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "launchctl kickstart -k system/no.alai.fleet.claim-sweeper" in res.stderr


def test_installing_launchdaemons_needs_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as someone else (in-process, with the effective uid faked): refused before anything
    is written, saying sudo; a staging --destdir is allowed, with a warning about ownership."""
    from click.testing import CliRunner

    from fleet.cli import cli

    cfg = write_config(tmp_path / "fleet.toml", tmp_path / "root")
    monkeypatch.setattr(os, "geteuid", lambda: 501)
    args = ["units", "install", "--target", "launchd", "--domain", "system"]
    args += ["--user", "nobody", "--config", str(cfg)]
    env = {"HOME": str(tmp_path / "home"), "FLEET_FLEET__ROOT": str(tmp_path / "root")}
    res = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert res.exit_code == 78, res.output
    assert "LaunchDaemons are installed by root" in res.output and "sudo" in res.output
    assert not (tmp_path / "root" / "logs").exists(), "refused before writing anything"
    stage = tmp_path / "stage"
    res = CliRunner().invoke(cli, [*args, "--destdir", str(stage)], env=env)
    assert res.exit_code == 0, res.output
    assert "launchd loads a LaunchDaemon only when root owns it" in res.output
    assert (stage / DAEMONS_DIR.lstrip("/") / "no.alai.fleet.claim-sweeper.plist").is_file()

"""`fleet units install` / `uninstall`: files written where the service manager reads them
(0644, only when changed), the directories the sandbox cannot create made up front, and the
systemctl/launchctl plan printed (or run with --now) that makes the manager run exactly the
installed set; operators' own files are never touched."""

from __future__ import annotations

import importlib.util
import os
import plistlib
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import daemons.claim_sweeper.policy as policy
import fleet.install
import shared.example_config
from fleet.install import Step, execute
from shared.units import GENERATED_MARKER, LaunchAgentPlist
from tests.conftest import run_fleet
from tests.units_support import write_config

# `units install` byte-compiles the venv; a fresh one once, outside the commands' timeouts
pytestmark = pytest.mark.usefixtures("units_byte_code")


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
    # the units run the daemons at -OO: install compiles the fleet at that level
    compiled = Path(importlib.util.cache_from_source(policy.__file__, optimization=2))
    compiled.unlink(missing_ok=True)
    first = run_fleet(args, fleet_env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"byte-compiled {sys.prefix} for the units' PYTHONOPTIMIZE=2" in first.stdout
    assert compiled.exists()
    unit = dest / "alai-fleet-claim-sweeper.service"
    assert "\nEnvironment=PYTHONOPTIMIZE=2\n" in unit.read_text()
    assert "\nEnvironment=MALLOC_ARENA_MAX=1\n" in unit.read_text()  # glibc: one malloc arena
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
    where = ["--target", "launchd", "--domain", "user", "--dest", str(dest)]
    res = run_fleet(["units", "install", *where, "--config", str(cfg)], fleet_env, tmp_path)
    assert res.returncode == 0, res.stderr
    plist = dest / "no.alai.fleet.claim-sweeper.plist"
    LaunchAgentPlist.model_validate(plistlib.loads(plist.read_bytes()))
    uid = os.getuid()
    assert f"launchctl bootstrap gui/{uid} {plist}" in res.stdout
    assert f"launchctl enable gui/{uid}/no.alai.fleet.claim-sweeper" in res.stdout
    assert (root / "logs").is_dir(), "launchd cannot open StandardOutPath in a missing dir"
    gone = run_fleet(["units", "uninstall", *where, "--now"], fleet_env, tmp_path)
    # launchctl does not exist here: bootout is allowed to fail, the file still goes
    assert gone.returncode == 0, gone.stderr
    assert not plist.exists()


def test_execute_stops_at_the_first_failing_checked_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    assert execute(steps, now=True, runner=runner) == 1
    assert ran == [["may-fail"], ["fails"]]
    assert not victim.exists()
    assert "error: exit 1: fails" in capsys.readouterr().err
    assert execute(steps, now=False, runner=runner) == 0
    assert ran == [["may-fail"], ["fails"]], "printing the plan runs nothing"


@pytest.mark.system
def test_install_compiles_the_fleet_not_its_namesakes_in_the_working_directory(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """`fleet units install` run from a directory holding its own shared/, daemons/ or fleet/
    (a home directory, another project) compiles the fleet's packages, the ones the units
    import, and writes nothing into that directory."""
    work = tmp_path / "work"
    for name in ("shared", "daemons", "fleet"):
        (work / name).mkdir(parents=True)
        (work / name / "notes.py").write_text("x = 1\n")
    cfg = write_config(tmp_path / "fleet.toml", tmp_path / "root")
    # modules no daemon imports (no other test compiles them at -OO, nor removes them)
    compiled = [
        Path(importlib.util.cache_from_source(str(module.__file__), optimization=2))
        for module in (fleet.install, shared.example_config)
    ]
    for path in compiled:
        path.unlink(missing_ok=True)
    args = ["units", "install", "--target", "systemd", "--mode", "user"]
    args += ["--dest", str(tmp_path / "units"), "--config", str(cfg)]
    res = run_fleet(args, fleet_env, work)
    assert res.returncode == 0, res.stderr
    assert [path.exists() for path in compiled] == [True, True]
    assert not list(work.rglob("__pycache__"))


@pytest.mark.system
def test_install_dry_run_prints_the_diff_and_writes_nothing(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "service-root"  # not the fixture's (which exists already)
    fleet_env = {k: v for k, v in fleet_env.items() if k != "FLEET_FLEET__ROOT"}
    dest = tmp_path / "units"
    cfg = write_config(tmp_path / "fleet.toml", root)
    args = ["units", "install", "--target", "systemd", "--mode", "user", "--dest", str(dest)]
    args += ["--config", str(cfg)]
    unit = dest / "alai-fleet-claim-sweeper.service"

    fresh = run_fleet([*args, "--dry-run"], fleet_env, tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert f"--- /dev/null\n+++ {unit}\n" in fresh.stdout
    assert "\n+ExecStart=" in fresh.stdout and "\n+Type=notify\n" in fresh.stdout
    assert "systemctl --user enable --now alai-fleet-claim-sweeper.service" in fresh.stdout
    assert f"would create {root / 'state'} (0700)" in fresh.stdout
    assert "1 new, 0 changed, 0 to remove" in fresh.stdout
    assert f"would byte-compile {sys.prefix} for PYTHONOPTIMIZE=2" in fresh.stdout
    assert not dest.exists() and not root.exists()  # nothing written, nothing created

    assert run_fleet(args, fleet_env, tmp_path).returncode == 0
    installed = unit.read_bytes()
    same = run_fleet([*args, "--dry-run"], fleet_env, tmp_path)
    assert f"unchanged {unit}" in same.stdout and "\n+" not in same.stdout
    # a changed setting shows as -/+ lines; a stale generated file as a removal
    retired = dest / "alai-fleet-retired.service"
    retired.write_text(f"# {GENERATED_MARKER} (user mode)\n[Service]\nExecStart=/bin/true\n")
    write_config(cfg, root, fleet="stop_grace_s = 30.0")
    changed = run_fleet([*args, "--dry-run"], fleet_env, tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert f"--- {unit}\n+++ {unit}\n" in changed.stdout
    minus = [x for x in changed.stdout.splitlines() if x.startswith("-TimeoutStopSec")]
    plus = [x for x in changed.stdout.splitlines() if x.startswith("+TimeoutStopSec")]
    assert minus and plus and minus != [p.replace("+", "-", 1) for p in plus]
    assert f"would remove {retired}" in changed.stdout
    assert "systemctl --user try-restart alai-fleet-claim-sweeper.service" in changed.stdout
    assert unit.read_bytes() == installed and retired.exists()

    both = run_fleet([*args, "--dry-run", "--now"], fleet_env, tmp_path)
    assert both.returncode == 64 and unit.read_bytes() == installed

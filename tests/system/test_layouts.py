"""Host layouts through the real `fleet` command: an unknown `[fleet] layout` exits 78 naming
fleet.layout, check-config / status / `config paths` say which layout is in effect and where
its files are, and the services generated under "alai" write the litestream logs where the
seed's runbook tails them (`~/system/logs/litestream.log`, `litestream-error.log`,
`litestream-restore.log`). Pure loading is in tests/unit/test_layouts.py."""

from __future__ import annotations

import json
import plistlib
import shutil
from pathlib import Path

import pytest

from shared.units import LaunchAgentPlist
from tests.conftest import run_fleet
from tests.units_support import REPO, VENV, directives, one, verify

pytestmark = pytest.mark.system


@pytest.fixture
def home_env(fleet_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """fleet_env without its explicit root, so the layout decides it (under a private HOME)."""
    env = {k: v for k, v in fleet_env.items() if k != "FLEET_FLEET__ROOT"}
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_check_config_names_an_unknown_layout_and_exits_78(
    home_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = write(tmp_path, '[fleet]\nlayout = "forge"\n')
    res = run_fleet(["check-config", "--config", str(cfg)], home_env, tmp_path)
    assert res.returncode == 78, res.stdout + res.stderr
    assert "fleet.layout" in res.stderr and "'alai'" in res.stderr
    assert "Traceback" not in res.stderr
    # the same from the environment, and for a command that would start a daemon
    env = {**home_env, "FLEET_FLEET__LAYOUT": "ALAI"}
    for args in (["check-config"], ["run", "claim-sweeper", "--once"]):
        res = run_fleet(args, env, tmp_path)
        assert res.returncode == 78, args
        assert "fleet.layout" in res.stderr and "Traceback" not in res.stderr


def test_check_config_status_and_paths_name_the_layout_in_effect(
    home_env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(home_env["HOME"])
    cfg = write(tmp_path, '[fleet]\nlayout = "alai"\n')
    res = run_fleet(["check-config", "--config", str(cfg)], home_env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"root {home / 'system'}," in res.stdout and "layout alai" in res.stdout
    status = run_fleet(["status", "--config", str(cfg)], home_env, tmp_path)
    assert "layout alai" in status.stdout
    shown = run_fleet(["config", "paths", "--json", "--config", str(cfg)], home_env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["layout"] == "alai"
    rows = {row["key"]: row for row in doc["paths"]}
    system = home / "system"
    for key, path in {
        "email_reactor.audit_file": system / "state/inbox-watcher-audit.log",
        "email_reactor.quarantine_file": system / "state/inbox-watcher-quarantine.jsonl",
        "email_reactor.digest_state_file": system / "logs/email-reactor-digest-state.json",
        "ollama_health.status_file": system / "state/ollama-health.json",
        "ollama_health.status_link": Path("/tmp/ollama-health.json"),
        "ollama_health.override_file": Path("/tmp/ollama-health-override.json"),
        "email_reactor.inbox_db": system / "databases/email-inbox.db",
        "mission_control.db": system / "databases/mission-control.db",
        "restore_loop.replicate_log_file": system / "logs/litestream.log",
        "restore_loop.replicate_error_log_file": system / "logs/litestream-error.log",
        "restore_loop.log_file": system / "logs/litestream-restore.log",
    }.items():
        assert rows[key]["path"] == str(path), key
        assert rows[key]["source"] == "layout alai", key
    # a key set in the file wins, and the listing says so
    cfg.write_text(
        f'[fleet]\nlayout = "alai"\n[ollama_health]\nstatus_file = "{tmp_path}/o.json"\n'
    )
    shown = run_fleet(["config", "paths", "--json", "--config", str(cfg)], home_env, tmp_path)
    rows = {row["key"]: row for row in json.loads(shown.stdout)["paths"]}
    assert rows["ollama_health.status_file"] == {
        "key": "ollama_health.status_file",
        "path": f"{tmp_path}/o.json",
        "source": "config",
    }
    # the default layout says so too
    cfg.write_text("")
    res = run_fleet(["check-config", "--config", str(cfg)], home_env, tmp_path)
    assert res.returncode == 0 and "layout default" in res.stdout


def _generate(
    env: dict[str, str], tmp_path: Path, cfg: Path, target: str, out: str
) -> dict[str, bytes]:
    args = ["units", "generate", "--target", target, "--mode", "user", "--config", str(cfg)]
    res = run_fleet([*args, "--out", str(tmp_path / out)], env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    return {p.name: p.read_bytes() for p in (tmp_path / out).iterdir()}


def _with_tier_table(root: Path) -> None:
    (root / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config/databases.example.toml", root / "config/databases.toml")


def test_alai_services_write_the_litestream_logs_the_seed_runbook_tails(
    home_env: dict[str, str], tmp_path: Path
) -> None:
    system = Path(home_env["HOME"]) / "system"
    _with_tier_table(system)
    cfg = write(tmp_path, '[fleet]\nlayout = "alai"\nrole = "primary"\n')
    plists = _generate(home_env, tmp_path, cfg, "launchd", "primary-launchd")
    companions = sorted(n for n in plists if n.startswith("no.alai.fleet.litestream-"))
    assert companions, plists.keys()  # one per retention class of the tier table
    for name in companions:
        agent = LaunchAgentPlist.model_validate(plistlib.loads(plists[name]))
        assert agent.StandardOutPath == f"{system}/logs/litestream.log", name
        assert agent.StandardErrorPath == f"{system}/logs/litestream-error.log", name
    # the fleet's own daemons keep their names
    own = LaunchAgentPlist.model_validate(
        plistlib.loads(plists["no.alai.fleet.claim-sweeper.plist"])
    )
    # (their JSON log, which the daemon writes itself; launchd holds only the .err.log)
    assert own.EnvironmentVariables["FLEET_FLEET__LOG_FILE"] == f"{system}/logs/claim-sweeper.log"
    assert own.StandardOutPath == f"{system}/logs/claim-sweeper.err.log"

    # systemd: the same files, appended by the service manager; the units verify clean
    units = _generate(home_env, tmp_path, cfg, "systemd", "primary-systemd")
    unit_names = sorted(n for n in units if n.startswith("alai-fleet-litestream-"))
    assert len(unit_names) == len(companions)
    for name in unit_names:
        d = directives(units[name].decode())
        assert one(d, "Service.StandardOutput") == f"append:{system}/logs/litestream.log"
        assert one(d, "Service.StandardError") == f"append:{system}/logs/litestream-error.log"
    assert "Service.StandardOutput" not in directives(
        units["alai-fleet-claim-sweeper.service"].decode()
    )
    verify(sorted((tmp_path / "primary-systemd").iterdir()))

    # FORGE: the restore loop's own log is the seed's litestream-restore.log, which the
    # daemon writes itself (also when [fleet] log_file names a file for every daemon)
    for fleet_log in ("", 'log_file = "<root>/logs/fleet-{daemon}.log"\n'):
        cfg.write_text(f'[fleet]\nlayout = "alai"\nrole = "standby"\n{fleet_log}')
        plists = _generate(home_env, tmp_path, cfg, "launchd", f"standby-launchd{len(fleet_log)}")
        agent = LaunchAgentPlist.model_validate(
            plistlib.loads(plists["no.alai.fleet.restore-loop.plist"])
        )
        assert agent.EnvironmentVariables["FLEET_FLEET__LOG_FILE"] == (
            f"{system}/logs/litestream-restore.log"
        )
        assert agent.StandardOutPath == f"{system}/logs/litestream-restore-error.log"
        assert agent.StandardErrorPath == f"{system}/logs/litestream-restore-error.log"


def test_the_default_layout_keeps_the_service_log_names(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    _with_tier_table(fleet_root)
    cfg = write(tmp_path, "")
    plists = _generate(fleet_env, tmp_path, cfg, "launchd", "launchd")
    agent = LaunchAgentPlist.model_validate(
        plistlib.loads(plists["no.alai.fleet.litestream-p0-critical.plist"])
    )
    assert agent.StandardOutPath == f"{fleet_root}/logs/litestream-p0-critical.log"
    assert agent.StandardErrorPath == f"{fleet_root}/logs/litestream-p0-critical.err.log"
    units = _generate(fleet_env, tmp_path, cfg, "systemd", "systemd")
    d = directives(units["alai-fleet-litestream-p0-critical.service"].decode())
    assert "Service.StandardOutput" not in d and "Service.StandardError" not in d
    assert str(VENV) in one(d, "Service.ExecStart")

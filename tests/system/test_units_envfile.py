"""The secrets environment file (litestream.env) the restore-loop daemon and the litestream
replicate services load: the manifest declares who needs it (no other daemon gets it), systemd
units name it with EnvironmentFile=, plists load it through `fleet units launchd-run
--env-file` / `launchd-exec`, which refuse a file group/others can read (naming the file and
its mode) and hand the variables to the real process otherwise."""

from __future__ import annotations

import json
import plistlib
import signal
import subprocess
from pathlib import Path

import pytest

from fleet.registry import by_name
from shared.config import FleetConfig
from tests.conftest import FLEET_BIN, NotifySocket, run_fleet
from tests.cutover_support import TIER_TABLE
from tests.units_support import VENV, directives, gen, layout, load, one, write_config

pytestmark = pytest.mark.system


def _config(
    where: Path, monkeypatch: pytest.MonkeyPatch, role: str, tables: str = TIER_TABLE
) -> tuple[Path, Path, FleetConfig]:
    root = where / "root"
    (root / "config").mkdir(parents=True)
    (root / "config" / "databases.toml").write_text(tables)
    where.mkdir(exist_ok=True)
    cfg = write_config(
        where / "fleet.toml", root, enable="restore_loop claim_sweeper", fleet=f'role = "{role}"'
    )
    return root, cfg, load(cfg, monkeypatch)


def test_only_restore_loop_and_litestream_services_get_the_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cfg, config = _config(tmp_path / "standby", monkeypatch, "standby")
    env_file = root / "config" / "litestream.env"
    declared = by_name()["restore-loop"].secrets_env(config, config.daemon_section("restore_loop"))
    assert declared is not None and declared.path == env_file
    assert declared.variables == ("LITESTREAM_AZURE_ACCOUNT", "LITESTREAM_AZURE_ACCOUNT_KEY")
    sweeper_section = config.daemon_section("claim_sweeper")
    assert by_name()["claim-sweeper"].secrets_env(config, sweeper_section) is None

    units = gen(config, "systemd", layout("user", cfg)).files
    restore = directives(units["alai-fleet-restore-loop.service"].decode())
    assert restore["Service.EnvironmentFile"] == [
        f"-{Path('/home/alai')}/.config/alai-fleet/fleet.env",
        f"-{Path('/home/alai')}/.config/alai-fleet/fleet-restore-loop.env",
        str(env_file),
    ]
    sweeper = directives(units["alai-fleet-claim-sweeper.service"].decode())
    assert str(env_file) not in " ".join(sweeper["Service.EnvironmentFile"])

    plists = gen(config, "launchd", layout("user", cfg)).files
    args = plistlib.loads(plists["no.alai.fleet.restore-loop.plist"])["ProgramArguments"]
    assert args == [
        f"{VENV}/bin/fleet",
        "units",
        "launchd-run",
        "restore-loop",
        "--config",
        str(cfg),
        "--optional-env-file",
        "/home/alai/.config/alai-fleet/fleet.env",
        "--optional-env-file",
        "/home/alai/.config/alai-fleet/fleet-restore-loop.env",
        "--env-file",
        str(env_file),
    ]
    sweeper_args = plistlib.loads(plists["no.alai.fleet.claim-sweeper.plist"])["ProgramArguments"]
    assert "--env-file" not in sweeper_args

    # on the primary: the replicate companion loads it, restore-loop has no unit
    root, cfg, primary = _config(tmp_path / "primary", monkeypatch, "primary")
    units = gen(primary, "systemd", layout("user", cfg)).files
    assert "alai-fleet-restore-loop.service" not in units
    companion = directives(units["alai-fleet-litestream-p0-critical.service"].decode())
    assert one(companion, "Service.EnvironmentFile") == str(root / "config" / "litestream.env")


def test_a_file_replica_needs_no_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables = TIER_TABLE.split("[replica]")[0] + (
        '[replica]\ntype = "file"\npath_prefix = "/srv/replicas"\n\n'
        '[[databases]]\nname = "mission-control"\nclass = "p0-critical"\n'
    )
    _root, cfg, config = _config(tmp_path, monkeypatch, "standby", tables)
    assert gen(config, "systemd", layout("user", cfg)).files
    section = config.daemon_section("restore_loop")
    assert by_name()["restore-loop"].secrets_env(config, section) is None
    units = gen(config, "systemd", layout("user", cfg)).files
    restore = directives(units["alai-fleet-restore-loop.service"].decode())
    # only the optional fleet.env and fleet-restore-loop.env
    assert all(p.startswith("-") for p in restore["Service.EnvironmentFile"])
    assert len(restore["Service.EnvironmentFile"]) == 2


def _env_file(tmp_path: Path, mode: int, text: str) -> Path:
    path = tmp_path / "secrets" / "litestream.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_launchd_run_refuses_a_secrets_file_others_can_read(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    path = _env_file(tmp_path, 0o644, "FLEET_FLEET__HOST=from-env-file\n")
    res = run_fleet(
        ["units", "launchd-run", "claim-sweeper", "--env-file", str(path)],
        fleet_env,
        tmp_path,
        timeout=60,
    )
    # launchd's refusal convention (exit 0: KeepAlive must not respawn it), with the reason
    assert res.returncode == 0, res.stderr
    assert f"secrets file {path}: mode 0644" in res.stderr
    assert (
        "launchctl kickstart -k gui/" in res.stderr and "no.alai.fleet.claim-sweeper" in res.stderr
    )
    assert res.stdout == ""  # the daemon never started
    missing = run_fleet(
        ["units", "launchd-run", "claim-sweeper", "--env-file", str(tmp_path / "nope.env")],
        fleet_env,
        tmp_path,
        timeout=60,
    )
    assert missing.returncode == 0 and "does not exist" in missing.stderr
    bad = _env_file(tmp_path, 0o600, "JUST A LINE\n")
    res = run_fleet(
        ["units", "launchd-run", "claim-sweeper", "--env-file", str(bad)],
        fleet_env,
        tmp_path,
        timeout=60,
    )
    assert "line 1: not KEY=VALUE" in res.stderr and "JUST" not in res.stderr


def test_launchd_run_hands_the_variables_to_the_daemon(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    path = _env_file(tmp_path, 0o600, "# secrets\nexport FLEET_FLEET__HOST='from-env-file'\n")
    env = {
        **fleet_env,
        "NOTIFY_SOCKET": notify_socket.path,
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [str(FLEET_BIN), "units", "launchd-run", "claim-sweeper", "--env-file", str(path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert notify_socket.wait_for("READY=1", timeout=30), notify_socket.messages
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    hosts = {json.loads(line).get("host") for line in out.splitlines() if line.startswith("{")}
    assert hosts == {"from-env-file"}, out


def test_launchd_exec_checks_loads_and_execs(fleet_env: dict[str, str], tmp_path: Path) -> None:
    show = ["/bin/sh", "-c", 'echo "key=$LITESTREAM_AZURE_ACCOUNT_KEY"; echo "$$"']
    open_file = _env_file(tmp_path, 0o640, "LITESTREAM_AZURE_ACCOUNT_KEY=s3cr3t==\n")
    cmd = ["units", "launchd-exec", "--name", "litestream-p1", "--env-file", str(open_file), "--"]
    res = run_fleet([*cmd, *show], fleet_env, tmp_path, timeout=60)
    assert res.returncode == 0 and "key=" not in res.stdout
    assert f"{open_file}: mode 0640" in res.stderr and "no.alai.fleet.litestream-p1" in res.stderr
    assert "s3cr3t" not in res.stderr
    open_file.chmod(0o600)
    res = run_fleet([*cmd, *show], fleet_env, tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "key=s3cr3t=="
    missing = run_fleet([*cmd, "/nonexistent/litestream"], fleet_env, tmp_path, timeout=60)
    assert missing.returncode == 1 and "cannot run /nonexistent/litestream" in missing.stderr

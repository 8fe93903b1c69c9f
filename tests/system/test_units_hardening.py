"""The system units' sandbox after the hostile-neighbours review: every generated system unit,
for a primary and a standby config (default and alai layouts), verifies clean and scores
<= 1.3 in `systemd-analyze security --offline=true`; fleet daemons get PrivateMounts,
ProcSubset=pid (shown to work by running each daemon under a /proc mounted subset=pid),
a private runtime directory and a private /tmp unless a configured path lives in the shared
/tmp; each unit loads only its own section's and the shared sections' credentials and env
file; `fleet units install --mode system` refuses units that would run as root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleet.registry import manifests
from tests.conftest import FLEET_BIN, run_fleet
from tests.units_support import (
    REPO,
    directives,
    exposure,
    gen,
    layout,
    load,
    one,
    verify,
    write_all,
    write_config,
)

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("units_byte_code")]

CONFIG_FILE = Path("/etc/alai-fleet/fleet.toml")  # where the units say it is (never read here)
DAEMONS = {m.name for m in manifests()}


def _host_config(tmp_path: Path, role: str, layout_name: str, body: str = "") -> Path:
    """A whole-fleet config for a host of ``role``; on the primary restore-loop's tier table
    exists, so the litestream companions are generated too."""
    tier_table = tmp_path / "databases.toml"
    tier_table.write_text((REPO / "config" / "databases.example.toml").read_text())
    databases = tier_table if role == "primary" else Path("/srv/alai-fleet/config/databases.toml")
    return write_config(
        tmp_path / "fleet.toml",
        Path("/srv/alai-fleet"),
        f'[restore_loop]\ndatabases_file = "{databases}"\n{body}',
        enable="all",
        fleet=f'role = "{role}"\nlayout = "{layout_name}"',
    )


@pytest.mark.parametrize("layout_name", ["default", "alai"])
@pytest.mark.parametrize("role", ["primary", "standby"])
def test_every_system_unit_scores_at_most_1_3_in_both_roles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, role: str, layout_name: str
) -> None:
    config = load(_host_config(tmp_path, role, layout_name), monkeypatch)
    files = gen(config, "systemd", layout("system", CONFIG_FILE)).files
    names = {n.removeprefix("alai-fleet-").removesuffix(".service") for n in files}
    if role == "primary":
        assert "email-reactor" in names and any(n.startswith("litestream-") for n in names)
    else:
        assert "restore-loop" in names and "email-reactor" not in names
    paths = write_all(files, tmp_path / "units")
    verify(paths)
    # a .timer runs nothing itself: systemd-analyze security scores services
    scores = {p.name: exposure(p) for p in paths if p.suffix == ".service"}
    assert all(score <= 1.3 for score in scores.values()), scores


def test_fleet_daemons_get_private_mounts_proc_subset_and_runtime_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load(_host_config(tmp_path, "primary", "default"), monkeypatch)
    system = gen(config, "systemd", layout("system", CONFIG_FILE)).files
    user = gen(config, "systemd", layout("user", CONFIG_FILE)).files
    for name, data in system.items():
        service = name.removeprefix("alai-fleet-").removesuffix(".service")
        d = directives(data.decode())
        assert one(d, "Service.PrivateMounts") == "yes", name
        assert one(d, "Service.PrivateTmp") == "yes", name
        assert one(d, "Service.ProtectProc") == "invisible", name
        assert one(d, "Service.RuntimeDirectory") == f"alai-fleet-{service}", name
        assert one(d, "Service.RuntimeDirectoryMode") == "0700", name
        if service in DAEMONS:  # Python, shown below to run with only /proc/<pid>
            assert one(d, "Service.ProcSubset") == "pid", name
            assert "ALAI_FLEET_BOOT_ID=%b" in d["Service.Environment"], name
        else:  # litestream (Go) is left as it was
            assert "Service.ProcSubset" not in d, name
    for name, data in user.items():
        d = directives(data.decode())
        assert "Service.ProcSubset" not in d and "Service.PrivateMounts" not in d, name
        assert one(d, "Service.RuntimeDirectory").startswith("alai-fleet-"), name


def test_a_status_file_in_the_shared_tmp_keeps_todays_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alai layout's ollama-health publishes /tmp/ollama-health.json (its symlink to the
    status file), which tier routing reads: its manifest says shared_tmp, so that one unit
    has no PrivateTmp; every other unit keeps a private /tmp."""
    config = load(_host_config(tmp_path, "primary", "alai"), monkeypatch)
    files = gen(config, "systemd", layout("system", CONFIG_FILE)).files
    for name, data in files.items():
        d = directives(data.decode())
        if name == "alai-fleet-ollama-health.service":
            assert "Service.PrivateTmp" not in d
            assert "-/tmp" in one(d, "Service.ReadWritePaths").split()
        else:
            assert one(d, "Service.PrivateTmp") == "yes", name


def _credentials(d: dict[str, list[str]]) -> set[str]:
    return {value.partition(":")[0] for value in d.get("Service.LoadCredential", [])}


def test_each_unit_loads_only_its_own_and_the_shared_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("slack", "paperless", "llm", "hivemind", "cf-id", "cf-secret"):
        (secrets / name).write_text("s3cret\n")
        (secrets / name).chmod(0o600)
    body = (
        f'[slack]\ntoken_file = "{secrets / "slack"}"\n'
        f'[email_reactor]\npaperless_token_file = "{secrets / "paperless"}"\n'
        f'llm_api_key_file = "{secrets / "llm"}"\n'
        f'cf_access_client_id_file = "{secrets / "cf-id"}"\n'
        f'cf_access_client_secret_file = "{secrets / "cf-secret"}"\n'
        f'[blueprint_watchdog]\nhivemind_token_file = "{secrets / "hivemind"}"\n'
    )
    config = load(_host_config(tmp_path, "primary", "default", body), monkeypatch)
    files = gen(config, "systemd", layout("system", CONFIG_FILE)).files
    own = {
        "email-reactor": {
            "email_reactor.paperless_token",
            "email_reactor.llm_api_key",
            "email_reactor.cf_access_client_id",
            "email_reactor.cf_access_client_secret",
        },
        "blueprint-watchdog": {"blueprint_watchdog.hivemind_token"},
    }
    seen = set()
    for name, data in files.items():
        service = name.removeprefix("alai-fleet-").removesuffix(".service")
        d = directives(data.decode())
        assert "s3cret" not in data.decode()
        if service not in DAEMONS:
            assert _credentials(d) == set(), name  # litestream gets only its env file
            continue
        seen.add(service)
        assert _credentials(d) == {"slack.token", *own.get(service, set())}, name
        for cred in _credentials(d):
            section, _, key = cred.partition(".")
            env = f"FLEET_{section.upper()}__{key.upper()}_FILE=%d/{cred}"
            assert env in d["Service.Environment"], (name, env)
        assert d["Service.EnvironmentFile"][:2] == [
            "-/etc/alai-fleet/fleet.env",
            f"-/etc/alai-fleet/fleet-{service}.env",
        ]
    assert {"email-reactor", "blueprint-watchdog", "claim-sweeper"} <= seen


_IN_PROC_SUBSET = (
    "mount -t proc -o subset=pid,hidepid=invisible proc /proc && "
    'test ! -e /proc/sys/kernel/random/boot_id && exec "$@"'
)


def _in_proc_subset(
    argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``argv`` in new PID and mount namespaces whose /proc shows only processes (what
    ProcSubset=pid and ProtectProc=invisible give a unit)."""
    return subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "sh", "-c", _IN_PROC_SUBSET, "sh", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_daemons_run_with_only_process_entries_in_proc(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    probe = _in_proc_subset(["/bin/true"], fleet_env, tmp_path)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a subset=pid /proc here: {probe.stderr.strip()}")
    boot = "0123456789abcdef0123456789abcdef"
    env = {**fleet_env, "ALAI_FLEET_BOOT_ID": boot}
    for name in sorted(DAEMONS - {"restore-loop"}):  # restore-loop runs only on a standby
        env[f"FLEET_{name.replace('-', '_').upper()}__METRICS_PORT"] = "0"
    env["FLEET_HEARTBEAT__HEALTH_PORT"] = "0"
    python = str(FLEET_BIN.parent / "python")
    seen = _in_proc_subset(
        [python, "-c", "from shared.clock import boot_id; print(boot_id())"], env, tmp_path
    )
    assert seen.stdout.strip() == "01234567-89ab-cdef-0123-456789abcdef", seen.stderr
    for name in sorted(DAEMONS - {"restore-loop"}):
        res = _in_proc_subset([str(FLEET_BIN), "run", name, "--once"], env, tmp_path)
        assert res.returncode == 0, (name, res.stdout[-2000:], res.stderr[-2000:])


def test_install_refuses_system_units_that_would_run_as_root(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "fleet.toml", tmp_path / "root")
    env = {k: v for k, v in fleet_env.items() if k != "SUDO_USER"}
    env.update(USER="root", LOGNAME="root")  # whoever runs it: root, as on a server
    base = ["units", "install", "--target", "systemd", "--mode", "system", "--config", str(cfg)]
    dest = tmp_path / "units"
    res = run_fleet([*base, "--dest", str(dest)], env, tmp_path)
    assert res.returncode == 78, res.stdout + res.stderr
    assert "refusing to install system units that run as root" in res.stderr
    assert "--allow-root" in res.stderr
    assert not dest.exists() or not any(dest.iterdir()), "nothing is written"
    named = run_fleet([*base, "--dest", str(dest), "--user", "root"], env, tmp_path)
    assert named.returncode == 78, "naming root explicitly is still root"
    allowed = run_fleet([*base, "--dest", str(dest), "--allow-root"], env, tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert "User=root" in (dest / "alai-fleet-claim-sweeper.service").read_text()
    other = tmp_path / "units-svc"
    account = run_fleet([*base, "--dest", str(other), "--user", "alai"], env, tmp_path)
    assert account.returncode == 0, account.stderr
    assert "User=alai" in (other / "alai-fleet-claim-sweeper.service").read_text()
    # generating them is not installing them: a warning only
    out = tmp_path / "generated"
    gen_res = run_fleet(
        [
            "units",
            "generate",
            "--target",
            "systemd",
            "--mode",
            "system",
            "--out",
            str(out),
            "--config",
            str(cfg),
        ],
        env,
        tmp_path,
    )
    assert gen_res.returncode == 0, gen_res.stderr
    assert "warning: system units would run as root" in gen_res.stderr

"""`fleet zakon validate FILE`: the fail-closed registry gate as hooks call it (real `fleet`
subprocesses for the exit-code contract), its settings lookup without pydantic, and the
promise that its import path is standard library only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.blueprint_watchdog.gate import zakon_validate_main
from daemons.blueprint_watchdog.gate_settings import (
    DEFAULT_LOG_KEEP,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_ROOT,
    GateConfigError,
    resolve_gate_settings,
    system_home,
)
from shared.sections import FleetSection
from tests.conftest import run_fleet
from tests.unit.test_blueprint_fixture_tree import (
    build_mixed_tree,
    make_mission_control,
    registry_entry,
    write,
    write_registry,
)


def validate(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_fleet(["zakon", "validate", *args], env, cwd, timeout=30)


def system_config(tmp_path: Path, root: Path, extra: str = "") -> Path:
    """A system config naming ``root`` (what /etc/alai-fleet/fleet.toml is on a host)."""
    return write(tmp_path / "etc/fleet.toml", f'[fleet]\nroot = "{root}"\n{extra}')


@pytest.mark.system
def test_exit_code_contract(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    tree = build_mixed_tree(fleet_root, fifo=False)
    f = tree.files
    config = ["--config", str(system_config(tmp_path, fleet_root))]

    def validate(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run_fleet(["zakon", "validate", *config, *args], env, cwd, timeout=30)

    ok = validate(fleet_env, tmp_path, str(f["active"]))
    assert ok.returncode == 0, ok.stderr
    assert "ZAKON_REGISTRY_PASS" in ok.stdout and "MC #101" in ok.stdout
    legacy = validate(fleet_env, tmp_path, str(f["legacy"]))
    assert legacy.returncode == 0 and "grandfathered" in legacy.stdout
    rogue = validate(fleet_env, tmp_path, str(f["rogue"]))
    assert rogue.returncode == 2
    assert "ZAKON_REGISTRY_BLOCK" in rogue.stderr and "not in the ZAKON registry" in rogue.stderr
    # A brand-new file (not on disk yet) is judged by its path alone.
    new = validate(fleet_env, tmp_path, str(fleet_root / "rules/zakon-new-idea.md"))
    assert new.returncode == 2
    # Not a ZAKON file: not gated, even with no registry at all.
    tree.registry.unlink()
    other = validate(fleet_env, tmp_path, str(fleet_root / "README.md"))
    assert other.returncode == 0 and "not gated" in other.stdout
    missing = validate(fleet_env, tmp_path, str(f["active"]))
    assert missing.returncode == 3
    assert "ZAKON_REGISTRY_ERROR: Registry file not found." in missing.stderr
    assert str(tree.registry) in missing.stderr and "FIX:" in missing.stderr
    write(tree.registry, '{"version": "1.0", "registry": [ {"zakon_id": "a",')
    corrupt = validate(fleet_env, tmp_path, str(f["active"]))
    assert corrupt.returncode == 3 and "not valid JSON" in corrupt.stderr


@pytest.mark.system
@pytest.mark.parametrize("args", [[], ["a.md", "b.md"], ["--no-such-flag", "x.md"], ["--registry"]])
def test_usage_errors_exit_64_never_2(
    fleet_env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    res = validate(fleet_env, tmp_path, *args)
    assert res.returncode == 64, (res.returncode, res.stderr)
    assert "usage: fleet zakon validate" in res.stderr


@pytest.mark.system
def test_help_exits_0(fleet_env: dict[str, str], tmp_path: Path) -> None:
    res = validate(fleet_env, tmp_path, "--help")
    assert res.returncode == 0 and "fail closed" in res.stdout


def run_in_process(
    *argv: str, config: Path | None = None, home: Path | str | None = None
) -> tuple[int, str, str]:
    """The gate as a generated gate script runs it: ``config`` is its system config."""
    out, err = io.StringIO(), io.StringIO()
    code = zakon_validate_main(
        list(argv),
        env={},
        out=out,
        err=err,
        system_config=config,
        home=str(home) if home is not None else None,
    )
    return code, out.getvalue(), err.getvalue()


def test_mission_control_task_must_carry_the_token(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = build_mixed_tree(root, fifo=False)
    config = system_config(tmp_path, root)
    target = str(tree.files["active"])
    assert run_in_process(target, config=config)[0] == 0
    make_mission_control(tree.mc_db, {101: "approved by nobody"})
    code, _out, err = run_in_process(target, config=config)
    assert code == 2 and "does not carry [CEO_APPROVED]" in err
    # The task vanished from Mission Control: blocked.
    make_mission_control(tree.mc_db, {})
    import sqlite3

    with sqlite3.connect(tree.mc_db) as conn:
        conn.execute("DELETE FROM tasks")
    code, _out, err = run_in_process(target, config=config)
    assert code == 2 and "#101 not found" in err
    # Mission Control unreadable: the task cannot be checked, so nothing passes (fail closed).
    tree.mc_db.write_bytes(b"not a database at all" * 50)
    code, _out, err = run_in_process(target, config=config)
    assert code == 3 and "Mission Control not readable" in err and "#101" in err


def test_mc_db_is_opened_read_only(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = build_mixed_tree(root, fifo=False)
    before = tree.mc_db.read_bytes()
    code, _, _ = run_in_process(str(tree.files["active"]), config=system_config(tmp_path, root))
    assert code == 0
    assert tree.mc_db.read_bytes() == before
    assert not Path(str(tree.mc_db) + "-wal").exists()


def test_tilde_means_the_fleet_users_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = home / "system"
    write(root / "rules/zakon-x.md", "# x\n")
    write_registry(
        root / "rules/zakon-registry.json",
        [registry_entry("x", "~/system/rules/zakon-x.md", status="legacy-pre-registry")],
    )
    config = write(tmp_path / "etc/fleet.toml", '[fleet]\nroot = "~/system"\n')
    kw = {"config": config, "home": home}
    assert run_in_process("~/system/rules/zakon-x.md", **kw)[0] == 0
    assert run_in_process(str(root / "rules/zakon-x.md"), **kw)[0] == 0
    assert run_in_process(str(root / "rules/zakon-y.md"), **kw)[0] == 2


def test_status_not_allowing_writes_is_blocked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    path = root / "rules/zakon-old.md"
    write_registry(
        root / "rules/zakon-registry.json",
        [registry_entry("old", str(path), status="revoked", mc_task=5)],
    )
    code, _, err = run_in_process(str(path), config=system_config(tmp_path, root))
    assert code == 2 and "'revoked' does not allow writes" in err


def test_hostile_registry_blocks_or_errors_never_crashes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = build_mixed_tree(root, fifo=False)
    config = system_config(tmp_path, root)
    target = str(tree.files["active"])
    text = tree.registry.read_text()
    tree.registry.write_text(text.replace('"mc_task": 101', '"mc_task": 100463100463100463100463'))
    code, _out, err = run_in_process(target, config=config)
    assert code == 2 and "mc_task" in err, err
    tree.registry.write_text('{"registry": ' + "[" * 100_000)
    code, _out, err = run_in_process(target, config=config)
    assert code == 3 and "ZAKON_REGISTRY_ERROR" in err and "nested too deeply" in err


# --- settings lookup (no pydantic) ---------------------------------------------------------


def test_settings_come_from_the_system_config_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the environment, not the working directory: the system config file, else the
    embedded defaults; explicit flags replace it and are listed as overrides."""
    home = str(tmp_path / "home")
    toml = write(
        tmp_path / "etc/fleet.toml",
        '[fleet]\nroot = "~/toml-root"\nlog_keep = 2\n'
        '[blueprint_watchdog]\nregistry_file = "<root>/custom/reg.json"\n'
        'blueprint_sections = ["Purpose"]\n[mission_control]\ndb = "/srv/mc.db"\n',
    )
    s = resolve_gate_settings(system_config=toml, home=home)
    assert s.config_file == toml and s.overrides == ()
    assert s.root == Path(home) / "toml-root"
    assert s.registry_file == Path(home) / "toml-root/custom/reg.json"
    assert s.mission_control_db == Path("/srv/mc.db")
    assert s.override_log == Path(home) / "toml-root/logs/blueprint-override.jsonl"
    assert s.doc_types[0].sections == ("Purpose",) and s.log_keep == 2
    # ./fleet.toml, $FLEET_CONFIG and FLEET_* are never read.
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "fleet.toml", '[fleet]\nroot = "/cwd-root"\n')
    monkeypatch.setenv("FLEET_CONFIG", str(tmp_path / "fleet.toml"))
    monkeypatch.setenv("FLEET_FLEET__ROOT", "/env-root")
    monkeypatch.setenv("FLEET_BLUEPRINT_WATCHDOG__REGISTRY_FILE", "/env/reg.json")
    monkeypatch.setenv("HOME", "/env-home")
    assert resolve_gate_settings(system_config=toml, home=home) == s
    # The hook's own flags replace it, and say so.
    s = resolve_gate_settings(root="/flag-root", registry="/r.json", system_config=toml, home=home)
    assert s.root == Path("/flag-root") and s.registry_file == Path("/r.json")
    assert s.overrides == ("--root /flag-root", "--registry /r.json")
    other = write(tmp_path / "other.toml", '[fleet]\nroot = "/other-root"\n')
    s = resolve_gate_settings(config=str(other), system_config=toml, home=home)
    assert s.root == Path("/other-root") and s.overrides == (f"--config {other}",)
    # An embedded system config that is gone fails closed.
    with pytest.raises(GateConfigError, match="not found"):
        resolve_gate_settings(system_config=tmp_path / "gone.toml", home=home)


def test_home_is_the_users_not_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    monkeypatch.setenv("HOME", "/somewhere/else")
    assert system_home() == pwd.getpwuid(os.getuid()).pw_dir


@pytest.mark.parametrize(
    "text",
    ["[fleet\nroot=", "fleet = 3\n", "[blueprint_watchdog]\nblueprint_sections = ['(']\n"],
)
def test_bad_config_fails_closed(tmp_path: Path, text: str) -> None:
    config = write(tmp_path / "fleet.toml", text)
    with pytest.raises(GateConfigError):
        resolve_gate_settings(config=str(config), home=str(tmp_path))
    code, _, err = run_in_process("rules/zakon-x.md", "--config", str(config), home=tmp_path)
    assert code == 3 and "ZAKON_REGISTRY_ERROR" in err
    code, _, err = run_in_process("rules/zakon-x.md", config=config, home=tmp_path)
    assert code == 3 and "ZAKON_REGISTRY_ERROR" in err


def test_missing_explicit_config_fails_closed(tmp_path: Path) -> None:
    code, _, err = run_in_process("zakon-x.md", "--config", str(tmp_path / "nope.toml"))
    assert code == 3 and "not found" in err


def test_gate_defaults_mirror_the_fleet_section() -> None:
    defaults = FleetSection()
    assert Path(DEFAULT_ROOT) == FleetSection.model_fields["root"].default
    assert defaults.log_max_bytes == DEFAULT_LOG_MAX_BYTES
    assert defaults.log_keep == DEFAULT_LOG_KEEP


def test_gate_path_imports_only_the_standard_library(tmp_path: Path) -> None:
    """What `fleet zakon validate` / `fleet blueprint validate` load, through the real entry
    point: nothing outside the standard library and this project."""
    code = (
        "import io, json, sys\n"
        "from fleet.entry import main\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(b'## Purpose\\n'))\n"
        "for argv in (['zakon', 'validate', 'rules/zakon-a.md'],\n"
        "             ['blueprint', 'validate', 'x/BUILD-BLUEPRINT.md', '--stdin']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "mods = {m.split('.')[0] for m in sys.modules}\n"
        "print(json.dumps(sorted(m for m in mods if m not in sys.stdlib_module_names)))\n"
    )
    env = {"HOME": str(tmp_path), "PATH": "/bin"}
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert res.returncode == 0, res.stderr
    foreign = set(json.loads(res.stdout.strip().splitlines()[-1]))
    # "_virtualenv"/"__editable__*" are interpreter plumbing, not imports of ours.
    foreign = {m for m in foreign if not m.startswith(("_", "__editable__"))}
    assert foreign <= {"shared", "daemons", "fleet"}, foreign

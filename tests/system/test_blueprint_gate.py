"""`fleet blueprint validate FILE [--stdin]`: the 0/2/3 contract for one document, the
BLUEPRINT_OVERRIDE escape valve and its audit line."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from daemons.blueprint_watchdog.gate import blueprint_validate_main
from tests.conftest import run_fleet
from tests.unit.test_blueprint_fixture_tree import (
    SECTIONS,
    blueprint_text,
    build_mixed_tree,
    make_mission_control,
    write,
)

FOUR = tuple(s for s in SECTIONS if s != "Rollback")


ROOT = "GATE_TEST_ROOT"  # the fixture's key for the fleet root (not an environment variable)


def gate(*argv: str, env: dict[str, str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """The gate in-process, as a generated gate script runs it: its system config (written
    next to the root) names ``env[ROOT]``; the rest of ``env`` is the caller's environment."""
    root = Path(env[ROOT])
    config = root.parent / "etc/fleet.toml"
    if not config.exists():
        write(config, f'[fleet]\nroot = "{root}"\n')
    out, err = io.StringIO(), io.StringIO()
    code = blueprint_validate_main(
        list(argv),
        env={k: v for k, v in env.items() if k != ROOT},
        stdin=io.BytesIO(stdin) if stdin is not None else None,
        out=out,
        err=err,
        system_config=config,
    )
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "root"
    root.mkdir()
    make_mission_control(
        root / "databases/mission-control.db",
        {7: "[CEO_APPROVED] waive the blueprint", 100463: "Board: [CEO_APPROVED]"},
    )
    return {ROOT: str(root)}


def audit_lines(env: dict[str, str]) -> list[dict[str, object]]:
    path = Path(env[ROOT]) / "logs/blueprint-override.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.system
def test_stdin_contract_through_fleet(fleet_env: dict[str, str], tmp_path: Path) -> None:
    # The plain `fleet` verb: no system config on this machine, so the embedded defaults.
    target = str(tmp_path / "svc/BUILD-BLUEPRINT.md")
    good = run_fleet(
        ["blueprint", "validate", target, "--stdin"], fleet_env, tmp_path, input=blueprint_text()
    )
    assert good.returncode == 0, good.stderr
    assert "BLUEPRINT_PASS" in good.stdout and "5/5" in good.stdout
    four = run_fleet(
        ["blueprint", "validate", target, "--stdin"],
        fleet_env,
        tmp_path,
        input=blueprint_text(sections=FOUR),
    )
    assert four.returncode == 2
    assert "4/5" in four.stderr and "Rollback" in four.stderr and "FIX:" in four.stderr
    usage = run_fleet(["blueprint", "validate", "--stdin"], fleet_env, tmp_path)
    assert usage.returncode == 64 and "usage:" in usage.stderr
    bad_type = run_fleet(["blueprint", "validate", target, "--type", "nope"], fleet_env, tmp_path)
    assert bad_type.returncode == 64


@pytest.mark.parametrize(
    ("text", "code", "needle"),
    [
        (blueprint_text(), 0, "5/5"),
        (blueprint_text(sections=FOUR), 2, "missing section(s) Rollback"),
        (blueprint_text(verified_days_ago=31), 2, "31 days ago (max 30)"),
        (blueprint_text(verified_days_ago=None), 2, "no 'Last-Verified"),
        (blueprint_text(verified_days_ago=30), 0, "5/5"),
    ],
)
def test_file_on_disk(
    env: dict[str, str], tmp_path: Path, text: str, code: int, needle: str
) -> None:
    path = write(tmp_path / "svc/DEPLOY-MAP.md", text)
    got, out, err = gate(str(path), env=env)
    assert got == code, err
    assert needle in (out + err)


def test_stdin_judges_the_new_content_not_the_file(env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "svc/BUILD-BLUEPRINT.md", blueprint_text())
    code, _, err = gate(str(path), "--stdin", env=env, stdin=blueprint_text(sections=FOUR).encode())
    assert code == 2 and "4/5" in err
    code, _, _ = gate(
        str(tmp_path / "new/BUILD-BLUEPRINT.md"),
        "--stdin",
        env=env,
        stdin=blueprint_text().encode(),
    )
    assert code == 0


def test_hostile_content(env: dict[str, str], tmp_path: Path) -> None:
    target = str(tmp_path / "BUILD-BLUEPRINT.md")
    code, _, err = gate(target, "--stdin", env=env, stdin=b"## Purpose\n\xff\xfe garbage")
    assert code == 2 and "UTF-8" in err
    code, _, err = gate(target, "--stdin", env=env, stdin=b"#" * 1_000_001)
    assert code == 2 and "over" in err


def test_unreadable_file_fails_closed(env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = gate(str(tmp_path / "missing/BUILD-BLUEPRINT.md"), env=env)
    assert code == 3 and "--stdin" in err


def test_other_documents_are_not_gated(env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = gate(str(tmp_path / "README.md"), env=env)
    assert code == 0 and "not gated" in out
    # --type forces a schema on any file.
    path = write(tmp_path / "notes.md", "## Purpose\n")
    assert gate(str(path), "--type", "blueprint", env=env)[0] == 2


def test_zakon_file_also_needs_its_registry_entry(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tree = build_mixed_tree(root, fifo=False)
    env = {ROOT: str(root)}
    assert gate(str(tree.files["active"]), env=env)[0] == 0
    code, _, err = gate(str(tree.files["rogue"]), env=env)
    assert code == 2 and "ZAKON_REGISTRY_BLOCK" in err
    # The override waives schema and liveness, never the registry.
    code, _, err = gate(
        str(tree.files["rogue"]), env={**env, "BLUEPRINT_OVERRIDE": "ceo-approved-101"}
    )
    assert code == 2
    tree.registry.write_text("{broken")
    assert gate(str(tree.files["active"]), env=env)[0] == 3


def test_override_passes_and_is_audited(env: dict[str, str], tmp_path: Path) -> None:
    target = str(tmp_path / "svc/BUILD-BLUEPRINT.md")
    content = blueprint_text(sections=FOUR, verified_days_ago=90).encode()
    code, out, err = gate(
        target, "--stdin", env={**env, "BLUEPRINT_OVERRIDE": "ceo-approved-100463"}, stdin=content
    )
    assert code == 0, err
    assert "override" in out and "MC #100463" in err
    lines = audit_lines(env)
    assert len(lines) == 1
    line = lines[0]
    assert line["accepted"] is True and line["mc_task"] == 100463
    assert line["file"] == target and line["score"] == "4/5"
    assert line["waived"] == ["schema", "stale"] and line["event"] == "blueprint_override"
    log = Path(env[ROOT]) / "logs/blueprint-override.jsonl"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # Append-only: a second use adds a line and keeps the first.
    gate(target, "--stdin", env={**env, "BLUEPRINT_OVERRIDE": "ceo-approved-7"}, stdin=content)
    assert [entry["mc_task"] for entry in audit_lines(env)] == [100463, 7]


@pytest.mark.parametrize("value", ["yes", "ceo-approved-", "ceo-approved-12x", "CEO-APPROVED-1"])
def test_malformed_override_is_refused_and_audited(
    env: dict[str, str], tmp_path: Path, value: str
) -> None:
    code, _, err = gate(
        str(tmp_path / "BUILD-BLUEPRINT.md"),
        "--stdin",
        env={**env, "BLUEPRINT_OVERRIDE": value},
        stdin=blueprint_text(sections=FOUR).encode(),
    )
    assert code == 2 and "ignored" in err
    (line,) = audit_lines(env)
    assert line["accepted"] is False and "ceo-approved-<MC_ID>" in str(line["refused_reason"])


def test_override_naming_a_missing_task_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    make_mission_control(Path(env[ROOT]) / "databases/mission-control.db", {5: "[CEO_APPROVED]"})
    content = blueprint_text(sections=FOUR).encode()
    target = str(tmp_path / "BUILD-BLUEPRINT.md")
    code, _, err = gate(
        target, "--stdin", env={**env, "BLUEPRINT_OVERRIDE": "ceo-approved-6"}, stdin=content
    )
    assert code == 2 and "#6 does not exist" in err
    code, _, _ = gate(
        target, "--stdin", env={**env, "BLUEPRINT_OVERRIDE": "ceo-approved-5"}, stdin=content
    )
    assert code == 0
    assert [(e["mc_task"], e["accepted"]) for e in audit_lines(env)] == [(6, False), (5, True)]


def test_no_audit_log_no_override(env: dict[str, str], tmp_path: Path) -> None:
    logs = Path(env[ROOT]) / "logs"
    logs.write_text("a file where the logs directory should be")
    code, _, err = gate(
        str(tmp_path / "BUILD-BLUEPRINT.md"),
        "--stdin",
        env={**env, "BLUEPRINT_OVERRIDE": "ceo-approved-1"},
        stdin=blueprint_text(sections=FOUR).encode(),
    )
    assert code == 2 and "cannot write the audit log" in err


def test_internal_error_fails_closed(env: dict[str, str], tmp_path: Path) -> None:
    class Broken(io.BytesIO):
        def read(self, *_: object) -> bytes:
            raise RuntimeError("boom")

    out, err = io.StringIO(), io.StringIO()
    code = blueprint_validate_main(
        [str(tmp_path / "BUILD-BLUEPRINT.md"), "--stdin"],
        env={},
        stdin=Broken(),
        out=out,
        err=err,
        system_config=write(tmp_path / "etc/fleet.toml", f'[fleet]\nroot = "{env[ROOT]}"\n'),
    )
    assert code == 3 and "failing closed" in err.getvalue()

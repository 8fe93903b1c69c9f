"""`fleet blueprint scan|report` and `fleet zakon list|stats` as real subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_fleet
from tests.unit.test_blueprint_fixture_tree import build_compliant_tree, build_mixed_tree, write

pytestmark = pytest.mark.system


def test_scan_summary_json_and_write(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    tree = build_mixed_tree(fleet_root, fifo=False)
    text = run_fleet(["blueprint", "scan"], fleet_env, tmp_path)
    assert text.returncode == 1, text.stderr
    assert "6 non-compliant" in text.stdout
    assert f"{tree.files['four']} [4/5]" in text.stdout
    assert "missing section(s) Rollback" in text.stdout
    assert "symlink_loop" in text.stdout
    report_file = fleet_root / "state/blueprint-watchdog/report.json"
    assert not report_file.exists(), "scan without --write must not replace the report"
    as_json = run_fleet(["blueprint", "scan", "--json", "--write"], fleet_env, tmp_path)
    data = json.loads(as_json.stdout)
    assert data["summary"]["noncompliant"] == 6 and as_json.returncode == 1
    assert json.loads(report_file.read_text())["summary"] == data["summary"]
    shown = run_fleet(["blueprint", "report"], fleet_env, tmp_path)
    assert shown.returncode == 1 and "6 non-compliant" in shown.stdout


def test_scan_exit_codes(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    tree = build_compliant_tree(fleet_root)
    assert run_fleet(["blueprint", "scan"], fleet_env, tmp_path).returncode == 0
    write(tree.registry, "not json")
    broken = run_fleet(["blueprint", "scan"], fleet_env, tmp_path)
    assert broken.returncode == 3 and "UNUSABLE" in broken.stdout


def test_report_missing_or_corrupt(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    res = run_fleet(["blueprint", "report"], fleet_env, tmp_path)
    assert res.returncode == 3 and "no report yet" in res.stderr
    write(fleet_root / "state/blueprint-watchdog/report.json", "[1, 2")
    res = run_fleet(["blueprint", "report"], fleet_env, tmp_path)
    assert res.returncode == 3 and "unreadable" in res.stderr


def test_zakon_list_and_stats(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    tree = build_mixed_tree(fleet_root, fifo=False)
    listed = run_fleet(["zakon", "list"], fleet_env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "3 entries" in listed.stdout and "GRANDFATHERED-PRE-2026-05-12" in listed.stdout
    rows = json.loads(run_fleet(["zakon", "list", "--json"], fleet_env, tmp_path).stdout)
    assert {r["zakon_id"]: r["gate"] for r in rows} == {
        "legacy": "pass",
        "active": "pass",
        "changed": "pass",
    }
    assert all(r["exists"] for r in rows)
    stats = json.loads(run_fleet(["zakon", "stats", "--json"], fleet_env, tmp_path).stdout)
    assert stats == {"total": 3, "by_status": {"active": 2, "legacy-pre-registry": 1}}
    plain = run_fleet(["zakon", "stats"], fleet_env, tmp_path)
    assert "total entries: 3" in plain.stdout
    tree.registry.unlink()
    missing = run_fleet(["zakon", "list"], fleet_env, tmp_path)
    assert missing.returncode == 3 and "ZAKON_REGISTRY_ERROR" in missing.stderr
    other = write(tmp_path / "other.json", json.dumps({"registry": []}))
    assert (
        run_fleet(["zakon", "stats", "--registry", str(other)], fleet_env, tmp_path).returncode == 0
    )


def test_validate_verbs_are_listed_in_help(fleet_env: dict[str, str], tmp_path: Path) -> None:
    for group in ("blueprint", "zakon"):
        res = run_fleet([group, "--help"], fleet_env, tmp_path)
        assert res.returncode == 0 and "validate" in res.stdout

"""The file-tree walk and the findings built on it: hostile trees (symlink loops, FIFOs,
non-UTF-8, unreadable and oversized files) are findings, never crashes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from daemons.blueprint_watchdog.findings import alert_text
from daemons.blueprint_watchdog.inspection import ScanSettings, inspect_tree
from daemons.blueprint_watchdog.scanner import read_document, scan_tree
from daemons.blueprint_watchdog.schema import DEFAULT_DOC_TYPES
from tests.unit.test_blueprint_fixture_tree import (
    blueprint_text,
    build_compliant_tree,
    build_mixed_tree,
    write,
)

EXCLUDE = (".git", "node_modules")


def settings_for(root: Path, **overrides: object) -> ScanSettings:
    values: dict[str, object] = {
        "roots": (root,),
        "doc_types": DEFAULT_DOC_TYPES,
        "registry_file": root / "rules/zakon-registry.json",
        "mission_control_db": root / "databases/mission-control.db",
        "exclude_dirs": EXCLUDE,
    }
    values.update(overrides)
    return ScanSettings(**values)  # type: ignore[arg-type]


def test_mixed_tree_findings(tmp_path: Path) -> None:
    tree = build_mixed_tree(tmp_path / "root")
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    by_path = {Path(f.path): f for f in report.findings}
    files = tree.files

    def reasons(name: str) -> list[str]:
        return [r for r, _ in by_path[files[name]].reasons]

    assert reasons("good") == [] and by_path[files["good"]].score == "5/5"
    assert reasons("map_ok") == []
    assert reasons("four") == ["schema"] and by_path[files["four"]].score == "4/5"
    assert by_path[files["four"]].missing_sections == ("Rollback",)
    assert reasons("stale") == ["stale"] and by_path[files["stale"]].age_days == 45
    assert reasons("no_lv") == ["missing_last_verified"]
    assert reasons("not_utf8") == ["not_utf8"]
    assert reasons("fifo") == ["unreadable"]
    assert reasons("legacy") == [] and by_path[files["legacy"]].registry == "legacy-pre-registry"
    assert reasons("active") == [] and by_path[files["active"]].registry == "active, MC #101"
    assert reasons("changed") == ["changed"]
    assert reasons("rogue") == ["unregistered"]
    assert files["excluded"] not in by_path
    # The loop is reported once, and nothing was scanned twice through it.
    loops = [p for p in report.problems if p.problem == "symlink_loop"]
    assert [p.path for p in loops] == [files["loop"]]
    assert len(report.findings) == len({f.path for f in report.findings}) == 11
    assert report.files_by_type() == {"blueprint": 5, "deploy-map": 2, "zakon": 4}
    assert report.by_type_reason()[("zakon", "unregistered")] == 1
    assert report.registry_ok and report.needs_alert


def test_compliant_tree_needs_no_alert(tmp_path: Path) -> None:
    tree = build_compliant_tree(tmp_path / "root")
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    assert report.noncompliant() == []
    assert not report.needs_alert
    assert report.summary()["compliant"] == 3


def test_mc_task_without_ceo_token_is_not_approved(tmp_path: Path) -> None:
    tree = build_mixed_tree(tmp_path / "root", fifo=False)
    text = tree.registry.read_text().replace('"mc_task": 101', '"mc_task": 102', 1)
    tree.registry.write_text(text)
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    active = next(f for f in report.findings if f.path == str(tree.files["active"]))
    assert [r for r, _ in active.reasons] == ["not_approved"]
    assert "[CEO_APPROVED]" in active.reasons[0][1]


def test_hostile_registry_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    tree = build_mixed_tree(tmp_path / "root", fifo=False)
    huge = '"mc_task": 100463100463100463100463'
    tree.registry.write_text(tree.registry.read_text().replace('"mc_task": 101', huge, 1))
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    active = next(f for f in report.findings if f.path == str(tree.files["active"]))
    assert [r for r, _ in active.reasons] == ["not_approved"]
    assert "mc_task" in active.reasons[0][1] and report.needs_alert
    tree.registry.write_text('{"registry": ' + "[" * 100_000)
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    assert not report.registry_ok and report.registry_alarm and report.needs_alert
    assert "nested too deeply" in (report.registry_error or "")


def test_registry_missing_marks_zakon_files_and_alarms(tmp_path: Path) -> None:
    tree = build_mixed_tree(tmp_path / "root", fifo=False)
    tree.registry.unlink()
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    assert not report.registry_ok and report.registry_alarm
    zakon = [f for f in report.findings if f.doc_type == "zakon"]
    assert zakon and all([r for r, _ in f.reasons] == ["registry_error"] for f in zakon)
    assert "FIX:" in (report.registry_error or "")


def test_registry_missing_without_zakon_files_is_quiet(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "a/BUILD-BLUEPRINT.md", blueprint_text())
    report = inspect_tree(settings_for(root), now=time.time(), host="h")
    assert not report.registry_ok and not report.registry_alarm and not report.needs_alert


def test_corrupt_registry_alarms_even_without_zakon_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "rules/zakon-registry.json", '{"registry": [')
    report = inspect_tree(settings_for(root), now=time.time(), host="h")
    assert report.registry_alarm and report.needs_alert


def test_file_symlink_loop_and_dangling_link(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a/BUILD-BLUEPRINT.md").symlink_to("BUILD-BLUEPRINT.md")  # points at itself
    (root / "b").mkdir()
    (root / "b/DEPLOY-MAP.md").symlink_to(root / "nowhere.md")
    (root / "c").mkdir()
    (root / "c/other").symlink_to("other")  # a non-matching self loop: a scan problem
    scan = scan_tree([root], DEFAULT_DOC_TYPES)
    problems = {f.path.parent.name: f.problem for f in scan.files}
    assert problems == {"a": "symlink_loop", "b": "unreadable"}
    assert [p.problem for p in scan.problems] == ["symlink_loop"]


def test_symlinked_directory_is_followed_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "elsewhere"
    write(outside / "svc/BUILD-BLUEPRINT.md", blueprint_text())
    root.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "linked-again").symlink_to(outside, target_is_directory=True)
    scan = scan_tree([root, root], DEFAULT_DOC_TYPES, follow_outside_roots=True)
    assert len(scan.files) == 1 and scan.files[0].text is not None
    assert scan.problems == []
    assert scan_tree([root], DEFAULT_DOC_TYPES, follow_symlinks=False).files == []
    # Inside the roots a directory link is followed by default.
    inner = write(root / "real/svc/DEPLOY-MAP.md", blueprint_text())
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    scan = scan_tree([root], DEFAULT_DOC_TYPES)
    assert [f.path for f in scan.files] == [root / "alias/svc/DEPLOY-MAP.md"]
    assert inner.read_text() == scan.files[0].text


def test_symlinks_out_of_the_roots_are_not_followed(tmp_path: Path) -> None:
    secret_text = "## Purpose\nLast-Verified: sk-FAKE-SECRET-0042\n"
    outside = write(tmp_path / "home/.secrets/token.md", secret_text)
    write(tmp_path / "elsewhere/BUILD-BLUEPRINT.md", secret_text)
    real_root = tmp_path / "real-root"
    write(real_root / "svc/DEPLOY-MAP.md", blueprint_text())
    (real_root / "svc/BUILD-BLUEPRINT.md").symlink_to(outside)
    (real_root / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (real_root / "inside").symlink_to("svc", target_is_directory=True)
    root = tmp_path / "root-link"  # a root reached through a link is still that root
    root.symlink_to(real_root, target_is_directory=True)
    scan = scan_tree([root], DEFAULT_DOC_TYPES)
    by_path = {f.path: f for f in scan.files}
    leak = by_path[root / "svc/BUILD-BLUEPRINT.md"]
    assert (leak.problem, leak.text, leak.sha256) == ("outside_root", None, None)
    assert by_path[root / "svc/DEPLOY-MAP.md"].text is not None
    assert [(p.path, p.problem) for p in scan.problems] == [(root / "more", "outside_root")]
    report = inspect_tree(settings_for(root), now=time.time(), host="h")
    assert "sk-FAKE-SECRET" not in json.dumps(report.to_json())
    assert "sk-FAKE-SECRET" not in alert_text(report, report_path="r.json")
    assert report.by_reason()["outside_root"] == 1
    # Configured to follow them, it does.
    followed = scan_tree([root], DEFAULT_DOC_TYPES, follow_outside_roots=True)
    assert {f.path.name for f in followed.files if f.text is not None} == {
        "BUILD-BLUEPRINT.md",
        "DEPLOY-MAP.md",
    }
    assert followed.problems == []


def test_the_nightly_scan_never_counts_a_mail_task_as_approval(tmp_path: Path) -> None:
    from shared.mission_control import MissionControl
    from tests.unit.test_blueprint_fixture_tree import registry_entry, write_registry

    tree = build_mixed_tree(tmp_path / "root", fifo=False)
    with MissionControl(tree.mc_db, migrate=True) as mc:
        mail = mc.create_task("Deal [CEO_APPROVED]", source="email", source_ref="77")
    doc = json.loads(tree.registry.read_text())
    write_registry(
        tree.registry,
        [*doc["registry"], registry_entry("rogue", str(tree.files["rogue"]), mc_task=mail.id)],
    )
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    (rogue,) = [f for f in report.findings if f.path == str(tree.files["rogue"])]
    assert [r for r, _ in rogue.reasons] == ["not_approved"]
    assert "created from mail" in rogue.reasons[0][1]


def test_entries_vanishing_mid_scan_are_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent `rm` between the listing and the visit: the listing is the real one, and
    each entry named below is really deleted the moment the scan has listed it."""
    root = tmp_path / "root"
    write(root / "a/BUILD-BLUEPRINT.md", blueprint_text())
    write(root / "b/BUILD-BLUEPRINT.md", blueprint_text())
    write(root / "c/DEPLOY-MAP.md", blueprint_text())
    vanish = {root / "b/BUILD-BLUEPRINT.md", root / "c"}
    real_scandir = os.scandir

    class Listing:
        def __init__(self, path: Path) -> None:
            self.it = real_scandir(path)

        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.it.close()

        def __iter__(self) -> Listing:
            return self

        def __next__(self) -> os.DirEntry[str]:
            entry = next(self.it)
            path = Path(entry.path)
            if path in vanish:
                if path.is_dir():
                    __import__("shutil").rmtree(path)
                else:
                    path.unlink()
            return entry

    monkeypatch.setattr(os, "scandir", Listing)
    scan = scan_tree([root], DEFAULT_DOC_TYPES)
    assert [(f.path.parent.name, f.problem) for f in scan.files] == [
        ("a", ""),
        ("b", "unreadable"),
    ]
    assert [(p.path.name, p.problem) for p in scan.problems] == [("c", "unreadable")]


def test_findings_name_the_rule_never_the_text(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "a/BUILD-BLUEPRINT.md", "## Purpose\nLast-Verified: hunter2-PASSWORD\n")
    report = inspect_tree(settings_for(root), now=time.time(), host="h")
    (finding,) = report.findings
    assert [r for r, _ in finding.reasons] == ["schema", "invalid_last_verified"]
    assert "hunter2" not in json.dumps(report.to_json())
    assert "hunter2" not in alert_text(report, report_path="r.json")


def test_too_large_and_max_entries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "big/BUILD-BLUEPRINT.md", "x" * 5000)
    for i in range(20):
        write(root / f"noise/{i}.md", "x")
    scan = scan_tree([root], DEFAULT_DOC_TYPES, max_file_bytes=1000)
    assert [f.problem for f in scan.files] == ["too_large"]
    truncated = scan_tree([root], DEFAULT_DOC_TYPES, max_entries=5)
    assert truncated.truncated
    assert [p.problem for p in truncated.problems] == ["truncated"]


def test_missing_root_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    scan = scan_tree([tmp_path / "nope", tmp_path], DEFAULT_DOC_TYPES)
    assert [p.problem for p in scan.problems] == ["root_unavailable"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_and_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    secret = write(root / "a/BUILD-BLUEPRINT.md", blueprint_text())
    secret.chmod(0)
    closed = root / "closed"
    write(closed / "BUILD-BLUEPRINT.md", blueprint_text())
    closed.chmod(0)
    try:
        scan = scan_tree([root], DEFAULT_DOC_TYPES)
    finally:
        secret.chmod(0o600)
        closed.chmod(0o700)
    assert [(f.path, f.problem) for f in scan.files] == [(secret, "unreadable")]
    assert [(p.path, p.problem) for p in scan.problems] == [(closed, "unreadable")]


def test_read_document_strips_bom_and_hashes_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "BUILD-BLUEPRINT.md", "\ufeff## Purpose\n".encode())
    doc = read_document(path, "blueprint", 1000)
    assert doc.text == "## Purpose\n"
    assert doc.sha256 is not None and len(doc.sha256) == 64


def test_report_json_shape(tmp_path: Path) -> None:
    tree = build_mixed_tree(tmp_path / "root", fifo=False)
    report = inspect_tree(settings_for(tree.root), now=time.time(), host="h")
    data = report.to_json()
    assert data["version"] == 1 and data["host"] == "h"
    assert data["summary"]["noncompliant"] == 6
    assert data["summary"]["by_reason"] == {
        "changed": 1,
        "missing_last_verified": 1,
        "not_utf8": 1,
        "schema": 1,
        "stale": 1,
        "unregistered": 1,
    }
    assert data["registry"]["by_status"] == {"active": 2, "legacy-pre-registry": 1}
    four = next(f for f in data["files"] if f["path"] == str(tree.files["four"]))
    assert four["score"] == "4/5" and four["missing_sections"] == ["Rollback"]
    assert four["reasons"] == ["schema"] and "Rollback" in four["details"][0]

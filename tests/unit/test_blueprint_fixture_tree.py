"""Fixture trees for the blueprint-watchdog tests (imported by the other test_blueprint* and
test_zakon* modules), and a check that the mixed tree really holds every case it names.

Dates are relative to the real UTC today, because `fleet run` subprocesses read the clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

SECTIONS = ("Purpose", "Architecture", "Deploy", "Rollback", "Verification")


def utc_today() -> date:
    return datetime.now(UTC).date()


def blueprint_text(
    *,
    sections: tuple[str, ...] = SECTIONS,
    verified_days_ago: int | None = 3,
    title: str = "Service",
) -> str:
    lines = [f"# {title} blueprint", ""]
    if verified_days_ago is not None:
        verified = utc_today() - timedelta(days=verified_days_ago)
        lines += [f"Last-Verified: {verified.isoformat()}", ""]
    for index, name in enumerate(sections, 1):
        lines += [f"## {index}. {name}", "", f"Text about {name.lower()}.", ""]
    return "\n".join(lines)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_mission_control(db: Path, tasks: dict[int, str]) -> Path:
    """A mission-control.db with a tasks table as Mission Control has it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '',"
        " description TEXT, status TEXT DEFAULT 'open')"
    )
    for task_id, description in tasks.items():
        conn.execute(
            "INSERT OR REPLACE INTO tasks(id, title, description) VALUES (?, ?, ?)",
            (task_id, f"ZAKON rule {task_id}", description),
        )
    conn.commit()
    conn.close()
    return db


def registry_entry(
    zakon_id: str,
    file_path: str,
    *,
    status: str = "active",
    mc_task: Any = None,
    token: str = "[CEO_APPROVED]",
    published_sha256: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "zakon_id": zakon_id,
        "file_path": file_path,
        "mc_task": mc_task,
        "ceo_approved_token": token,
        "status": status,
    }
    if published_sha256 is not None:
        entry["published_sha256"] = published_sha256
    return entry


def write_registry(path: Path, entries: list[dict[str, Any]]) -> Path:
    doc = {
        "version": "1.0",
        "description": "Registry of ZAKON rule files (test fixture)",
        "policy": {"fail_closed": "If registry missing/unparseable, BLOCK."},
        "registry": entries,
    }
    return write(path, json.dumps(doc, indent=2))


@dataclass
class MixedTree:
    root: Path
    files: dict[str, Path]
    registry: Path
    mc_db: Path


def build_mixed_tree(root: Path, *, fifo: bool = True) -> MixedTree:
    """One tree with every case: compliant, 4/5, stale, missing Last-Verified, legacy,
    approved, changed since publication, unregistered ZAKON, non-UTF-8, FIFO (unreadable),
    a symlink loop, and an excluded node_modules copy."""
    f: dict[str, Path] = {}
    f["good"] = write(root / "projects/good/BUILD-BLUEPRINT.md", blueprint_text())
    f["four"] = write(
        root / "projects/four/BUILD-BLUEPRINT.md",
        blueprint_text(sections=("Purpose", "Architecture", "Deploy", "Verification")),
    )
    f["stale"] = write(
        root / "projects/stale/BUILD-BLUEPRINT.md", blueprint_text(verified_days_ago=45)
    )
    f["no_lv"] = write(root / "projects/nolv/DEPLOY-MAP.md", blueprint_text(verified_days_ago=None))
    f["map_ok"] = write(root / "projects/good/DEPLOY-MAP.md", blueprint_text())
    f["not_utf8"] = write(
        root / "projects/latin1/BUILD-BLUEPRINT.md",
        "## Purpose\nCaf\u00e9 \u00e0 la carte\n".encode("latin-1"),
    )
    if fifo:
        path = root / "projects/fifo/BUILD-BLUEPRINT.md"
        path.parent.mkdir(parents=True)
        os.mkfifo(path)
        f["fifo"] = path
    f["excluded"] = write(
        root / "projects/good/node_modules/pkg/BUILD-BLUEPRINT.md", "nothing here"
    )
    loop = root / "projects/loop"
    loop.symlink_to("..", target_is_directory=True)
    f["loop"] = loop
    rules = root / "rules"
    f["legacy"] = write(rules / "zakon-legacy.md", "# Legacy rule\nOld and grandfathered.\n")
    f["active"] = write(rules / "zakon-active.md", "# Active rule\nApproved.\n")
    f["changed"] = write(rules / "zakon-changed.md", "# Changed rule\nEdited after publication.\n")
    f["rogue"] = write(rules / "zakon-rogue.md", "# Rogue rule\nNobody approved this.\n")
    registry = write_registry(
        rules / "zakon-registry.json",
        [
            registry_entry(
                "legacy",
                str(f["legacy"]),
                status="legacy-pre-registry",
                token="GRANDFATHERED-PRE-2026-05-12",
            ),
            registry_entry(
                "active", str(f["active"]), mc_task=101, published_sha256=sha256(f["active"])
            ),
            registry_entry(
                "changed",
                str(f["changed"]),
                mc_task=101,
                published_sha256=hashlib.sha256(b"the published text").hexdigest(),
            ),
        ],
    )
    mc_db = make_mission_control(
        root / "databases/mission-control.db",
        {101: "Board decision: [CEO_APPROVED] new ZAKON rules", 102: "draft, not approved"},
    )
    return MixedTree(root, f, registry, mc_db)


def build_compliant_tree(root: Path) -> MixedTree:
    f = {
        "good": write(root / "projects/good/BUILD-BLUEPRINT.md", blueprint_text()),
        "map": write(root / "projects/good/DEPLOY-MAP.md", blueprint_text(verified_days_ago=30)),
        "legacy": write(root / "rules/zakon-legacy.md", "# Legacy\n"),
    }
    registry = write_registry(
        root / "rules/zakon-registry.json",
        [
            registry_entry(
                "legacy",
                str(f["legacy"]),
                status="legacy-pre-registry",
                token="GRANDFATHERED-PRE-2026-05-12",
            )
        ],
    )
    return MixedTree(root, f, registry, root / "databases/mission-control.db")


def test_mixed_tree_holds_every_case(tmp_path: Path) -> None:
    tree = build_mixed_tree(tmp_path / "root")
    assert tree.files["loop"].is_symlink()
    assert tree.files["fifo"].is_fifo()
    with __import__("pytest").raises(UnicodeDecodeError):
        tree.files["not_utf8"].read_bytes().decode("utf-8")
    registry = json.loads(tree.registry.read_text())
    assert {e["zakon_id"] for e in registry["registry"]} == {"legacy", "active", "changed"}
    assert "Rollback" not in tree.files["four"].read_text()

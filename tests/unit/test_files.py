"""Atomic state files with tight permissions, and size-rotated JSONL logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shared.files
from shared.files import append_jsonl, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_0600(tmp_path: Path) -> None:
    target = tmp_path / "state" / "status.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1, 2]}
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["status.json"], "no temp files left"


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "s.json"
    atomic_write_text(target, "old")

    def disk_full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared.files.os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(target, "new content that never lands")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"], "temp file cleaned up"


def test_jsonl_rotates_by_size_and_keeps_n(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "audit.jsonl"
    for i in range(100):
        append_jsonl(log, {"i": i, "pad": "x" * 50}, max_bytes=1000, keep=3)
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all((log.parent / f).stat().st_size <= 1000 for f in files)
    last = [json.loads(x) for x in log.read_text().splitlines()]
    assert last[-1]["i"] == 99
    older = [json.loads(x) for x in (log.parent / "audit.jsonl.1").read_text().splitlines()]
    assert older[-1]["i"] == last[0]["i"] - 1, "rotation loses no line at the boundary"

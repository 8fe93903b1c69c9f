"""Atomic state files with tight permissions, size-rotated JSONL logs, and final writes off the
event loop that a cancellation does not abandon."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

import shared.files
from shared.files import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    complete_in_thread,
    read_json,
)


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


async def test_a_cancelled_caller_waits_for_its_write_to_land(tmp_path: Path) -> None:
    """A stop arriving mid-write: the write finishes first, then the cancellation goes on."""
    target = tmp_path / "state.json"
    started, release = threading.Event(), threading.Event()

    def slow_write() -> None:
        started.set()
        assert release.wait(10)
        atomic_write_json(target, {"final": True})

    task = asyncio.create_task(complete_in_thread(slow_write))
    assert await asyncio.to_thread(started.wait, 10)
    for _ in range(2):  # a second stop signal does not abandon it either
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done(), "returned before the write finished"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert json.loads(target.read_text()) == {"final": True}


async def test_complete_in_thread_returns_and_raises_like_the_call() -> None:
    assert await complete_in_thread(sum, [1, 2], start=3) == 6
    released = threading.Event()
    released.set()
    with pytest.raises(OSError, match="disk full"):
        await complete_in_thread(_fail, released)
    # Cancelled while a write fails: the cancellation wins, the failure is its cause.
    release = threading.Event()
    task = asyncio.create_task(complete_in_thread(_fail, release))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert isinstance(caught.value.__cause__, OSError)


def _fail(release: threading.Event) -> None:
    assert release.wait(10)
    raise OSError(28, "disk full")


def test_read_json_gives_back_what_was_written_or_none(tmp_path: Path) -> None:
    target = tmp_path / "state" / "s.json"
    assert read_json(target) is None, "missing file"
    atomic_write_json(target, {"a": [1, 2]})
    assert read_json(target) == {"a": [1, 2]}
    target.write_text('{"a": [1,')  # torn by hand: never trusted
    assert read_json(target) is None
    target.write_bytes(b"\xff\xfe")
    assert read_json(target) is None

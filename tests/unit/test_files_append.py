"""JSONL appends that never leave a torn line behind: short writes are finished, a write or
fsync that fails (ENOSPC, EDQUOT, EIO, EFBIG) is an ``AppendError`` (an OSError) naming the
errno, the partial line is cut off again, and a torn last line left by a crash is repaired by
the next append (moved to ``<file>.torn``, or finished when only its newline was missing). The
real disk-full and file-size-limit runs are in tests/system/test_append_limits.py."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import shared.files
from shared.files import AppendError, append_jsonl, append_jsonl_many

REAL_WRITE = os.write


def _lines(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"torn last line: {data[-40:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def test_short_writes_are_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def trickle(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return REAL_WRITE(fd, bytes(data[:7]))  # a disk that takes 7 bytes at a time

    monkeypatch.setattr(shared.files.os, "write", trickle)
    log = tmp_path / "audit.jsonl"
    append_jsonl_many(log, [{"i": i, "pad": "x" * 40} for i in range(5)], max_bytes=10**6, keep=2)
    append_jsonl(log, {"i": 5}, max_bytes=10**6, keep=2)
    assert [r["i"] for r in _lines(log)] == [0, 1, 2, 3, 4, 5]
    assert len(calls) > 6


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (errno.ENOSPC, "ENOSPC"),
        (errno.EDQUOT, "EDQUOT"),
        (errno.EIO, "EIO"),
        (errno.EFBIG, "EFBIG"),
    ],
)
def test_a_failed_write_names_the_errno_and_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, name: str
) -> None:
    log = tmp_path / "audit.jsonl"
    append_jsonl(log, {"i": 0}, max_bytes=10**6, keep=2)
    state = {"calls": 0}

    def half_then_fail(fd: int, data: bytes) -> int:
        state["calls"] += 1
        if state["calls"] == 1:
            return REAL_WRITE(fd, bytes(data[: len(data) // 2]))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(shared.files.os, "write", half_then_fail)
    with pytest.raises(AppendError) as caught:
        append_jsonl(log, {"i": 1, "pad": "y" * 50}, max_bytes=10**6, keep=2)
    assert isinstance(caught.value, OSError) and caught.value.errno == code
    assert name in str(caught.value) and str(log) in str(caught.value)
    assert _lines(log) == [{"i": 0}], "the half-written line was cut off again"
    monkeypatch.setattr(shared.files.os, "write", REAL_WRITE)
    append_jsonl(log, {"i": 2}, max_bytes=10**6, keep=2)
    assert _lines(log) == [{"i": 0}, {"i": 2}]


def test_a_failed_fsync_is_an_append_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def dead_disk(_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(shared.files.os, "fsync", dead_disk)
    with pytest.raises(AppendError, match="EIO"):
        append_jsonl(tmp_path / "audit.jsonl", {"i": 0}, max_bytes=10**6, keep=2)


def test_a_write_that_writes_nothing_is_an_error_not_a_spin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared.files.os, "write", lambda _fd, _data: 0)
    with pytest.raises(AppendError):
        append_jsonl(tmp_path / "audit.jsonl", {"i": 0}, max_bytes=10**6, keep=2)


def test_a_torn_last_line_is_moved_aside_by_the_next_append(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"i":0}\n{"i":1}\n{"i":2,"reas')  # a crash mid-line
    append_jsonl(log, {"i": 3}, max_bytes=10**6, keep=2)
    assert _lines(log) == [{"i": 0}, {"i": 1}, {"i": 3}], "never merged into the torn line"
    (torn,) = _lines(log.with_name("audit.jsonl.torn"))
    assert torn["data"] == '{"i":2,"reas' and torn["bytes"] == 12
    assert log.with_name("audit.jsonl.torn").stat().st_mode & 0o777 == 0o600


def test_a_whole_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"i":0}\n{"i":1}')
    append_jsonl_many(log, [{"i": 2}, {"i": 3}], max_bytes=10**6, keep=2)
    assert [r["i"] for r in _lines(log)] == [0, 1, 2, 3]
    assert not log.with_name("audit.jsonl.torn").exists()


def test_a_file_that_is_one_torn_line_is_emptied(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"\x00\x00garbage without any newline")
    append_jsonl(log, {"i": 0}, max_bytes=10**6, keep=2)
    assert _lines(log) == [{"i": 0}]

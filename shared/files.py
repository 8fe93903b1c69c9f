"""Files the fleet writes: atomic replace (temp + fsync + rename) with 0600/0700 permissions,
append-only JSONL logs rotated by size, and ``complete_in_thread`` to run such a write off the
event loop so that it finishes even when the caller is cancelled. Readers never see a
half-written state file; this module must never write a state file in place. A JSONL append
lands whole or raises ``AppendError`` (naming the errno) with its partial line cut off again,
and a torn last line a crash left is repaired before the next append, so lines never merge.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from shared.shield import complete

__all__ = [
    "SHARED_TMP_DIRS",
    "AppendError",
    "append_jsonl",
    "append_jsonl_many",
    "atomic_write_json",
    "atomic_write_text",
    "complete_in_thread",
    "ensure_private_dir",
    "read_json",
    "under_shared_tmp",
]


_T = TypeVar("_T")


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_json(path: Path, data: Any, *, mode: int = 0o600) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=mode)


def read_json(path: Path) -> Any:
    """What ``atomic_write_json`` wrote at ``path``, or None when the file is missing or
    unreadable or not JSON (a state file is rebuilt, never trusted). Blocking."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class AppendError(OSError):
    """A JSONL append that did not land: the write or fsync failed (full disk, quota, I/O
    error, file-size limit). ``errno`` is the cause's; ``str()`` names it (``ENOSPC``...), the
    file, and how many lines went in before it. The partial line was cut off again."""

    def __init__(self, path: Path, cause: OSError, appended: int) -> None:
        code = cause.errno if cause.errno is not None else errno.EIO
        name = errno.errorcode.get(code, f"errno {code}")
        message = (
            f"cannot append to {path}: {name} ({cause.strerror or os.strerror(code)}); "
            f"{appended} line(s) appended before it, the partial line removed"
        )
        super().__init__(code, message)
        self.path = path
        self.appended = appended

    def __str__(self) -> str:
        return str(self.strerror)


_LOG = logging.getLogger("alai_fleet.files")
#: how much of a torn line the ``.torn`` sidecar keeps
_TORN_KEEP_BYTES = 64 * 1024


def append_jsonl(path: Path, record: Any, *, max_bytes: int, keep: int) -> None:
    """Append one JSON line (fsynced); first rotate ``path`` -> ``path.1`` ... ``path.<keep>``
    when the file has reached ``max_bytes``. AppendError when it cannot land whole."""
    append_jsonl_many(path, [record], max_bytes=max_bytes, keep=keep)


def append_jsonl_many(path: Path, records: Iterable[Any], *, max_bytes: int, keep: int) -> int:
    """Append JSON lines with one fsync at the end, rotating by size between lines; return how
    many were appended. Appenders in other processes wait on an ``flock`` of the file. A torn
    last line (a crash or full disk mid-write) is repaired first, so no line merges into it;
    a write that fails is an AppendError and leaves no partial line behind."""
    ensure_private_dir(path.parent)
    lines = [
        (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        for record in records
    ]
    written = 0
    fd = _open_locked(path)
    try:
        try:
            _repair_tail(fd, path)
            size = os.fstat(fd).st_size
            for line in lines:
                if size and size + len(line) > max_bytes:
                    os.fsync(fd)
                    os.close(fd)
                    fd = -1
                    _rotate(path, keep)
                    fd = _open_locked(path)
                    size = os.fstat(fd).st_size
                _write_line(fd, line)
                size += len(line)
                written += 1
            os.fsync(fd)
        except OSError as exc:
            raise AppendError(path, exc, written) from exc
    finally:
        if fd >= 0:
            os.close(fd)  # releases the flock
    return written


def _open_locked(path: Path) -> int:
    """``path`` opened for appending and reading, under an exclusive flock; reopened when
    another appender rotated it away while we waited for the lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _write_line(fd: int, line: bytes) -> None:
    """All of ``line`` or nothing: short writes are continued; on a failure the bytes that
    did go in are cut off again (best effort: if even that fails, the next append repairs
    the torn line before writing)."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(line)
    try:
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.EIO, "write() accepted no bytes")
            view = view[n:]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def _repair_tail(fd: int, path: Path) -> None:
    """If the file does not end with a newline, its last line is torn: finish it when it is a
    whole JSON record that only lacks the newline, else move it to ``<path>.torn`` (a JSONL
    record of what was cut) and cut the file back to its last newline. Complete lines are
    never touched."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    cut = 0
    pos = size
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            cut = start + newline + 1
            break
        pos = start
    tail = os.pread(fd, min(size - cut, _TORN_KEEP_BYTES), cut)
    if size - cut == len(tail):
        try:
            json.loads(tail)
        except ValueError:
            pass
        else:
            _write_line(fd, b"\n")  # a whole record; only its newline was lost
            return
    record = {
        "at": time.time(),
        "offset": cut,
        "bytes": size - cut,
        "data": tail.decode("utf-8", errors="replace"),
    }
    try:
        _append_sidecar(path.with_name(path.name + ".torn"), record)
    except OSError as exc:
        _LOG.warning(
            "cannot keep the torn line aside", extra={"path": str(path), "error": str(exc)}
        )
    os.ftruncate(fd, cut)
    _LOG.warning(
        "torn last line removed before appending",
        extra={"path": str(path), "bytes": size - cut, "kept_in": path.name + ".torn"},
    )


def _append_sidecar(path: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _write_line(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _rotate(path: Path, keep: int) -> None:
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


async def complete_in_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in a worker thread, awaited to the end even when the awaiting
    task is cancelled meanwhile (a stop, a cycle timeout): the write lands before the
    cancellation is re-raised, so a final write is never abandoned half way and a later write
    of the same file (``close()``'s) cannot be overtaken by it (``shared.shield.complete``).
    If the call fails after a cancellation, the cancellation wins (the failure is its
    ``__cause__``)."""
    return await complete(asyncio.to_thread(fn, *args, **kwargs))


SHARED_TMP_DIRS = (Path("/tmp"), Path("/private/tmp"), Path("/var/tmp"))


def under_shared_tmp(*paths: Path) -> bool:
    """True when a path lives in a tmp directory other users share (the unit must then not
    use PrivateTmp, and the file is exposed to other local users)."""
    for path in paths:
        pure = Path(os.path.abspath(path))
        if any(pure == tmp or pure.is_relative_to(tmp) for tmp in SHARED_TMP_DIRS):
            return True
    return False

"""Files the fleet writes: atomic replace (temp + fsync + rename) with 0600/0700 permissions,
append-only JSONL logs rotated by size, and ``complete_in_thread`` to run such a write off the
event loop so that it finishes even when the caller is cancelled. Readers never see a
half-written state file; this module must never write a state file in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "SHARED_TMP_DIRS",
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


def append_jsonl(path: Path, record: Any, *, max_bytes: int, keep: int) -> None:
    """Append one JSON line (fsynced); first rotate ``path`` -> ``path.1`` ... ``path.<keep>``
    when the file has reached ``max_bytes``."""
    append_jsonl_many(path, [record], max_bytes=max_bytes, keep=keep)


def append_jsonl_many(path: Path, records: Iterable[Any], *, max_bytes: int, keep: int) -> int:
    """Append JSON lines with one fsync at the end, rotating by size between lines."""
    ensure_private_dir(path.parent)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    written = 0
    try:
        for record in records:
            line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
            if size and size + len(line) > max_bytes:
                os.fsync(fd)
                os.close(fd)
                fd = -1
                _rotate(path, keep)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                size = 0
            os.write(fd, line)
            size += len(line)
            written += 1
        os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    return written


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
    of the same file (``close()``'s) cannot be overtaken by it. This is the shield for final
    writes: anyio's shielded ``CancelScope`` does not hold against ``Task.cancel()``, which is
    how the runtime stops a cycle. If the call fails after a cancellation, the cancellation
    wins (the failure is its ``__cause__``)."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait({work})  # never cancels ``work`` itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        failure = None if work.cancelled() else work.exception()
        raise asyncio.CancelledError() from failure
    return work.result()


SHARED_TMP_DIRS = (Path("/tmp"), Path("/private/tmp"), Path("/var/tmp"))


def under_shared_tmp(*paths: Path) -> bool:
    """True when a path lives in a tmp directory other users share (the unit must then not
    use PrivateTmp, and the file is exposed to other local users)."""
    for path in paths:
        pure = Path(os.path.abspath(path))
        if any(pure == tmp or pure.is_relative_to(tmp) for tmp in SHARED_TMP_DIRS):
            return True
    return False

"""Snapshot mode, for readers that must never be blocked by a follower: restore the replica into
a temporary file beside the copy (``-integrity-check quick``), switch it to journal_mode=DELETE (so
no stale -wal/-shm of the old copy can ever apply to it), then rename it over the copy, only if
the restore succeeded and is not older than what is there.

A failed, timed-out, cancelled or corrupt restore leaves the copy untouched and its temporary
file removed. It must never write into the standby copy in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons.restore_loop.litestream import Litestream
from daemons.restore_loop.policy import should_replace
from daemons.restore_loop.state import RestoreTarget, fsync_dir, read_txid_file, write_txid_file

__all__ = ["SnapshotRestorer", "SnapshotResult", "snapshot_txid_path"]

_GEN = itertools.count(1)


def snapshot_txid_path(work_dir: Path, name: str) -> Path:
    """Our record of the TXID a snapshot-mode copy holds (snapshot copies have no sidecar)."""
    return work_dir / f"{name}~snapshot.txid"


@dataclass(frozen=True)
class SnapshotResult:
    txid: int
    replaced: bool
    duration_s: float


def set_delete_journal(path: Path) -> None:
    conn = sqlite3.connect(path, timeout=5)
    try:
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()
        if not mode or str(mode[0]).lower() != "delete":
            raise sqlite3.OperationalError(f"journal_mode stayed {mode}")
    finally:
        conn.close()


class SnapshotRestorer:
    def __init__(
        self,
        litestream: Litestream,
        work_dir: Path,
        *,
        restore_timeout_s: float,
        log: Any,
        is_fenced: Callable[[str], bool],
    ) -> None:
        self.litestream = litestream
        self.work_dir = work_dir
        self.restore_timeout_s = restore_timeout_s
        self.log = log
        self.is_fenced = is_fenced

    def current_txid(self, target: RestoreTarget) -> int | None:
        """The TXID the copy holds, from our record. Blocking: call it in a worker thread."""
        if not target.path.exists():
            return None
        return read_txid_file(snapshot_txid_path(self.work_dir, target.name))

    async def restore(self, target: RestoreTarget) -> SnapshotResult:
        """One restore + replace. Raises LitestreamError (copy untouched) on failure."""
        started = time.monotonic()
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        tmp = self.work_dir / f"{target.name}~snap-{int(time.time() * 1000)}-{next(_GEN)}.db"
        leftovers = [
            tmp,
            Path(f"{tmp}.tmp"),
            Path(f"{tmp}-journal"),
            Path(f"{tmp}-wal"),
            Path(f"{tmp}-shm"),
        ]
        try:
            txid = await self.litestream.restore(
                target.path, tmp, integrity="quick", timeout_s=self.restore_timeout_s
            )
            await asyncio.to_thread(set_delete_journal, tmp)
            await asyncio.to_thread(os.chmod, tmp, 0o600)
            current = await asyncio.to_thread(self.current_txid, target)
            # The fence check and the rename stay together on the event loop: no fence can be
            # acknowledged between them.
            replace = should_replace(txid, current) and not self.is_fenced(target.name)
            if replace:
                os.replace(tmp, target.path)
                fsync_dir(target.path.parent)
                write_txid_file(snapshot_txid_path(self.work_dir, target.name), txid)
            else:
                self.log.info(
                    "snapshot restore not newer than the copy; kept the copy",
                    db=target.name,
                    restored_txid=txid,
                    current_txid=current,
                )
            return SnapshotResult(txid, replace, time.monotonic() - started)
        finally:
            for path in leftovers:
                with contextlib.suppress(OSError):
                    path.unlink()

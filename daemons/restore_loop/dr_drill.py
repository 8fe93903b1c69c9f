"""The restore side of a DR drill: rehearse a promotion without doing one.

For each DB: note the standby copy's TXID (and, when a table is named, its rows), list the
replica (the primary's newest replicated TXID and when it was written), restore the replica
into a scratch directory with litestream's full integrity check, run the promote's own
``PRAGMA integrity_check`` on the result, and compare: the restored TXID must reach what the
replica listed and the standby copy's, and the copy's rows must be a prefix of the restored
ones. The time all of this takes (with the promote's concurrency) is what a promote's catch-up
and checks would take. It must never touch the standby copies, the fence, the role file or a
replica: it reads them and writes only under its own scratch directory, which it removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daemons.restore_loop.litestream import Litestream, LitestreamError
from daemons.restore_loop.promote import integrity_check
from daemons.restore_loop.snapshot import snapshot_txid_path
from daemons.restore_loop.state import RestoreTarget, read_txid_file, work_dir_for

__all__ = ["DbRehearsal", "Rehearsal", "rehearse", "standby_txid"]

#: rows compared per table at most (a drill must stay bounded on a large table)
MAX_PREFIX_ROWS = 1_000_000


@dataclass
class DbRehearsal:
    db: str
    tier: str
    ok: bool = False
    problem: str = ""
    standby_txid: int | None = None
    replica_txid: int | None = None
    #: when the primary wrote its newest replicated change (the newest LTX file)
    replica_newest_at: float | None = None
    #: how far the standby copy is behind the replica, in the primary's time (0: caught up)
    standby_lag_s: float | None = None
    restored_txid: int | None = None
    integrity: str = ""
    restore_s: float | None = None
    check_s: float | None = None
    table: str = ""
    standby_rows: int | None = None
    restored_rows: int | None = None
    prefix_ok: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rehearsal:
    dbs: list[DbRehearsal]
    #: wall time of the whole restore-and-check phase: what a promote's catch-up would take
    wall_s: float
    concurrency: int

    @property
    def failed(self) -> list[DbRehearsal]:
        return [d for d in self.dbs if not d.ok]


def standby_txid(target: RestoreTarget, row: Mapping[str, Any], standby_dir: Path) -> int | None:
    """The TXID the standby copy holds, as promote reads it: the follower's sidecar, the
    snapshot's, else the daemon's last status."""
    for key in ("sidecar", "snapshot_txid_file"):
        value = row.get(key)
        if isinstance(value, str):
            txid = read_txid_file(Path(value))
            if txid is not None:
                return txid
    txid = read_txid_file(snapshot_txid_path(work_dir_for(standby_dir), target.name))
    if txid is not None:
        return txid
    value = row.get("local_txid")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(path: Path, table: str, limit: int) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        cur = conn.execute(f"SELECT * FROM {_quote_ident(table)} ORDER BY rowid LIMIT ?", (limit,))
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {_quote_ident(table)}").fetchone()[0])
    finally:
        conn.close()


async def rehearse(
    targets: list[RestoreTarget],
    *,
    litestream: Litestream,
    scratch_dir: Path,
    standby_dir: Path,
    status_rows: Mapping[str, Mapping[str, Any]],
    tables: Mapping[str, str],
    concurrency: int,
    restore_timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> Rehearsal:
    """Rehearse a promotion of ``targets`` into ``scratch_dir`` (created, then removed)."""
    scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    slots = asyncio.Semaphore(max(1, concurrency))
    started = clock()

    async def one(target: RestoreTarget) -> DbRehearsal:
        async with slots:
            return await _rehearse_one(
                target,
                litestream=litestream,
                scratch_dir=scratch_dir,
                standby_dir=standby_dir,
                row=status_rows.get(target.name, {}),
                table=tables.get(target.name, ""),
                timeout_s=restore_timeout_s,
                clock=clock,
            )

    try:
        dbs = list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch_dir, True)
    return Rehearsal(dbs=dbs, wall_s=clock() - started, concurrency=max(1, concurrency))


async def _rehearse_one(
    target: RestoreTarget,
    *,
    litestream: Litestream,
    scratch_dir: Path,
    standby_dir: Path,
    row: Mapping[str, Any],
    table: str,
    timeout_s: float,
    clock: Callable[[], float],
) -> DbRehearsal:
    out = DbRehearsal(db=target.name, tier=target.tier, table=table)
    # The standby side first: whatever the replica holds later can only be newer.
    out.standby_txid = await asyncio.to_thread(standby_txid, target, row, standby_dir)
    standby_rows: list[tuple[Any, ...]] | None = None
    if table and target.path.exists():
        try:
            standby_rows = await asyncio.to_thread(_rows, target.path, table, MAX_PREFIX_ROWS)
            out.standby_rows = len(standby_rows)
        except sqlite3.Error as exc:
            out.notes.append(f"standby copy's table {table} not read: {exc}")
    elif not target.path.exists():
        out.notes.append(f"no standby copy at {target.path}")
    try:
        view = await litestream.ltx(target.path)
    except LitestreamError as exc:
        out.problem = f"replica not listed ({exc.reason}): {str(exc)[:300]}"
        return out
    if view.missing:
        out.problem = "replica missing: it lists no LTX files"
        return out
    out.replica_txid, out.replica_newest_at = view.newest_txid, view.newest_at
    if out.standby_txid is not None and out.replica_txid is not None:
        if out.standby_txid >= out.replica_txid:
            out.standby_lag_s = 0.0
        else:
            applied = view.applied_at(out.standby_txid)
            oldest = view.oldest_unapplied_at(out.standby_txid)
            since = applied if applied is not None else oldest
            if since is not None and out.replica_newest_at is not None:
                out.standby_lag_s = max(0.0, out.replica_newest_at - since)
    restored = scratch_dir / f"{target.name}.db"
    for leftover in (restored, Path(f"{restored}.tmp")):
        with contextlib.suppress(OSError):
            leftover.unlink()
    begun = clock()
    try:
        out.restored_txid = await litestream.restore(
            target.path, restored, integrity="full", timeout_s=timeout_s
        )
    except LitestreamError as exc:
        out.restore_s = clock() - begun
        out.problem = f"restore failed ({exc.reason}): {str(exc)[:300]}"
        return out
    out.restore_s = clock() - begun
    begun = clock()
    try:
        out.integrity = await asyncio.to_thread(integrity_check, restored)
    except sqlite3.Error as exc:
        out.integrity = f"{type(exc).__name__}: {exc}"
    out.check_s = clock() - begun
    problems: list[str] = []
    if out.integrity != "ok":
        problems.append(f"integrity check failed: {out.integrity[:200]}")
    if out.replica_txid is not None and out.restored_txid < out.replica_txid:
        problems.append(
            f"restored TXID {out.restored_txid} is behind the replica's listed {out.replica_txid}"
        )
    if out.standby_txid is not None and out.restored_txid < out.standby_txid:
        problems.append(
            f"the replica (TXID {out.restored_txid}) is behind the standby copy "
            f"({out.standby_txid}): replica reset or a second history"
        )
    if table and standby_rows is not None:
        try:
            restored_rows = await asyncio.to_thread(_rows, restored, table, len(standby_rows))
            out.restored_rows = await asyncio.to_thread(_count, restored, table)
        except sqlite3.Error as exc:
            problems.append(f"restored table {table} not read: {exc}")
        else:
            out.prefix_ok = restored_rows == standby_rows
            if not out.prefix_ok:
                problems.append(
                    f"the standby copy's {len(standby_rows)} rows of {table} are not a prefix "
                    "of the restored replica's"
                )
    out.problem = "; ".join(problems)
    out.ok = not problems
    return out

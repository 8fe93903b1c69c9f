"""The failover step: turn the standby copies into the primary's writable databases.

Raise the fence (a running restore-loop stops the fenced followers and acknowledges), kill any
follower left over, one last bounded catch-up from the replica (a full restore that replaces the
copy only when newer and intact), a full integrity check, sidecars removed and WAL mode set, then
per DB the RPO (age of the newest applied change) and the elapsed RTO. The promotion record is
appended to ``promotions.jsonl`` and this host's role file set to primary, so no restore-loop
touches the promoted files again. All of it runs under the promotion lock: a second promote
refuses at once instead of running beside the first. A DB that fails integrity is refused, with
the reason, and left as it was. It must never write to a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.litestream import Litestream, LitestreamError
from daemons.restore_loop.policy import ReplicaView, diverged, should_replace
from daemons.restore_loop.snapshot import snapshot_txid_path
from daemons.restore_loop.state import (
    Fence,
    RestoreTarget,
    StatePaths,
    fsync_dir,
    pid_alive,
    process_cmdline,
    read_txid_file,
    work_dir_for,
)
from shared.epochs import begin_epoch
from shared.roles import Role, read_role_file, write_role_file
from shared.sqlite import transaction_sync

__all__ = ["AlreadyPromoted", "DbPromotion", "Promoter", "PromotionReport"]

# litestream 0.5's DefaultMonitorInterval: how often `replicate` looks at the WAL before a
# change waits (up to the replica's sync interval) for its upload.
MONITOR_INTERVAL_S = 1.0


class AlreadyPromoted(Exception):
    """The role file already says primary: a promote finished while this one waited to
    start. Nothing is promoted twice."""

    def __init__(self, role_file: Path) -> None:
        self.role_file = role_file
        super().__init__(
            f"this host's role is already primary ({role_file}): another promote finished "
            "first; nothing to promote (`fleet role show`)"
        )


@dataclass
class DbPromotion:
    db: str
    tier: str
    path: str
    status: str = "pending"  # promoted | refused
    reason: str = ""
    local_txid: int | None = None
    replica_txid: int | None = None
    catch_up: str = ""
    integrity: str = ""
    applied_at: float | None = None
    #: when the primary wrote the newest change the replica holds (its last upload)
    replica_newest_at: float | None = None
    #: the newest change the replica holds but the promoted copy lacks, in seconds (0 when it
    #: caught up); changes the primary committed but never uploaded add up to rpo_resolution_s
    rpo_s: float | None = None
    rpo_resolution_s: float | None = None
    rpo_basis: str = ""
    rto_s: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class PromotionReport:
    id: str
    host: str
    started_at: float
    #: when the promote command's process started (RTO counts from here: the CLI's own start)
    command_started_at: float | None = None
    finished_at: float = 0.0
    rto_s: float = 0.0
    role_set: bool = False
    daemon_acknowledged: bool | None = None
    killed_followers: list[int] = field(default_factory=list)
    dbs: list[DbPromotion] = field(default_factory=list)
    #: why promotions.jsonl could not take this record ("" when it did)
    record_error: str = ""
    #: the promotion epoch this promotion began (shared.epochs); None when the role was not set
    epoch: int | None = None

    @property
    def refused(self) -> list[DbPromotion]:
        return [d for d in self.dbs if d.status != "promoted"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["refused"] = [d.db for d in self.refused]
        return data


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` (full) on ``path`` opened read-only: 'ok' or the problems."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    text = "; ".join(str(r[0]) for r in rows[:5])
    return "ok" if text == "ok" else text


def make_writable(path: Path) -> str:
    """WAL mode (as on the primary, and as `litestream replicate` needs) and one write lock
    taken and released to prove the file is writable. Returns the journal mode."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        with transaction_sync(conn):
            pass  # the write lock taken (and released) proves the file is writable
    finally:
        conn.close()
    return mode


class Promoter:
    def __init__(
        self,
        section: RestoreLoopSection,
        paths: StatePaths,
        role_file: Path,
        host: str,
        litestream: Litestream | None,
        *,
        log: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.section = section
        self.paths = paths
        self.role_file = role_file
        self.host = host
        self.litestream = litestream
        self.log = log
        self.clock = clock
        self.work_dir = work_dir_for(section.standby_dir)

    async def promote(
        self,
        targets: list[RestoreTarget],
        *,
        catch_up_timeout_s: float,
        ack_timeout_s: float = 10.0,
        set_role: bool = True,
        allow_partial: bool = False,
        command_started_at: float | None = None,
    ) -> PromotionReport:
        """Promote ``targets`` under the promotion lock: PromotionLocked at once when another
        promote holds it, AlreadyPromoted when (with ``set_role``) a promote that finished
        meanwhile already set the role file to primary. Either way nothing is touched."""
        with self.paths.promotion_lock():
            if set_role and read_role_file(self.role_file) is Role.PRIMARY:
                raise AlreadyPromoted(self.role_file)
            return await self._promote_locked(
                targets,
                catch_up_timeout_s=catch_up_timeout_s,
                ack_timeout_s=ack_timeout_s,
                set_role=set_role,
                allow_partial=allow_partial,
                command_started_at=command_started_at,
            )

    async def _promote_locked(
        self,
        targets: list[RestoreTarget],
        *,
        catch_up_timeout_s: float,
        ack_timeout_s: float,
        set_role: bool,
        allow_partial: bool,
        command_started_at: float | None = None,
    ) -> PromotionReport:
        started = self.clock()
        report = PromotionReport(
            id=uuid.uuid4().hex[:12],
            host=self.host,
            started_at=started,
            command_started_at=command_started_at,
        )
        # RTO is wall time from the command's start (interpreter, imports, config included).
        rto_from = min(started, command_started_at) if command_started_at else started
        fence = Fence(report.id, os.getpid(), tuple(t.name for t in targets), started)
        self.paths.write_fence(fence)
        try:
            status = self.paths.read_status() or {}
            report.daemon_acknowledged = await self._await_ack(status, fence, ack_timeout_s)
            status = self.paths.read_status() or status
            report.killed_followers = await self._kill_followers(status, targets)
            rows = {str(r.get("db")): r for r in status.get("databases") or []}
            slots = asyncio.Semaphore(self.section.concurrency)

            async def one(target: RestoreTarget) -> DbPromotion:
                async with slots:
                    return await self._promote_one(
                        target,
                        rows.get(target.name, {}),
                        rto_from,
                        catch_up_timeout_s,
                        allow_partial=allow_partial,
                    )

            report.dbs = list(await asyncio.gather(*(one(t) for t in targets)))
            report.finished_at = self.clock()
            report.rto_s = report.finished_at - rto_from
            promoted_any = any(d.status == "promoted" for d in report.dbs)
            if set_role and promoted_any and (allow_partial or not report.refused):
                write_role_file(self.role_file, Role.PRIMARY)
                report.role_set = True
                report.epoch = begin_epoch(self.role_file, self.host, self.clock()).number
            try:
                self.paths.append_promotion(report.to_json())
            except OSError as exc:  # a full disk must not hide the report the CLI prints
                report.record_error = str(exc)
        finally:
            self.paths.clear_fence(fence.id)
        return report

    async def _await_ack(
        self, status: dict[str, Any], fence: Fence, timeout_s: float
    ) -> bool | None:
        """None when no restore-loop runs here; else whether it stopped the fenced followers."""
        pid = status.get("pid")
        if not isinstance(pid, int) or pid == os.getpid() or not pid_alive(pid):
            return None
        cmdline = process_cmdline(pid) or ""
        if cmdline and "fleet" not in cmdline and "python" not in cmdline:
            return None  # the PID was reused by something else
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = await asyncio.to_thread(self.paths.read_status) or {}
            if current.get("fence_ack") == fence.id or current.get("promoted"):
                return True
            await asyncio.sleep(0.1)
        self.log.warning(
            "restore-loop did not acknowledge the fence; killing its followers directly",
            pid=pid,
        )
        return False

    async def _kill_followers(
        self, status: dict[str, Any], targets: list[RestoreTarget]
    ) -> list[int]:
        names = {t.name for t in targets}
        victims: list[int] = []
        for row in status.get("databases") or []:
            pid, output = row.get("follower_pid"), row.get("follower_output")
            if row.get("db") not in names or not isinstance(pid, int) or not output:
                continue
            if not pid_alive(pid):
                continue
            cmdline = process_cmdline(pid) or ""
            if "litestream" not in cmdline or str(output) not in cmdline:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            victims.append(pid)
        deadline = time.monotonic() + 5.0
        while (
            victims
            and time.monotonic() < deadline
            and any(pid_alive(p) and "litestream" in (process_cmdline(p) or "") for p in victims)
        ):
            await asyncio.sleep(0.05)
        return victims

    def _recorded_local_txid(self, target: RestoreTarget, row: dict[str, Any]) -> int | None:
        for key in ("sidecar", "snapshot_txid_file"):
            value = row.get(key)
            if isinstance(value, str):
                txid = read_txid_file(Path(value))
                if txid is not None:
                    return txid
        txid = read_txid_file(snapshot_txid_path(self.work_dir, target.name))
        if txid is not None:
            return txid
        value = row.get("local_txid")
        return value if isinstance(value, int) else None

    async def _promote_one(
        self,
        target: RestoreTarget,
        row: dict[str, Any],
        started: float,
        catch_up_timeout_s: float,
        *,
        allow_partial: bool = False,
    ) -> DbPromotion:
        out = DbPromotion(db=target.name, tier=target.tier, path=str(target.path))
        suspect = row.get("suspect")
        if isinstance(suspect, str) and suspect:
            if not allow_partial:
                out.status = "refused"
                out.reason = (
                    f"the copy is suspect ({suspect[:200]}): a follower died while it may have "
                    "been writing it; inspect it, or promote anyway with --allow-partial"
                )
                out.rto_s = self.clock() - started
                return out
            out.notes.append(f"promoted although suspect: {suspect[:200]}")
        if not target.path.exists():
            out.status, out.reason = "refused", f"no standby copy at {target.path}"
            out.rto_s = self.clock() - started
            return out
        wal = Path(f"{target.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            out.status = "refused"
            out.reason = (
                f"{wal.name} is not empty: something wrote to the standby copy; inspect it "
                "before promoting (the copy was left as it is)"
            )
            out.rto_s = self.clock() - started
            return out
        out.local_txid = await asyncio.to_thread(self._recorded_local_txid, target, row)
        view = await self._list(target, out)
        if view is not None and view.missing:
            out.catch_up = "skipped: the replica lists no LTX files"
        elif view is not None and diverged(out.local_txid, view.newest_txid):
            out.replica_txid = view.newest_txid
            out.catch_up = "skipped: the replica is behind the copy"
            if not allow_partial:
                out.status = "refused"
                out.reason = (
                    f"the replica's newest TXID {view.newest_txid} is behind the copy's "
                    f"{out.local_txid}: the replica was reset or recreated (or its URL changed), "
                    "so the copy's age is unknown and catch-up impossible; check the primary's "
                    "replica, or promote this copy anyway with --allow-partial"
                )
                out.rto_s = self.clock() - started
                return out
            out.notes.append("replica behind the copy: RPO unknown (from the copy's mtime)")
        elif view is not None:
            out.replica_txid = view.newest_txid
            await self._catch_up(target, view, out, catch_up_timeout_s)
        try:
            out.integrity = await asyncio.to_thread(integrity_check, target.path)
        except sqlite3.Error as exc:
            out.integrity = f"{type(exc).__name__}: {exc}"
        if out.integrity != "ok":
            out.status = "refused"
            out.reason = f"integrity check failed: {out.integrity[:300]}"
            out.rto_s = self.clock() - started
            return out
        try:
            mode = await asyncio.to_thread(make_writable, target.path)
            if mode.lower() != "wal":
                out.notes.append(f"journal_mode stayed {mode}")
        except sqlite3.Error as exc:
            out.status, out.reason = "refused", f"cannot open it for writing: {exc}"
            out.rto_s = self.clock() - started
            return out
        await asyncio.to_thread(self._remove_sidecars, target, row)
        now = self.clock()
        self._rpo(target, row, view, out)
        out.status = "promoted"
        out.rto_s = now - started
        return out

    def _rpo(
        self,
        target: RestoreTarget,
        row: dict[str, Any],
        view: ReplicaView | None,
        out: DbPromotion,
    ) -> None:
        """RPO from the data: when the primary wrote the newest change the replica holds
        (its last upload) minus when it wrote the newest change the promoted copy holds. The
        primary may have committed changes it never uploaded, up to litestream's WAL monitor
        interval plus its sync interval before it died: that is the resolution. Without a
        listing, the copy's age (an upper bound)."""
        out.rpo_resolution_s = target.sync_interval_s + MONITOR_INTERVAL_S
        usable = view is not None and not view.missing
        # The catch-up may fetch a change uploaded after the listing: newer than it, not behind.
        past = out.catch_up.startswith("applied") and diverged(
            view.newest_txid if view is not None else None, out.local_txid
        )
        if usable and view is not None and past:
            out.applied_at = out.replica_newest_at = view.newest_at
        elif usable and view is not None and not diverged(out.local_txid, view.newest_txid):
            out.applied_at = view.applied_at(out.local_txid)
            out.replica_newest_at = view.newest_at
            if out.local_txid is not None and out.local_txid == view.newest_txid:
                out.applied_at = out.replica_newest_at
        if out.applied_at is not None and out.replica_newest_at is not None:
            out.rpo_s = max(0.0, out.replica_newest_at - out.applied_at)
            out.rpo_basis = "replica"
            return
        if isinstance(row.get("applied_at"), int | float):
            out.applied_at = float(row["applied_at"])
            out.notes.append("RPO bound from the last check's listing (replica not listed now)")
        else:
            out.applied_at = target.path.stat().st_mtime
            out.notes.append("RPO bound from the copy's mtime (replica not listed)")
        # Upper bound: the time since the newest change the copy holds.
        out.rpo_s = max(0.0, self.clock() - out.applied_at)
        out.rpo_basis = "age (upper bound)"

    async def _list(self, target: RestoreTarget, out: DbPromotion) -> ReplicaView | None:
        if self.litestream is None:
            out.catch_up = "skipped: litestream not available"
            return None
        try:
            return await self.litestream.ltx(target.path)
        except LitestreamError as exc:
            out.catch_up = f"skipped: replica not listed ({exc.reason})"
            return None

    async def _catch_up(
        self, target: RestoreTarget, view: ReplicaView, out: DbPromotion, timeout_s: float
    ) -> None:
        newest = view.newest_txid
        if newest is None or (out.local_txid is not None and out.local_txid >= newest):
            out.catch_up = "not needed"
            return
        assert self.litestream is not None
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.work_dir / f"{target.name}~promote-{int(self.clock() * 1000)}.db"
        try:
            txid = await self.litestream.restore(
                target.path, tmp, integrity="full", timeout_s=timeout_s
            )
            if should_replace(txid, out.local_txid):
                os.chmod(tmp, 0o600)
                os.replace(tmp, target.path)
                fsync_dir(target.path.parent)
                out.catch_up = f"applied: TXID {out.local_txid} -> {txid}"
                out.local_txid = txid
            else:
                out.catch_up = f"not newer ({txid}); copy kept"
        except LitestreamError as exc:
            out.catch_up = f"failed ({exc.reason}); copy kept: {str(exc)[:200]}"
        finally:
            for leftover in (tmp, Path(f"{tmp}.tmp")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def _remove_sidecars(self, target: RestoreTarget, row: dict[str, Any]) -> None:
        candidates = [Path(f"{target.path}-txid"), snapshot_txid_path(self.work_dir, target.name)]
        for key in ("sidecar",):
            value = row.get(key)
            if isinstance(value, str):
                candidates.append(Path(value))
        with contextlib.suppress(OSError):
            candidates += [
                p for p in self.work_dir.iterdir() if p.name.startswith(f"{target.name}~")
            ]
        for path in candidates:
            with contextlib.suppress(OSError):
                path.unlink()

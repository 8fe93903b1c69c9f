"""One check round over the standby copies: list each replica that needs it (``litestream ltx``;
a follower that advances is judged from its own progress, see ``needs_listing``), restore a
snapshot-mode copy when it is due, read the TXID each copy holds, and record what
``assessment`` concludes (lag, divergence, freshness) in the copy's state and its gauges; a
follower that stalls is restarted fresh.

An adapter: the decisions are ``assessment``'s and ``policy``'s. It must never write to a replica,
and never restore or restart anything for a fenced copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge

from daemons.restore_loop.assessment import (
    SnapshotAction,
    assess_copy,
    copy_txid,
    needs_all_levels,
    needs_listing,
    progress_only,
    snapshot_step,
)
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.follower_pool import CopyContext, DbState
from daemons.restore_loop.litestream import Litestream, LitestreamError
from daemons.restore_loop.policy import (
    CheckRound,
    ReplicaView,
    busy_floor,
    level0_upload_rate,
    stall_threshold_s,
)
from daemons.restore_loop.snapshot import SnapshotRestorer, snapshot_txid_path
from daemons.restore_loop.state import RestoreTarget

__all__ = ["ReplicaChecker", "behind_after_s"]

RATE_MIN_S = 10.0  # a rate is measured over at least this long


def behind_after_s(section: RestoreLoopSection, target: RestoreTarget) -> float:
    """Lag at which a follower that advances but falls behind is restarted fresh (caught up):
    before its lag alerts (half the stale threshold), at most the stall threshold."""
    stall = stall_threshold_s(section.stall_after_s, target.follow_interval_s)
    return min(stall, target.stale_threshold_s / 2)


class ReplicaChecker:
    def __init__(
        self,
        ctx: CopyContext,
        *,
        lag: Gauge,
        local: Gauge,
        replica: Gauge,
        last_success: Gauge,
        failures: Counter,
        listings: Counter | None = None,
        floors: Callable[[DbState, float | None], bool] | None = None,
    ) -> None:
        self.section, self.work_dir, self.log = ctx.section, ctx.work_dir, ctx.log
        self.clock, self.is_fenced, self.dry_run = ctx.clock, ctx.is_fenced, ctx.dry_run
        self.start_slots = ctx.start_slots
        self.list_slots = asyncio.Semaphore(ctx.section.concurrency)
        self.opened_at = ctx.clock()
        self.snapshots: SnapshotRestorer | None = None
        self.m_lag, self.m_local, self.m_replica = lag, local, replica
        self.m_last_success, self.m_failures = last_success, failures
        self.m_listings = listings
        self.floors = floors

    async def run(self, states: Iterable[DbState], ls: Litestream) -> None:
        """Check every copy (``concurrency`` listings at once)."""
        if self.snapshots is None or self.snapshots.litestream is not ls:
            self.snapshots = SnapshotRestorer(
                ls,
                self.work_dir,
                restore_timeout_s=self.section.restore_timeout_s,
                log=self.log,
                is_fenced=self.is_fenced,
            )
        check_round = CheckRound(give_up_after=self.section.concurrency)
        await asyncio.gather(*(self.check(st, ls, self.snapshots, check_round) for st in states))

    def forget(self, target: RestoreTarget) -> None:
        """Drop the gauges of a copy that left the plan."""
        for gauge, labels in (
            (self.m_lag, (target.name, target.tier)),
            (self.m_local, (target.name,)),
            (self.m_replica, (target.name,)),
            (self.m_last_success, (target.name,)),
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    async def list_replica(
        self, st: DbState, ls: Litestream, check_round: CheckRound
    ) -> ReplicaView:
        async with self.list_slots:
            if check_round.unreachable:
                raise LitestreamError(
                    "unreachable",
                    f"not listed this round: {check_round.timeouts} listings in a row timed "
                    "out (the blob endpoint looks down)",
                )
            if self.m_listings is not None:
                self.m_listings.inc()
            try:
                listed = await ls.ltx(st.target.path)
            except LitestreamError as exc:
                check_round.record(exc.reason == "timeout")
                raise
            check_round.record(False)
            if needs_all_levels(listed, st.local_txid):
                listed = await ls.ltx(st.target.path, level="all")
            return listed

    async def first_listing(self, states: Iterable[DbState], ls: Litestream) -> None:
        """Before new followers start: one listing each (``concurrency`` at once), so a busy
        DB's follower starts at its upload rate's floor (litestream cannot change a running
        child's interval; otherwise it is restarted fresh once two listings measured the rate)
        and the first check needs no listing of its own. A failed listing changes nothing: the
        follower starts at the budget's interval and the checks list it as usual."""
        check_round = CheckRound(give_up_after=self.section.concurrency)

        async def one(st: DbState) -> None:
            try:
                view = await self.list_replica(st, ls, check_round)
            except LitestreamError:
                return
            self._record_listing(st, view)
            self._floor(st)

        await asyncio.gather(*(one(st) for st in states if st.target.mode == "follow"))

    async def check(
        self,
        st: DbState,
        ls: Litestream,
        snapshots: SnapshotRestorer,
        check_round: CheckRound,
    ) -> None:
        target = st.target
        view: ReplicaView | None = None
        follower = st.follower
        if (
            follower is not None
            and follower.state == "following"
            and not needs_listing(
                st,
                following=True,
                local_txid=follower.local_txid(),
                now=self.clock(),
                verify_s=self.section.verify_interval_s,
            )
        ):
            self.from_progress(st, follower.local_txid(), follower.suspect)
            return
        try:
            view = await self.list_replica(st, ls, check_round)
        except LitestreamError as exc:
            st.replica_error = str(exc)
            self.m_failures.labels(target.name, exc.reason).inc()
            st.failures += 1
            st.replica_missing = exc.reason == "replica_missing"
        else:
            self._record_listing(st, view)
        reset = False
        if target.mode == "snapshot":
            reset = await self.snapshot_if_due(st, view, snapshots)
        elif st.follower is not None:
            st.last_error = "" if st.follower.state == "following" else st.follower.last_error
        now = self.clock()
        st.checked_at = now
        previous = st.local_txid
        local = st.local_txid = await self.local_txid(st, snapshots)
        self._measure_progress(st, local)
        self._floor(st)
        if st.follower is not None and st.follower.state == "following":
            st.suspect = st.follower.suspect
        fresh = assess_copy(
            local_txid=local,
            previous_txid=previous,
            replica=view,
            reset=reset,
            applied_at=st.applied_at,
            verified_fresh_at=st.verified_fresh_at,
            last_success_at=st.last_success_at,
            opened_at=self.opened_at,
            now=now,
        )
        st.diverged, st.lag_s, st.applied_at = fresh.diverged, fresh.lag_s, fresh.applied_at
        st.verified_fresh_at, st.last_success_at = fresh.verified_fresh_at, fresh.last_success_at
        if fresh.compared and view is not None:
            self.m_replica.labels(target.name).set(view.newest_txid or 0)
            self.observe_stall(st, local, view, fresh.lag_s, now)
        if local is not None:
            self.m_local.labels(target.name).set(local)
        self.m_lag.labels(target.name, target.tier).set(fresh.lag_s)
        if st.last_success_at is not None:
            self.m_last_success.labels(target.name).set(st.last_success_at)

    def from_progress(self, st: DbState, local: int | None, suspect: str) -> None:
        """A following copy checked without a listing: its follower's TXID against the last
        listing (``needs_listing`` decided no subprocess was worth it)."""
        now = self.clock()
        st.last_error, st.checked_at, st.suspect = "", now, suspect
        fresh = progress_only(st, local, now)
        st.local_txid = local
        self._measure_progress(st, local)
        self._floor(st)
        st.lag_s, st.applied_at = fresh.lag_s, fresh.applied_at
        st.verified_fresh_at, st.last_success_at = fresh.verified_fresh_at, fresh.last_success_at
        if local is not None:
            self.m_local.labels(st.target.name).set(local)
        self.m_lag.labels(st.target.name, st.target.tier).set(fresh.lag_s)
        if st.last_success_at is not None:
            self.m_last_success.labels(st.target.name).set(st.last_success_at)

    def _floor(self, st: DbState) -> None:
        """Poll a busy DB at its upload rate so its follower keeps up (``busy_floor``)."""
        if st.target.mode != "follow" or self.floors is None:
            return
        floor = busy_floor(
            st.writes_per_s,
            st.target.sync_interval_s,
            st.target.follow_interval_s,
            st.floor_s,
            self.section.min_follow_interval_s,
        )
        self.floors(st, floor)

    def _record_listing(self, st: DbState, view: ReplicaView) -> None:
        """A successful listing: the DB's upload rate from it, and it is the copy's last."""
        self._measure_writes(st, view)
        st.replica_error, st.replica, st.replica_missing = "", view, view.missing
        st.listed_at = self.clock()

    def _measure_writes(self, st: DbState, view: ReplicaView) -> None:
        """Replicated TXIDs a second (one per LTX file the primary uploads: a sync interval
        with writes), for the upload bill and the poll cost, across listings at least
        RATE_MIN_S apart."""
        newest, now = view.newest_txid, self.clock()
        if newest is None:
            return
        if st.list_mark is None or newest < st.list_mark[1]:
            st.list_mark = (now, newest)
            if st.writes_per_s is None:  # a first listing: its level-0 files tell the rate
                rate = level0_upload_rate(view, now)
                if rate is not None:
                    st.writes_per_s, st.rate_listed_at = rate, now
            return
        since, txid = st.list_mark
        if now - since >= RATE_MIN_S:
            st.writes_per_s = (newest - txid) / (now - since)
            st.list_mark = (now, newest)
            st.rate_listed_at = now

    def _measure_progress(self, st: DbState, local: int | None) -> None:
        """The same rate from the follower's own progress (a copy that keeps up applies every
        upload), when no two listings measured it: an idle DB is never listed twice in a
        while, and its TXID does not move."""
        now = self.clock()
        if local is None:
            return
        f = st.follower
        started = f.started_at if f is not None else None
        mark = st.rate_mark
        if mark is None or local < mark[1] or (started is not None and started > mark[0]):
            st.rate_mark = (now, local)  # new, reset, or a fresh restore since (a jump)
            return
        since, txid = mark
        if now - since < RATE_MIN_S:
            return
        st.rate_mark = (now, local)
        if st.rate_listed_at is not None and now - st.rate_listed_at < 3 * RATE_MIN_S:
            return  # listed often (it is behind): the listings measure it, not its progress
        newest = st.replica.newest_txid if st.replica is not None else None
        if newest is not None and local < newest:
            return  # behind: its progress (one file a poll) is not the upload rate
        poll_s = f.child_interval_s if f is not None else None
        if poll_s and (local - txid) >= 0.8 * (now - since) / poll_s:
            # A file (nearly) every poll: all a follower can apply, so the DB may upload
            # faster; its progress is a lower bound, a listing tells (``saturated``).
            return
        st.writes_per_s = (local - txid) / (now - since)

    async def local_txid(self, st: DbState, snapshots: SnapshotRestorer) -> int | None:
        if st.target.mode == "snapshot":
            return await asyncio.to_thread(snapshots.current_txid, st.target)
        live = st.follower.local_txid() if st.follower is not None else None
        exists = live is None and st.seed_txid is not None and st.target.path.exists()
        local, st.seed_txid = copy_txid(live, st.seed_txid, exists)
        return local

    def observe_stall(
        self, st: DbState, local: int | None, view: ReplicaView, lag: float, now: float
    ) -> None:
        follower = st.follower
        if follower is None or follower.state != "following":
            return
        threshold = stall_threshold_s(self.section.stall_after_s, st.target.follow_interval_s)
        behind = behind_after_s(self.section, st.target)
        reason = st.watch.observe(local, view.newest_txid, lag, now, threshold, behind)
        if reason is not None and not self.is_fenced(st.target.name):
            self.log.warning(
                "follower stalled; restarting fresh",
                db=st.target.name,
                reason=reason,
                local_txid=local,
                replica_txid=view.newest_txid,
                lag_s=round(lag, 1),
            )
            follower.request_restart(reason)

    async def snapshot_if_due(
        self, st: DbState, view: ReplicaView | None, snapshots: SnapshotRestorer
    ) -> bool:
        """Restore the snapshot copy when due; True when its record was ahead of the replica
        (so it was reset and restored fresh)."""
        now = self.clock()
        name = st.target.name
        if self.dry_run or self.is_fenced(name):
            return False
        if view is None or view.missing:
            return False
        current = await asyncio.to_thread(snapshots.current_txid, st.target)
        interval = self.section.snapshot_interval_s
        step = snapshot_step(current, view.newest_txid, st.last_snapshot_at, interval, now)
        if step.reset:
            self.log.warning(
                "replica behind the snapshot copy; restoring fresh",
                db=name,
                local_txid=current,
                replica_txid=view.newest_txid,
            )
            record = snapshot_txid_path(self.work_dir, name)
            await asyncio.to_thread(record.unlink, missing_ok=True)
        if step.action is SnapshotAction.UP_TO_DATE:
            st.last_error = ""
        elif step.action is SnapshotAction.RESTORE:
            st.last_snapshot_at = now
            await self.restore_snapshot(st, snapshots)
        return step.reset

    async def restore_snapshot(self, st: DbState, snapshots: SnapshotRestorer) -> None:
        name = st.target.name
        try:
            async with self.start_slots:
                result = await snapshots.restore(st.target)
        except LitestreamError as exc:
            self._restore_failed(st, exc.reason, str(exc))
            return
        except (OSError, sqlite3.Error) as exc:
            self._restore_failed(st, "local", f"{type(exc).__name__}: {exc}", str(exc))
            return
        st.last_error = ""
        if result.replaced:
            st.last_success_at = self.clock()
            self.log.info(
                "standby copy replaced by a snapshot restore",
                db=name,
                txid=result.txid,
                duration_s=round(result.duration_s, 2),
            )

    def _restore_failed(self, st: DbState, reason: str, error: str, logged: str = "") -> None:
        self.m_failures.labels(st.target.name, reason).inc()
        st.failures += 1
        st.last_error = error
        self.log.warning(
            "snapshot restore failed; copy kept", db=st.target.name, error=logged or error
        )

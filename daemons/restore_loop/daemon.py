"""The restore-loop daemon: keeps the standby's copies of the replicated SQLite DBs fresh.

Each cycle (every ``interval_s``) it re-reads the role file (a promoted host stops restoring at
once), reloads the plan when its files change (``plan_files``), keeps one follower child per
follow-mode DB (``follower_pool``), and every ``check_interval_s`` lists each replica to judge its
copy and restore due snapshot-mode copies (``replica_check``, deciding with ``assessment``), probes
the primary's /health (``primary_watch``: fast follow while it is down), raises
or clears #ops incidents (``incidents``) and writes the status file (``status_doc``). A watcher
honours the promotion fence within half a second. This module only wires those together; it runs
only on a standby and must never write to a replica, nor touch a DB that is fenced or promoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from daemons.restore_loop import status_doc
from daemons.restore_loop.assessment import first_unusable_error, usable
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.fencing import Fencing
from daemons.restore_loop.follower_pool import CopyContext, DbState, FollowerPool, running
from daemons.restore_loop.incidents import AlertBook, copy_facts
from daemons.restore_loop.litestream import Litestream, LitestreamError, open_litestream
from daemons.restore_loop.manifest import MANIFEST
from daemons.restore_loop.plan import list_requests_per_day
from daemons.restore_loop.plan_files import PlanFiles, SetupError
from daemons.restore_loop.policy import CheckSchedule
from daemons.restore_loop.primary_watch import PrimaryWatch
from daemons.restore_loop.replica_check import ReplicaChecker
from daemons.restore_loop.state import StatePaths, work_dir_for
from shared.config import FleetConfig
from shared.runtime import CycleResult, Daemon, DaemonContext

__all__ = ["RestoreLoop", "SetupError"]


class RestoreLoop(Daemon[RestoreLoopSection]):
    manifest = MANIFEST

    def __init__(self, ctx: DaemonContext[RestoreLoopSection]) -> None:
        super().__init__(ctx)
        self.config: FleetConfig = ctx.config
        self.paths = StatePaths.under(ctx.config.state_dir)
        self.work_dir = work_dir_for(self.section.standby_dir)
        self.clock = ctx.clock
        self.alerts = AlertBook(host=ctx.config.fleet.host, channel=ctx.config.slack.ops_channel)
        self.dbs: dict[str, DbState] = {}
        self.plan_files = PlanFiles(self.section, self.log)
        self.litestream: Litestream | None = None
        self.fencing = Fencing(ctx.config.role_file, self.paths.fence, self.clock)
        self.check_schedule = CheckSchedule(self.section.check_interval_s)
        self._first_cycle = True
        #: the status document last written, and when (``status_doc.worth_writing``)
        self._last_status: tuple[dict[str, Any] | None, float] = (None, 0.0)
        self._previous_txids: dict[str, int] = {}
        self._watcher: asyncio.Task[None] | None = None
        metrics = self.own_metrics()
        self.m_lag = metrics.gauge("fleet_restore_lag_seconds")
        self.m_local = metrics.gauge("fleet_restore_local_txid")
        self.m_replica = metrics.gauge("fleet_restore_replica_txid")
        self.m_restarts = metrics.counter("fleet_restore_follower_restarts_total")
        self.m_last_success = metrics.gauge("fleet_restore_last_success_timestamp_seconds")
        self.m_failures = metrics.counter("fleet_restore_failures_total")
        self.m_rpo = metrics.gauge("fleet_restore_rpo_target_seconds")
        self.m_followers = metrics.gauge("fleet_restore_followers")
        self.m_requests = metrics.gauge("fleet_restore_blob_list_requests_per_day")
        self.m_promoted = metrics.gauge("fleet_restore_promoted")
        self.m_promoted.set(0)
        self.m_interval = metrics.gauge("fleet_restore_follow_interval_seconds")
        self.m_fast = metrics.gauge("fleet_restore_fast_follow")
        self.m_fast.set(0)
        self.m_primary_up = metrics.gauge("fleet_restore_primary_up")
        self.m_listings = metrics.counter("fleet_restore_replica_listings_total")
        s = self.section
        self.primary = (
            PrimaryWatch(
                s.primary_health_url,
                down_after=s.primary_down_after,
                deadline_s=min(2.0, s.interval_s),
            )
            if s.primary_health_url
            else None
        )
        for tier, seconds in self.section.rpo_target_s.items():
            self.m_rpo.labels(tier).set(min(seconds, self.section.stale_after_s))
        copies = CopyContext(
            section=self.section,
            work_dir=self.work_dir,
            log=self.log,
            clock=self.clock,
            dry_run=ctx.dry_run,
            is_fenced=self.fencing.is_fenced,
            start_slots=asyncio.Semaphore(self.section.concurrency),
        )
        self.followers = FollowerPool(copies, restarts=self.m_restarts, failures=self.m_failures)
        self.checker = ReplicaChecker(
            copies,
            lag=self.m_lag,
            local=self.m_local,
            replica=self.m_replica,
            last_success=self.m_last_success,
            failures=self.m_failures,
            listings=self.m_listings,
            floors=self.followers.apply_floor,
        )

    @property
    def expected_interval_s(self) -> float:
        # A cycle that runs a check round may take a listing timeout longer than a tick.
        s = self.section
        return max(s.interval_s, s.check_interval_s) + s.call_timeout_s

    def is_fenced(self, name: str) -> bool:
        return self.fencing.is_fenced(name)

    @property
    def _promoted(self) -> bool:
        return self.fencing.promoted

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        status = await asyncio.to_thread(self.paths.read_status) or {}
        self.alerts.load(status_doc.previous_incidents(status))
        self._previous_txids = status_doc.previous_txids(status)
        if not self.ctx.dry_run:
            leftovers = status_doc.leftover_followers(status, os.getpid())
            await self.followers.clear_leftovers(leftovers)
        self._watcher = asyncio.create_task(self._watch_fence(), name="restore-loop-fence")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.primary is not None:
            await self.primary.close()
        await self._stop(list(self.dbs.values()))
        if self.dbs:
            with contextlib.suppress(OSError):
                await self._write_status()

    async def _stop(self, states: list[DbState]) -> None:
        await self.followers.stop(states)
        self.m_followers.set(running(self.dbs.values()))

    async def _write_status(self) -> None:
        if self.ctx.dry_run:
            return
        doc = self._status_doc()
        last, written_at = self._last_status
        if status_doc.worth_writing(
            last, doc, written_at=written_at, every_s=self.section.check_interval_s
        ):
            await asyncio.to_thread(self.paths.write_status, doc)
            self._last_status = (doc, doc["updated_at"])

    # fence watcher ---------------------------------------------------------------------------
    async def _watch_fence(self) -> None:
        """Twice a second: a promotion fence stops the fenced followers (then acknowledges in
        the status file); a role file saying primary stops them all."""
        while True:
            try:
                await self._apply_fence()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the watcher must outlive a bad file
                self.log.warning("fence check failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)

    async def _apply_fence(self) -> None:
        if not self._promoted and self.fencing.role_confirms_primary():
            await self._become_promoted()
            return
        active = self.fencing.active()
        stopped = await self.followers.fence_stop(
            [st for st in self.dbs.values() if self.fencing.stops(active, st.target.name)]
        )
        if stopped:
            self.log.info("followers stopped for promotion", dbs=stopped)
        # Acknowledged only once its followers are stopped: promote waits for this.
        if active is not None and self.fencing.ack != active.id:
            self.fencing.ack = active.id
            await self._write_status()
        if self.fencing.lifted(active):
            self.followers.wake(self.dbs.values())

    async def _become_promoted(self) -> None:
        """The role file says primary (a promotion finished): stop every follower for good."""
        if self._promoted:
            return
        self.fencing.promoted = True
        self.m_promoted.set(1)
        self.log.warning("this host was promoted; stopping every follower for good")
        await self._stop(list(self.dbs.values()))
        await self._write_status()

    # cycle -----------------------------------------------------------------------------------
    async def _ensure_litestream(self) -> Litestream:
        if self.litestream is None:
            s = self.section
            try:
                self.litestream = await open_litestream(
                    s.litestream_bin, s.config_path, call_timeout_s=s.call_timeout_s, log=self.log
                )
            except LitestreamError as exc:
                raise SetupError(str(exc)) from None
        return self.litestream

    async def cycle(self) -> CycleResult:
        if self._promoted or self.fencing.role_confirms_primary():
            await self._become_promoted()
            return CycleResult(detail={"promoted": True})
        ls = await self._ensure_litestream()
        plan, new_plan = await self.plan_files.load()
        if new_plan:
            self.m_requests.set(list_requests_per_day(self.section, plan))
            self.log.info(
                "follow intervals derived from the budget",
                intervals_s=plan.derived_intervals,
                budget=self.section.budget_eur_month,
                list_per_day=round(list_requests_per_day(self.section, plan)),
            )
        gone = await self.followers.reconcile(
            self.dbs,
            plan,
            ls,
            seeds=self._previous_txids,
            may_revive=lambda: not self._promoted,
            prepare=self.checker.first_listing,
        )
        for target in gone:
            self.checker.forget(target)
        await self._watch_primary()
        if self._first_cycle:
            await self.followers.await_first_attempts(self.dbs.values())
        due = self.check_schedule.due(time.monotonic())
        if due:
            await self.checker.run(list(self.dbs.values()), ls)
            await self._raise_alerts()
        self._first_cycle = False
        self.followers.clear_recovered(self.dbs.values())
        self.m_followers.set(running(self.dbs.values()))
        await self._write_status()
        unusable = first_unusable_error(self.dbs.values())
        if due and unusable is not None and not self.ctx.dry_run:
            raise SetupError(unusable)
        healthy = sum(1 for st in self.dbs.values() if usable(st))
        return CycleResult(detail={"dbs": len(self.dbs), "checked": due, "healthy": healthy})

    async def _watch_primary(self) -> None:
        """One probe of the primary's /health: when it stops answering, fast follow for every
        P0 follower at once; when it answers again, back to the budget's intervals."""
        if self.primary is not None:
            changed = await self.primary.probe()
            self.m_primary_up.set(1 if self.primary.up else 0)
            if changed is not None:
                switched = self.followers.set_fast(not changed, self.dbs.values())
                self.m_fast.set(0 if changed else 1)
                if changed:
                    self.log.info("primary answers again; back to the budget's intervals")
                else:
                    self.log.warning(
                        "primary does not answer; P0 followers switch to fast follow",
                        error=self.primary.last_error,
                        interval_s=self.section.fast_follow_interval_s,
                        dbs=switched,
                    )
        tiers: dict[str, float] = {}
        for st in self.dbs.values():
            if st.target.mode == "follow":
                iv = self.followers.interval_for(st)
                tiers[st.target.tier] = min(iv, tiers.get(st.target.tier, iv))
        for tier, iv in tiers.items():
            self.m_interval.labels(tier).set(iv)

    async def _raise_alerts(self) -> None:
        now = self.clock()
        limit = self.section.max_restarts_per_hour
        for st in self.dbs.values():
            for message in self.alerts.observe(copy_facts(st, st.state, limit, now), now):
                self.log.warning("restore incident", text=message.text, dedup_key=message.dedup_key)
                await self.ctx.notify(message)

    def _status_doc(self) -> dict[str, Any]:
        now, plan = self.clock(), self.plan_files.plan
        return status_doc.status_document(
            host=self.config.fleet.host,
            pid=os.getpid(),
            now=now,
            promoted=self._promoted,
            fence_ack=self.fencing.ack,
            incidents=self.alerts.to_json(),
            problems=plan.problems if plan else (),
            plan_error=self.plan_files.error,
            rows=[
                st.row(promoted=self._promoted, work_dir=self.work_dir, now=now)
                for st in self.dbs.values()
            ],
        )

"""The standby copies the plan names (``DbState``) and the follower supervisors of the
follow-mode ones: started when a copy enters the plan, started again when one dies of an
unexpected error, stopped for a plan change, a fence, a promotion or shutdown; plus the leftovers
of a previous run (its followers, its work files).

An adapter: its decisions (freshness, incidents) live in ``assessment`` and ``incidents``; what it
learns goes into each copy's ``DbState``. It must never start a follower for a fenced copy
(``Follower`` checks) and never delete a standby copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from daemons.restore_loop.assessment import CopyState
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.follower import Follower
from daemons.restore_loop.litestream import Litestream
from daemons.restore_loop.plan import Plan
from daemons.restore_loop.snapshot import snapshot_txid_path
from daemons.restore_loop.state import RestoreTarget, pid_alive, process_cmdline
from daemons.restore_loop.status_doc import FollowerView, LeftoverFollower, database_row
from shared.clock import Clock

__all__ = [
    "CopyContext",
    "DbState",
    "FollowerPool",
    "clean_work_dir",
    "kill_leftover_followers",
    "running",
]


# Restarts that are chosen, not faults, so they do not count towards the flapping alert: the
# interval switches (fast follow on and off, a busy DB's floor), and the catch-up of a follower
# that polls slower than its busy DB uploads (litestream 0.5.17 applies one LTX file per poll).
SWITCHES = ("fast_follow", "slow_follow", "busy_floor", "falling_behind")


@dataclass
class DbState(CopyState):
    """One copy's state and, in follow mode, its follower and the task supervising it."""

    follower: Follower | None = None
    task: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        if self.target.mode == "snapshot":
            return "snapshot"
        return self.follower.state if self.follower is not None else "idle"

    def row(self, *, promoted: bool, work_dir: Path, now: float) -> dict[str, Any]:
        """This copy's row of the status document."""
        f = self.follower
        view = (
            FollowerView(self.state, f.pid, f.output, f.sidecar, f.child_interval_s)
            if f
            else FollowerView(self.state)
        )
        snapshot_record = (
            snapshot_txid_path(work_dir, self.target.name)
            if self.target.mode == "snapshot"
            else None
        )
        return database_row(
            self, view, promoted=promoted, snapshot_txid_file=snapshot_record, now=now
        )


@dataclass(frozen=True)
class CopyContext:
    """What the adapters working on the copies share."""

    section: RestoreLoopSection
    work_dir: Path
    log: Any
    clock: Clock
    dry_run: bool
    is_fenced: Callable[[str], bool]
    #: full restores (fresh followers and snapshots alike) take one of these slots
    start_slots: asyncio.Semaphore


class FollowerPool:
    def __init__(self, ctx: CopyContext, *, restarts: Counter, failures: Counter) -> None:
        self.section, self.work_dir, self.log = ctx.section, ctx.work_dir, ctx.log
        self.clock, self.is_fenced, self.dry_run = ctx.clock, ctx.is_fenced, ctx.dry_run
        self.start_slots = ctx.start_slots
        self.m_restarts = restarts
        self.m_failures = failures
        #: the primary does not answer: P0 followers poll at fast_follow_interval_s
        self.fast = False

    def interval_for(self, st: DbState) -> float:
        """The poll interval a fresh follower of ``st`` gets now: the budget's, floored for a
        busy DB (it keeps up), fast follow for P0 while the primary is down."""
        interval = st.target.follow_interval_s
        if st.floor_s is not None:
            interval = min(interval, st.floor_s)
        if self.fast and st.target.tier == "P0":
            interval = min(interval, self.section.fast_follow_interval_s)
        return interval

    def apply_floor(self, st: DbState, floor_s: float | None) -> bool:
        """Set a busy DB's poll floor; restart its follower when its interval changes."""
        if floor_s == st.floor_s:
            return False
        st.floor_s = floor_s
        f = st.follower
        if f is None or f.pid is None or f.child_interval_s == self.interval_for(st):
            return False
        self.log.info(
            "follower interval changes with the DB's upload rate",
            db=st.target.name,
            interval_s=self.interval_for(st),
            uploads_per_s=st.writes_per_s,
        )
        f.request_restart("busy_floor" if floor_s is not None else "slow_follow")
        return True

    def set_fast(self, fast: bool, states: Iterable[DbState]) -> list[str]:
        """Switch fast follow on or off: restart the followers whose interval changes
        (litestream cannot change a running child's interval). A P0 follower that already polls
        at the fast interval (a busy DB at its floor) keeps running: it is current, and a fresh
        restore would replay every LTX file since the last snapshot, which grows with the
        history (after 5 minutes of writes, 17 of them made promote wait 30 s). One that falls
        behind all the same is caught by the stall and falling-behind checks. Returns the DBs
        restarted."""
        self.fast = fast
        switched = []
        for st in states:
            f = st.follower
            if f is None or f.pid is None:
                continue
            if fast and st.target.tier != "P0":
                continue
            if f.child_interval_s == self.interval_for(st):
                continue
            f.request_restart("fast_follow" if fast else "slow_follow")
            switched.append(st.target.name)
        return switched

    async def reconcile(
        self,
        dbs: dict[str, DbState],
        plan: Plan,
        ls: Litestream,
        *,
        seeds: dict[str, int],
        may_revive: Callable[[], bool],
        prepare: Callable[[list[DbState], Litestream], Awaitable[None]] | None = None,
    ) -> list[RestoreTarget]:
        """Make ``dbs`` hold the plan's copies: stop and drop those that left it or changed,
        add the new ones (``seeds``: their TXIDs from the previous run) with a follower in
        follow mode (``prepare`` runs first: their first listings), and replace the supervisors
        that died (unless ``may_revive`` says no: a promoted host). Returns the targets
        dropped."""
        wanted = plan.by_name()
        gone = [st for name, st in dbs.items() if wanted.get(name) != st.target]
        if gone:
            await self.stop(gone)
            for st in gone:
                del dbs[st.target.name]
        new: list[DbState] = []
        for name, target in wanted.items():
            if name in dbs:
                if may_revive():
                    self.revive(dbs[name], ls)
                continue
            st = dbs[name] = DbState(target, seed_txid=seeds.get(name))
            if self.dry_run:
                self.log.info(
                    "dry-run: would restore and keep this copy fresh",
                    db=name,
                    mode=target.mode,
                    path=str(target.path),
                    interval_s=target.follow_interval_s,
                )
            elif target.mode == "follow":
                new.append(st)
        if new and prepare is not None:
            await prepare(new, ls)
        await self.start(new, ls)
        return [st.target for st in gone]

    async def start(self, states: list[DbState], ls: Litestream) -> None:
        if not states:
            return
        await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        for st in states:
            self._spawn(st, ls)

    def revive(self, st: DbState, ls: Litestream) -> None:
        """A follower supervisor that ended without stop() died of an unexpected error: log it
        once and start a new one (the copy would otherwise be "restoring" forever)."""
        task = st.task
        if task is None or not task.done():
            return
        error = "cancelled" if task.cancelled() else repr(task.exception())
        self.log.error(
            "follower supervisor died; starting a new one", db=st.target.name, error=error
        )
        self.m_failures.labels(st.target.name, "supervisor").inc()
        st.failures += 1
        st.last_error = f"follower supervisor died: {error}"
        self._spawn(st, ls)

    async def stop(self, states: Iterable[DbState]) -> None:
        followers = [s for s in states if s.follower is not None]
        await asyncio.gather(*(s.follower.stop() for s in followers if s.follower is not None))
        for st in followers:
            if st.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(st.task, 5.0)
                st.task = None

    async def fence_stop(self, states: Iterable[DbState]) -> list[str]:
        """Stop the running children of ``states`` until their fence lifts; the names."""
        stop = [st for st in states if st.follower is not None and st.follower.pid is not None]
        await asyncio.gather(*(st.follower.fence_stop() for st in stop if st.follower))
        return [st.target.name for st in stop]

    @staticmethod
    def clear_recovered(states: Iterable[DbState]) -> None:
        """A follower's errors (exit, start failure) end when a fresh one follows; do not wait
        for the next check round to say so (status readers would see both at once)."""
        for st in states:
            if st.follower is not None and st.follower.state == "following":
                st.last_error = ""

    @staticmethod
    def wake(states: Iterable[DbState]) -> None:
        """A fence lifted: the fenced supervisors start again now, not after their sleep."""
        for st in states:
            if st.follower is not None:
                st.follower.wake()

    async def clear_leftovers(self, followers: list[LeftoverFollower]) -> None:
        """Kill the ``followers`` a previous run left running, then remove its work files."""

        def clear() -> None:
            kill_leftover_followers(followers, self.log)
            clean_work_dir(self.work_dir)

        await asyncio.to_thread(clear)

    async def await_first_attempts(self, states: Iterable[DbState]) -> None:
        """The first cycle reports real state: wait (bounded) until every follower made its
        first attempt, so `--once` restores everything once."""
        waits = [st.follower.first_attempt_done.wait() for st in states if st.follower is not None]
        if not waits:
            return
        budget = min(self.section.restore_timeout_s + 5, self.section.cycle_timeout_s * 0.8)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), budget)

    def _spawn(self, st: DbState, ls: Litestream) -> None:
        name = st.target.name

        def on_restart(reason: str, detail: str) -> None:
            self.m_restarts.labels(name, reason).inc()
            st.watch.reset()
            if reason in SWITCHES:
                return  # chosen, not a fault: no flapping alert
            st.restarts.add(self.clock(), reason)
            st.watch.reset()
            if reason == "exit":
                st.last_error = detail

        def on_failure(reason: str, detail: str) -> None:
            self.m_failures.labels(name, reason).inc()
            st.failures += 1
            st.last_error = detail
            if reason == "replica_missing":
                st.replica_missing = True

        def on_suspect(detail: str) -> None:
            st.suspect = detail

        st.follower = Follower(
            st.target,
            ls,
            self.work_dir,
            start_slots=self.start_slots,
            restore_timeout_s=self.section.restore_timeout_s,
            backoff_max_s=self.section.restart_backoff_max_s,
            log=self.log,
            is_fenced=self.is_fenced,
            on_restart=on_restart,
            on_failure=on_failure,
            clock=self.clock,
            on_suspect=on_suspect,
            interval_s=lambda: self.interval_for(st),
        )
        st.task = asyncio.create_task(st.follower.run(), name=f"follower-{name}")


def running(states: Iterable[DbState]) -> int:
    return sum(1 for s in states if s.follower and s.follower.pid)


def kill_leftover_followers(leftovers: Iterable[LeftoverFollower], log: Any) -> None:
    """Kill the followers of a previous run that outlived it, those whose command line still
    names our work dir. Blocking (reads /proc or runs ps): call it in a worker thread."""
    for row in leftovers:
        if not pid_alive(row.pid):
            continue
        cmdline = process_cmdline(row.pid) or ""
        if "litestream" in cmdline and row.output in cmdline:
            log.warning("killing follower left by a previous run", pid=row.pid, db=row.db)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(row.pid, 9)


def clean_work_dir(work_dir: Path) -> None:
    """Remove a previous run's temporary restores and sidecars (snapshot records stay).
    Blocking: call it in a worker thread."""
    try:
        entries = list(work_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith("~snapshot.txid"):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()

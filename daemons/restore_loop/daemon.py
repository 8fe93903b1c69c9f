"""The restore-loop daemon: keeps the standby's copies of the replicated SQLite DBs fresh.

Each cycle (every ``interval_s``) it re-reads the role file (a promoted host stops restoring at
once), reloads the plan when its files change, keeps one follower child per follow-mode DB
(restarted fresh when it exits or stalls), restores due snapshot-mode DBs, and every
``check_interval_s`` compares each copy's TXID with its replica's newest (``litestream ltx``) to
measure lag, detect stalls and raise or clear #ops incidents. A watcher honours the promotion
fence within half a second. It runs only on a standby and must never write to a replica, nor
touch a DB that is fenced or promoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from daemons.restore_loop.catalog import CatalogError, TierTable, load_tier_table
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.follower import Follower
from daemons.restore_loop.litestream import (
    Litestream,
    LitestreamError,
    find_litestream,
)
from daemons.restore_loop.litestream_yaml import LitestreamConfigError, read_restore_config
from daemons.restore_loop.plan import Plan, build_plan
from daemons.restore_loop.policy import (
    AlertBook,
    CheckRound,
    ReplicaView,
    RestartLog,
    StallWatch,
    diverged,
    format_age,
    lag_seconds,
    monthly_cost,
    requests_per_day,
    stall_threshold_s,
)
from daemons.restore_loop.snapshot import SnapshotRestorer, snapshot_txid_path
from daemons.restore_loop.state import (
    Fence,
    RestoreTarget,
    StatePaths,
    pid_alive,
    process_cmdline,
    work_dir_for,
)
from shared.config import FleetConfig
from shared.runtime import CycleResult, Daemon, DaemonContext, UnitProfile, effective_role
from shared.sections import DaemonSection

if TYPE_CHECKING:
    from shared.units import CompanionService

__all__ = ["RestoreLoop", "SetupError"]


class SetupError(Exception):
    """The restore plan cannot be built (missing binary, config or tier table)."""


@dataclass
class DbState:
    target: RestoreTarget
    watch: StallWatch = field(default_factory=StallWatch)
    restarts: RestartLog = field(default_factory=RestartLog)
    follower: Follower | None = None
    task: asyncio.Task[None] | None = None
    replica: ReplicaView | None = None
    replica_error: str = ""
    replica_missing: bool = False
    checked_at: float | None = None
    local_txid: int | None = None
    lag_s: float | None = None
    applied_at: float | None = None
    verified_fresh_at: float | None = None
    last_success_at: float | None = None
    last_snapshot_at: float | None = None
    last_error: str = ""
    failures: int = 0
    # TXID of the copy left by the previous run, until a new follower reports its own.
    seed_txid: int | None = None
    # The replica's newest TXID is behind the copy's (reset, recreated, new URL).
    diverged: bool = False
    # Why the copy may be torn (quick_check failed after a follower died); "" when fine.
    suspect: str = ""

    @property
    def state(self) -> str:
        if self.target.mode == "snapshot":
            return "snapshot"
        return self.follower.state if self.follower is not None else "idle"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class RestoreLoop(Daemon):
    name = "restore-loop"

    def __init__(self, ctx: DaemonContext) -> None:
        super().__init__(ctx)
        assert isinstance(ctx.section, RestoreLoopSection)
        self.section: RestoreLoopSection = ctx.section
        self.config: FleetConfig = ctx.config
        self.paths = StatePaths.under(ctx.config.state_dir)
        self.work_dir = work_dir_for(self.section.standby_dir)
        self.clock = ctx.clock
        self.alerts = AlertBook(host=ctx.config.fleet.host, channel=ctx.config.slack.ops_channel)
        self.dbs: dict[str, DbState] = {}
        self.plan: Plan | None = None
        self.litestream: Litestream | None = None
        self.snapshots: SnapshotRestorer | None = None
        self._plan_key: tuple[Any, ...] | None = None
        self._reported_problems: set[tuple[str, str]] = set()
        self._first_cycle = True
        self._last_check_mono: float | None = None
        self._opened_at = ctx.clock()
        self._fence: Fence | None = None
        self._fence_ack: str | None = None
        self._promoted = False
        self._primary_reads = 0
        self._plan_error = ""
        self._previous_txids: dict[str, int] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._start_slots = asyncio.Semaphore(self.section.concurrency)
        self._list_slots = asyncio.Semaphore(self.section.concurrency)
        registry = ctx.metrics.registry
        self.m_lag = Gauge(
            "fleet_restore_lag_seconds",
            "Age of the oldest replica change not yet in the standby copy (0: caught up)",
            ["db", "tier"],
            registry=registry,
        )
        self.m_local = Gauge(
            "fleet_restore_local_txid", "TXID the standby copy holds", ["db"], registry=registry
        )
        self.m_replica = Gauge(
            "fleet_restore_replica_txid", "Newest TXID in the replica", ["db"], registry=registry
        )
        self.m_restarts = Counter(
            "fleet_restore_follower_restarts",
            "Follower children restarted fresh, by reason (exit, stall, falling_behind, diverged)",
            ["db", "reason"],
            registry=registry,
        )
        self.m_last_success = Gauge(
            "fleet_restore_last_success_timestamp_seconds",
            "Unix time the copy was last verified caught up or advancing, or last restored",
            ["db"],
            registry=registry,
        )
        self.m_failures = Counter(
            "fleet_restore_failures",
            "Failed litestream calls and restores, by reason",
            ["db", "reason"],
            registry=registry,
        )
        self.m_rpo = Gauge(
            "fleet_restore_rpo_target_seconds",
            "RPO target of a tier (alert when fleet_restore_lag_seconds exceeds it)",
            ["tier"],
            registry=registry,
        )
        self.m_followers = Gauge(
            "fleet_restore_followers", "Follower children running", registry=registry
        )
        self.m_requests = Gauge(
            "fleet_restore_blob_list_requests_per_day",
            "Estimated blob LIST requests a day of the current plan (follower polls + checks)",
            registry=registry,
        )
        self.m_promoted = Gauge(
            "fleet_restore_promoted",
            "1 once this host was promoted (every follower stopped for good), else 0",
            registry=registry,
        )
        self.m_promoted.set(0)
        for tier, seconds in self.section.rpo_target_s.items():
            self.m_rpo.labels(tier).set(min(seconds, self.section.stale_after_s))

    # fencing ---------------------------------------------------------------------------------
    @classmethod
    def refuse_reason(cls, section: DaemonSection, role: str) -> str | None:
        if role != "standby":
            return (
                f"restore-loop runs only on a standby, and this host's role is {role} ([fleet] "
                "role, overridden by <root>/state/role); it would overwrite this host's "
                "databases with replica copies. On the warm standby run `fleet role set standby`"
            )
        return None

    @classmethod
    def unit_profile(cls, config: FleetConfig) -> UnitProfile:
        section = config.restore_loop
        try:
            count = len(load_tier_table(section.databases_file).in_tiers(section.tiers))
        except CatalogError:
            count = 60
        # Each follower is a Go process: ~30 MB RSS and ~8 threads (litestream 0.5.17).
        return UnitProfile(
            write_paths=(section.standby_dir, config.state_dir / "restore-loop"),
            tasks_max=64 + 12 * count,
            memory_max_mb=256 + 40 * count,
        )

    @classmethod
    def companion_services(cls, config: FleetConfig, prefix: Path) -> list[CompanionService]:
        """On the primary: one hardened `litestream replicate` service per retention class
        (0.5 has a single global snapshot.retention), generated with the fleet's units."""
        from daemons.restore_loop.litestream_yaml import render_primary
        from shared.units import CompanionService  # imported here: shared.units is heavy

        section = config.restore_loop
        if effective_role(config) != "primary" or not section.databases_file.is_file():
            return []
        try:
            table = load_tier_table(section.databases_file)
        except CatalogError:
            return []
        conf_dir = config.fleet.root / "config"
        return [
            CompanionService(
                name=f"litestream-{f.retention_class}",
                description=f"litestream replicate ({f.retention_class}, {len(f.databases)} DBs)",
                argv=(
                    str(prefix / "bin" / "litestream"),
                    "replicate",
                    "-config",
                    str(conf_dir / f.name),
                ),
                profile=UnitProfile(write_paths=(section.standby_dir,), memory_max_mb=512),
                environment_file=conf_dir / "litestream.env",
            )
            for f in render_primary(table, section.standby_dir)
            if f.name.endswith(".yml")
        ]

    @property
    def expected_interval_s(self) -> float:
        # A cycle that runs a check round may take a listing timeout longer than a tick.
        s = self.section
        return max(s.interval_s, s.check_interval_s) + s.call_timeout_s

    def _role_file_reads(self) -> str | None:
        """The role file's word ('primary'/'standby'), or None when missing, unreadable or
        garbled. Never falls back to ``[fleet] role``: one bad read must not promote."""
        try:
            text = self.config.role_file.read_text(encoding="utf-8").strip().lower()
        except OSError:
            return None
        return text if text in ("primary", "standby") else None

    def _role_confirms_primary(self) -> bool:
        """Promoted only when the role file positively reads primary twice in a row."""
        if self._role_file_reads() == "primary":
            self._primary_reads += 1
        else:
            self._primary_reads = 0
        return self._primary_reads >= 2

    def is_fenced(self, name: str) -> bool:
        # A role file saying primary (promote just finished and cleared its fence) fences
        # everything at once, before the daemon confirmed the promotion.
        if self._promoted or self._role_file_reads() == "primary":
            return True
        fence = self.paths.read_fence()
        return fence is not None and fence.covers(name) and fence.active(self.clock())

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        status = await asyncio.to_thread(self.paths.read_status)
        if status is not None:
            self.alerts.load(list(status.get("incidents") or []))
            for row in status.get("databases") or []:
                if isinstance(row.get("local_txid"), int) and row.get("mode") == "follow":
                    self._previous_txids[str(row.get("db"))] = int(row["local_txid"])
            if not self.ctx.dry_run:
                await asyncio.to_thread(self._kill_stale_followers, status)
        if not self.ctx.dry_run:
            await asyncio.to_thread(self._clean_work_dir)
        self._watcher = asyncio.create_task(self._watch_fence(), name="restore-loop-fence")

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._stop_followers(list(self.dbs.values()))
        if not self.ctx.dry_run and self.dbs:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.paths.write_status, self._status_doc())

    def _kill_stale_followers(self, status: dict[str, Any]) -> None:
        """Followers of a previous run that outlived it (SIGKILLed daemon outside a service
        manager): kill those whose command line still names our work dir."""
        for row in status.get("databases") or []:
            pid = row.get("follower_pid")
            output = row.get("follower_output")
            if not isinstance(pid, int) or not isinstance(output, str) or pid == os.getpid():
                continue
            if not pid_alive(pid):
                continue
            cmdline = process_cmdline(pid) or ""
            if "litestream" in cmdline and output in cmdline:
                self.log.warning(
                    "killing follower left by a previous run", pid=pid, db=row.get("db")
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, 9)

    def _clean_work_dir(self) -> None:
        try:
            entries = list(self.work_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.endswith("~snapshot.txid"):
                continue
            with contextlib.suppress(OSError):
                entry.unlink()

    async def _stop_followers(self, states: list[DbState]) -> None:
        followers = [s for s in states if s.follower is not None]
        await asyncio.gather(*(s.follower.stop() for s in followers if s.follower is not None))
        for st in followers:
            if st.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(st.task, 5.0)
                st.task = None
        self.m_followers.set(sum(1 for s in self.dbs.values() if s.follower and s.follower.pid))

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
        now = self.clock()
        if not self._promoted and self._role_confirms_primary():
            await self._become_promoted()
            return
        fence = self.paths.read_fence()
        active = fence if fence is not None and fence.active(now) else None
        stop = [
            st
            for st in self.dbs.values()
            if st.follower is not None
            and st.follower.pid is not None
            and (self._promoted or (active is not None and active.covers(st.target.name)))
        ]
        if stop:
            await asyncio.gather(*(st.follower.fence_stop() for st in stop if st.follower))
            self.log.info("followers stopped for promotion", dbs=[s.target.name for s in stop])
        if active is not None and self._fence_ack != active.id:
            self._fence_ack = active.id
            if not self.ctx.dry_run:
                await asyncio.to_thread(self.paths.write_status, self._status_doc())
        if active is None and self._fence is not None:
            for st in self.dbs.values():
                if st.follower is not None:
                    st.follower.wake()
        self._fence = active

    # setup -----------------------------------------------------------------------------------
    async def _ensure_litestream(self) -> Litestream:
        if self.litestream is None:
            try:
                binary = find_litestream(self.section.litestream_bin)
                ls = Litestream(
                    binary,
                    self.section.config_path,
                    call_timeout_s=self.section.call_timeout_s,
                    log=self.log,
                )
                version = await ls.check_version()
            except LitestreamError as exc:
                raise SetupError(str(exc)) from None
            self.log.info("using litestream", binary=str(binary), version=version)
            self.litestream = ls
            self.snapshots = SnapshotRestorer(
                ls,
                self.work_dir,
                restore_timeout_s=self.section.restore_timeout_s,
                log=self.log,
                is_fenced=self.is_fenced,
            )
        return self.litestream

    def _load_plan(self) -> Plan:
        key = (_mtime(self.section.config_path), _mtime(self.section.databases_file))
        if self.plan is not None and key == self._plan_key:
            return self.plan
        try:
            table: TierTable = load_tier_table(self.section.databases_file)
            configured = read_restore_config(self.section.config_path)
        except (CatalogError, LitestreamConfigError) as exc:
            if self.plan is None:
                raise SetupError(str(exc)) from None
            if str(exc) != self._plan_error:
                self.log.error(
                    "restore plan files invalid; keeping the previous plan", error=str(exc)
                )
            self._plan_error = str(exc)
            return self.plan
        if self._plan_error:
            self.log.info("restore plan files valid again")
            self._plan_error = ""
        plan = build_plan(self.section, table, configured)
        for problem in plan.problems:
            if problem not in self._reported_problems:
                self._reported_problems.add(problem)
                self.log.warning("restore plan problem", db=problem[0], problem=problem[1])
        self.plan, self._plan_key = plan, key
        targets = [(t.mode, t.follow_interval_s) for t in plan.targets]
        self.m_requests.set(
            requests_per_day(
                targets,
                check_interval_s=self.section.check_interval_s,
                snapshot_interval_s=self.section.snapshot_interval_s,
            )
        )
        return plan

    async def _reconcile(self, plan: Plan, ls: Litestream) -> None:
        wanted = plan.by_name()
        gone = [st for name, st in self.dbs.items() if wanted.get(name) != st.target]
        if gone:
            await self._stop_followers(gone)
            for st in gone:
                del self.dbs[st.target.name]
                self._forget_metrics(st.target)
        for name, target in wanted.items():
            if name in self.dbs:
                self._revive(self.dbs[name], ls)
                continue
            st = DbState(target=target, seed_txid=self._previous_txids.get(name))
            self.dbs[name] = st
            if self.ctx.dry_run:
                self.log.info(
                    "dry-run: would restore and keep this copy fresh",
                    db=name,
                    mode=target.mode,
                    path=str(target.path),
                    interval_s=target.follow_interval_s,
                )
            elif target.mode == "follow":
                self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                st.follower = self._new_follower(st, ls)
                st.task = asyncio.create_task(st.follower.run(), name=f"follower-{name}")

    def _revive(self, st: DbState, ls: Litestream) -> None:
        """A follower supervisor that ended without stop() died of an unexpected error: log it
        once and start a new one (the copy would otherwise be "restoring" forever)."""
        task = st.task
        if task is None or not task.done() or self._promoted:
            return
        error = "cancelled" if task.cancelled() else repr(task.exception())
        self.log.error(
            "follower supervisor died; starting a new one", db=st.target.name, error=error
        )
        self.m_failures.labels(st.target.name, "supervisor").inc()
        st.failures += 1
        st.last_error = f"follower supervisor died: {error}"
        st.follower = self._new_follower(st, ls)
        st.task = asyncio.create_task(st.follower.run(), name=f"follower-{st.target.name}")

    def _new_follower(self, st: DbState, ls: Litestream) -> Follower:
        name = st.target.name

        def on_restart(reason: str, detail: str) -> None:
            self.m_restarts.labels(name, reason).inc()
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

        return Follower(
            st.target,
            ls,
            self.work_dir,
            start_slots=self._start_slots,
            restore_timeout_s=self.section.restore_timeout_s,
            backoff_max_s=self.section.restart_backoff_max_s,
            log=self.log,
            is_fenced=self.is_fenced,
            on_restart=on_restart,
            on_failure=on_failure,
            clock=self.clock,
            on_suspect=on_suspect,
        )

    def _forget_metrics(self, target: RestoreTarget) -> None:
        for gauge, labels in (
            (self.m_lag, (target.name, target.tier)),
            (self.m_local, (target.name,)),
            (self.m_replica, (target.name,)),
            (self.m_last_success, (target.name,)),
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    # cycle -----------------------------------------------------------------------------------
    async def _become_promoted(self) -> None:
        """The role file says primary (a promotion finished): stop every follower for good."""
        if self._promoted:
            return
        self._promoted = True
        self.m_promoted.set(1)
        self.log.warning("this host was promoted; stopping every follower for good")
        await self._stop_followers(list(self.dbs.values()))
        if not self.ctx.dry_run:
            await asyncio.to_thread(self.paths.write_status, self._status_doc())

    async def cycle(self) -> CycleResult:
        if self._promoted or self._role_confirms_primary():
            await self._become_promoted()
            return CycleResult(detail={"promoted": True})
        ls = await self._ensure_litestream()
        plan = self._load_plan()
        await self._reconcile(plan, ls)
        if self._first_cycle:
            await self._await_first_starts()
        now_mono = time.monotonic()
        due = (
            self._first_cycle
            or self._last_check_mono is None
            or now_mono - self._last_check_mono >= self.section.check_interval_s
        )
        if due:
            self._last_check_mono = now_mono
            check_round = CheckRound(give_up_after=self.section.concurrency)
            await asyncio.gather(
                *(self._check(st, ls, check_round) for st in list(self.dbs.values()))
            )
            await self._raise_alerts()
        self._first_cycle = False
        for st in self.dbs.values():
            # A follower's errors (exit, start failure) end when a fresh one follows; do not
            # wait for the next check round to say so (status readers would see both at once).
            if st.follower is not None and st.follower.state == "following":
                st.last_error = ""
        self.m_followers.set(sum(1 for s in self.dbs.values() if s.follower and s.follower.pid))
        if not self.ctx.dry_run:
            await asyncio.to_thread(self.paths.write_status, self._status_doc())
        healthy = [
            st
            for st in self.dbs.values()
            if not st.last_error and not st.replica_error and st.local_txid is not None
        ]
        if self.dbs and due and not healthy and not self.ctx.dry_run:
            raise SetupError(
                f"no standby copy is usable: {len(self.dbs)} DB(s) all failing; first error: "
                + next(
                    (
                        st.last_error or st.replica_error
                        for st in self.dbs.values()
                        if st.last_error or st.replica_error
                    ),
                    "?",
                )
            )
        return CycleResult(detail={"dbs": len(self.dbs), "checked": due, "healthy": len(healthy)})

    async def _await_first_starts(self) -> None:
        """The first cycle reports real state: wait (bounded) until every follower made its
        first attempt, so `--once` restores everything once."""
        waits = [
            st.follower.first_attempt_done.wait()
            for st in self.dbs.values()
            if st.follower is not None
        ]
        if not waits:
            return
        budget = min(self.section.restore_timeout_s + 5, self.section.cycle_timeout_s * 0.8)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), budget)

    async def _check(self, st: DbState, ls: Litestream, check_round: CheckRound) -> None:
        target = st.target
        view: ReplicaView | None
        try:
            async with self._list_slots:
                if check_round.unreachable:
                    raise LitestreamError(
                        "unreachable",
                        f"not listed this round: {check_round.timeouts} listings in a row timed "
                        "out (the blob endpoint looks down)",
                    )
                try:
                    listed = await ls.ltx(target.path)
                except LitestreamError as exc:
                    check_round.record(exc.reason == "timeout")
                    raise
                check_round.record(False)
                known = st.local_txid
                if listed.files and known is not None:
                    oldest_l0 = min(f.min_txid for f in listed.files)
                    if known + 1 < oldest_l0:
                        # Level 0 no longer holds what the copy lacks (compacted away): the
                        # higher levels date the oldest missing change.
                        listed = await ls.ltx(target.path, level="all")
        except LitestreamError as exc:
            view = None
            st.replica_error = str(exc)
            self.m_failures.labels(target.name, exc.reason).inc()
            st.failures += 1
            st.replica_missing = exc.reason == "replica_missing"
        else:
            view = listed
            st.replica_error = ""
            st.replica = listed
            st.replica_missing = listed.missing
        reset = False
        if target.mode == "snapshot":
            reset = await self._snapshot_if_due(st, view)
        elif st.follower is not None:
            st.last_error = "" if st.follower.state == "following" else st.follower.last_error
        now = self.clock()
        st.checked_at = now
        previous = st.local_txid
        local = self._local_txid(st)
        st.local_txid = local
        if st.follower is not None and st.follower.state == "following":
            st.suspect = st.follower.suspect
        # A snapshot copy found ahead of its replica was restored fresh just now: still an incident.
        st.diverged = reset or (
            view is not None and not view.missing and diverged(local, view.newest_txid)
        )
        if st.diverged and view is not None and not reset:
            # Not "caught up": the copy follows nothing the replica holds. Report the time since
            # it was last verified fresh, and restart the follower fresh.
            since = st.verified_fresh_at if st.verified_fresh_at is not None else self._opened_at
            st.lag_s = max(0.0, now - since)
            st.applied_at = None
            self.m_replica.labels(target.name).set(view.newest_txid or 0)
            self._observe_stall(st, local, view, st.lag_s, now)
        elif view is not None and not view.missing:
            if local is None:
                # Nothing restored yet: everything the replica holds is at risk.
                st.lag_s = max(0.0, now - (view.oldest_unapplied_at(None) or now))
            else:
                st.lag_s = lag_seconds(local, view, now)
            st.applied_at = view.applied_at(local)
            if local is not None and st.lag_s == 0.0:
                st.verified_fresh_at = now
                st.last_success_at = now
            elif local is not None and previous is not None and local > previous:
                st.last_success_at = now
            self.m_replica.labels(target.name).set(view.newest_txid or 0)
            self._observe_stall(st, local, view, st.lag_s, now)
        else:
            # Without a listing, freshness cannot be verified: report the time since it was.
            since = st.verified_fresh_at if st.verified_fresh_at is not None else self._opened_at
            st.lag_s = max(0.0, now - since)
        if local is not None:
            self.m_local.labels(target.name).set(local)
        self.m_lag.labels(target.name, target.tier).set(st.lag_s)
        if st.last_success_at is not None:
            self.m_last_success.labels(target.name).set(st.last_success_at)

    def _local_txid(self, st: DbState) -> int | None:
        if st.target.mode == "snapshot":
            return self.snapshots.current_txid(st.target) if self.snapshots else None
        live = st.follower.local_txid() if st.follower is not None else None
        if live is not None:
            st.seed_txid = None
            return live
        return st.seed_txid if st.target.path.exists() else None

    def _observe_stall(
        self, st: DbState, local: int | None, view: ReplicaView, lag: float, now: float
    ) -> None:
        follower = st.follower
        if follower is None or follower.state != "following":
            return
        threshold = stall_threshold_s(self.section.stall_after_s, st.target.follow_interval_s)
        reason = st.watch.observe(local, view.newest_txid, lag, now, threshold)
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

    async def _snapshot_if_due(self, st: DbState, view: ReplicaView | None) -> bool:
        """Restore the snapshot copy when due; True when its record was ahead of the replica
        (so it was reset and restored fresh)."""
        now = self.clock()
        if self.snapshots is None or self.ctx.dry_run or self.is_fenced(st.target.name):
            return False
        if view is None or view.missing:
            return False
        current = self.snapshots.current_txid(st.target)
        newest = view.newest_txid
        reset = diverged(current, newest)
        if reset:
            # The replica was reset/recreated: forget the record so the restore may replace the
            # copy (should_replace refuses "older"), and restore now.
            self.log.warning(
                "replica behind the snapshot copy; restoring fresh",
                db=st.target.name,
                local_txid=current,
                replica_txid=newest,
            )
            with contextlib.suppress(FileNotFoundError):
                snapshot_txid_path(self.work_dir, st.target.name).unlink()
            current = None
            st.last_snapshot_at = None
        if current is not None and newest is not None and current >= newest:
            st.last_error = ""
            return reset
        if (
            st.last_snapshot_at is not None
            and now - st.last_snapshot_at < self.section.snapshot_interval_s
        ):
            return reset
        st.last_snapshot_at = now
        try:
            async with self._start_slots:
                result = await self.snapshots.restore(st.target)
        except LitestreamError as exc:
            self.m_failures.labels(st.target.name, exc.reason).inc()
            st.failures += 1
            st.last_error = str(exc)
            self.log.warning(
                "snapshot restore failed; copy kept", db=st.target.name, error=str(exc)
            )
            return reset
        except (OSError, sqlite3.Error) as exc:
            self.m_failures.labels(st.target.name, "local").inc()
            st.failures += 1
            st.last_error = f"{type(exc).__name__}: {exc}"
            self.log.warning(
                "snapshot restore failed; copy kept", db=st.target.name, error=str(exc)
            )
            return reset
        st.last_error = ""
        if result.replaced:
            st.last_success_at = self.clock()
            self.log.info(
                "standby copy replaced by a snapshot restore",
                db=st.target.name,
                txid=result.txid,
                duration_s=round(result.duration_s, 2),
            )
        return reset

    async def _raise_alerts(self) -> None:
        now = self.clock()
        for st in self.dbs.values():
            name = st.target.name
            lag = st.lag_s
            stale = lag is not None and lag > st.target.stale_threshold_s
            cause = (
                f"replica unreachable ({st.replica_error[:160]})"
                if st.replica_error
                else f"local TXID {st.local_txid}, replica TXID "
                f"{st.replica.newest_txid if st.replica else None}, follower {st.state}"
            )
            detail = (
                f"lag {format_age(lag)} > {format_age(st.target.stale_threshold_s)} "
                f"({st.target.tier}); {cause}"
                if stale
                else f"lag {format_age(lag)}"
            )
            await self._emit(self.alerts.update("stale", name, stale, now, detail))
            recent = st.restarts.recent(now)
            too_many = recent > self.section.max_restarts_per_hour
            reasons = sorted({r for _, r in st.restarts.events})
            await self._emit(
                self.alerts.update(
                    "restarts",
                    name,
                    too_many,
                    now,
                    f"{recent} restarts in the last hour ({', '.join(reasons)})"
                    if too_many
                    else f"{recent} restarts in the last hour",
                )
            )
            await self._emit(
                self.alerts.update(
                    "diverged",
                    name,
                    st.diverged,
                    now,
                    f"replica TXID {st.replica.newest_txid if st.replica else None} < local "
                    f"TXID {st.local_txid}; restoring fresh"
                    if st.diverged
                    else "copy restored fresh from the replica",
                )
            )
            await self._emit(
                self.alerts.update(
                    "suspect",
                    name,
                    bool(st.suspect),
                    now,
                    st.suspect[:300] if st.suspect else "copy replaced by a fresh restore",
                )
            )
            await self._emit(
                self.alerts.update(
                    "replica_missing",
                    name,
                    st.replica_missing,
                    now,
                    "litestream lists no LTX files for it: is the primary replicating it?"
                    if st.replica_missing
                    else "replica present again",
                    confirm=2,
                )
            )

    async def _emit(self, message: Any) -> None:
        if message is not None:
            self.log.warning("restore incident", text=message.text, dedup_key=message.dedup_key)
            await self.ctx.notify(message)

    # status ----------------------------------------------------------------------------------
    def _status_doc(self) -> dict[str, Any]:
        now = self.clock()
        rows = []
        for st in sorted(self.dbs.values(), key=lambda s: (s.target.tier, s.target.name)):
            follower = st.follower
            rows.append(
                {
                    "db": st.target.name,
                    "tier": st.target.tier,
                    "mode": st.target.mode,
                    "path": str(st.target.path),
                    "state": "promoted" if self._promoted else st.state,
                    "local_txid": st.local_txid,
                    "replica_txid": st.replica.newest_txid if st.replica else None,
                    "replica_newest_at": st.replica.newest_at if st.replica else None,
                    "applied_at": st.applied_at,
                    "lag_s": None if st.lag_s is None else round(st.lag_s, 3),
                    "stale_threshold_s": st.target.stale_threshold_s,
                    "rpo_target_s": st.target.rpo_target_s,
                    "follow_interval_s": st.target.follow_interval_s,
                    "last_success_at": st.last_success_at,
                    "verified_fresh_at": st.verified_fresh_at,
                    "checked_at": st.checked_at,
                    "restarts_1h": st.restarts.recent(now),
                    "restarts_total": st.restarts.total,
                    "failures": st.failures,
                    "follower_pid": follower.pid if follower else None,
                    "follower_output": str(follower.output)
                    if follower and follower.output
                    else None,
                    "sidecar": str(follower.sidecar) if follower and follower.sidecar else None,
                    "snapshot_txid_file": str(snapshot_txid_path(self.work_dir, st.target.name))
                    if st.target.mode == "snapshot"
                    else None,
                    "replica_missing": st.replica_missing,
                    "diverged": st.diverged,
                    "suspect": st.suspect,
                    "last_error": st.last_error or st.replica_error,
                }
            )
        return {
            "host": self.config.fleet.host,
            "pid": os.getpid(),
            "updated_at": now,
            "promoted": self._promoted,
            "fence_ack": self._fence_ack,
            "incidents": self.alerts.to_json(),
            "problems": [list(p) for p in (self.plan.problems if self.plan else ())],
            "plan_error": self._plan_error,
            "databases": rows,
        }


def describe_cost(section: RestoreLoopSection, plan: Plan) -> tuple[float, float]:
    per_day = requests_per_day(
        [(t.mode, t.follow_interval_s) for t in plan.targets],
        check_interval_s=section.check_interval_s,
        snapshot_interval_s=section.snapshot_interval_s,
    )
    return per_day, monthly_cost(per_day, section.list_price_per_10k)

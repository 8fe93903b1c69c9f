"""``DaemonRunner``: runs one daemon's cycles, metrics server, heartbeat file and outbox sender.

Cycles are scheduled after the previous one finishes (no overlap), each under a timeout; a
failure is logged on state change, counted, and retried with capped exponential backoff + jitter,
never ending the process; a database it could not use is also counted in
``fleet_store_errors_total``, as the sender's are. An outbox that cannot be opened at start-up
(locked, say) does not stop the start: the daemon runs and the outbox is opened on first use,
which the sender retries with backoff. The heartbeat file is written off the event loop after
each successful cycle. The process-level lifecycle (signals, READY/WATCHDOG, exit codes) is
``shared.runtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from shared import __version__
from shared.backoff import backoff_delay
from shared.clock import Clock
from shared.config import FleetConfig
from shared.cycles import CycleOutcome, CycleResult
from shared.daemon import Daemon, DaemonContext, RefusedToStart
from shared.epochs import stand_down_reason
from shared.files import complete_in_thread
from shared.heartbeats import (
    PROCESS_STARTED_AT,
    Heartbeat,
    assess,
    read_heartbeat,
    write_heartbeat,
)
from shared.http_site import HttpLimits
from shared.logging import describe_error, error_leaves, get_logger, log_tracebacks
from shared.manifest import DaemonManifest
from shared.metrics import DaemonMetrics
from shared.metrics_server import HealthReport, MetricsServer
from shared.notify import NotifyMetrics, OutboxSender, OutboxStore, Sink, SlackSink, outbox_for
from shared.roles import Role, effective_role
from shared.sqlite import StoreError, store_errors_in

__all__ = ["DaemonRunner", "build_sinks", "wait_any"]


def build_sinks(config: FleetConfig, fleet: Sequence[DaemonManifest] = ()) -> dict[str, Sink]:
    """Every delivery channel an outbox row can name (``Message.sink``): Slack, plus the sinks
    the registered daemons' manifests define (blueprint-watchdog's HiveMind). A sink whose
    section's credentials this process was not given (``fleet run NAME`` reads only its own)
    is left out: its rows wait for the sender of the daemon that holds them."""
    sinks: dict[str, Sink] = {"slack": SlackSink(config.slack)}
    for manifest in fleet:
        if config.secrets_withheld(manifest.section_name):
            continue
        sinks.update(manifest.sinks(config, config.daemon_section(manifest.section_name)))
    return sinks


class Superseded(Exception):
    """This host is a primary that a peer with a newer promotion epoch has replaced: the cycle
    does not run (no writes), and fails with the reason until the host stands down."""

    def __str__(self) -> str:
        return str(self.args[0])


class DaemonRunner:
    """Runs one daemon: its cycle loop, metrics server, heartbeat file and outbox sender."""

    def __init__(
        self,
        daemon_cls: type[Daemon[Any]],
        config: FleetConfig,
        *,
        dry_run: bool = False,
        clock: Clock = time.time,
        rand: Callable[[], float] = random.random,
        fleet: Sequence[DaemonManifest] = (),
    ) -> None:
        self.daemon_cls = daemon_cls
        self.config = config
        self.name = daemon_cls.name
        self.section = config.daemon_section(self.name.replace("-", "_"))
        self.role = effective_role(config.fleet.role, config.role_file)
        self.fleet = tuple(fleet)
        self.dry_run = dry_run
        self.clock = clock
        self.rand = rand
        self.log = get_logger(daemon=self.name)
        self.metrics = DaemonMetrics(self.name, __version__)
        self.outbox: OutboxStore | None = None
        self.sender: OutboxSender | None = None
        self.daemon: Daemon[Any] | None = None
        self.server: MetricsServer | None = None
        self.started_at = clock()
        self.cycles = 0
        self.failures = 0
        self.last_ok_at: float | None = None
        self.next_due_at: float | None = None
        self.cycle_started_mono: float | None = None
        self.write_started_mono: float | None = None
        self.last_duration_s: float | None = None
        self._cron: Any = None
        self._due = asyncio.Event()

    # lifecycle -------------------------------------------------------------------------------
    def check_role(self) -> None:
        reason = self.daemon_cls.refuse_reason(self.section, self.role) or self.epoch_refusal()
        if reason:
            raise RefusedToStart(f"{self.name}: {reason}")

    @property
    def fenceable(self) -> bool:
        """A writer (a daemon its role rule keeps off a standby) running as primary: the one
        kind of daemon a newer promotion epoch fences. Fixed for the runner's life."""
        return (
            self.role is Role.PRIMARY
            and self.daemon_cls.refuse_reason(self.section, Role.STANDBY) is not None
        )

    def epoch_refusal(self) -> str | None:
        """A writer on a primary that a peer with a newer promotion epoch has superseded must
        not start, nor run another cycle (shared.epochs; reads two small files)."""
        if not self.fenceable:
            return None
        return stand_down_reason(self.config.role_file, self.role, self.config.fleet.host)

    async def open(self, *, serve_metrics: bool, with_outbox: bool) -> None:
        self.check_role()
        if with_outbox and not self.dry_run:
            self.outbox = outbox_for(self.config.notify, clock=self.clock)
            try:
                await self.outbox.open()
            except (StoreError, sqlite3.Error, OSError) as exc:
                self.count_store_errors(exc)
                self.log.warning(
                    "outbox unavailable at start-up; starting without it, the sender retries",
                    db=self.outbox.store_name,
                    error=describe_error(exc),
                )
            self.sender = OutboxSender(
                self.outbox,
                build_sinks(self.config, self.fleet),
                self.config.notify,
                log=self.log,
                metrics=NotifyMetrics(self.metrics.registry),
                on_store_error=self.count_store_errors,
            )
        ctx = DaemonContext(
            config=self.config,
            section=self.section,
            role=self.role,
            log=self.log,
            metrics=self.metrics,
            outbox=self.outbox,
            dry_run=self.dry_run,
            clock=self.clock,
            fleet=self.fleet,
        )
        self.daemon = self.daemon_cls(ctx)
        await self.daemon.open()
        previous = read_heartbeat(self.config.heartbeat_dir, self.name)
        if previous is not None and previous.last_ok_at is not None:
            self.last_ok_at = previous.last_ok_at
            # So "no success for N intervals" alerts see the truth right after a restart.
            self.metrics.last_success.labels(self.name).set(previous.last_ok_at)
        if self.daemon.schedule:
            self._setup_cron(self.daemon.schedule)
        if serve_metrics:
            self.server = MetricsServer(
                self.metrics,
                self.health,
                self.config.fleet.bind,
                self.section.metrics_port,
                limits=HttpLimits.of(self.config.fleet),
                log=self.log,
            )
            await self.server.start()
        if not self.dry_run:
            await self._write_heartbeat(duration_s=None)

    async def close(self) -> None:
        """Close everything, keeping the first error; safe to call twice."""
        first: BaseException | None = None
        for closer in (
            self._close_cron,
            self._close_daemon,
            self._close_sender,
            self._close_outbox,
            self._close_server,
        ):
            try:
                await closer()
            except Exception as exc:  # keep closing the rest; report the first
                first = first or exc
        if first is not None:
            self.log.error("error while closing", error=str(first))

    async def _close_cron(self) -> None:
        if self._cron is not None:
            if self._cron.running:  # --once never starts it; shutdown() would raise
                self._cron.shutdown(wait=False)
            self._cron = None

    async def _close_daemon(self) -> None:
        if self.daemon is not None:
            daemon, self.daemon = self.daemon, None
            await daemon.close()

    async def _close_sender(self) -> None:
        if self.sender is not None:
            sender, self.sender = self.sender, None
            await sender.close()

    async def _close_outbox(self) -> None:
        if self.outbox is not None:
            outbox, self.outbox = self.outbox, None
            await outbox.close()

    async def _close_server(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()

    def count_store_errors(self, exc: BaseException) -> None:
        """Count each database ``exc`` stands for (inside exception groups too) in
        ``fleet_store_errors_total``; an OSError of the outbox counts as the outbox's."""
        dbs = store_errors_in(exc)
        if not dbs and isinstance(exc, OSError) and self.outbox is not None:
            dbs = [self.outbox.store_name]
        for db in dbs:
            self.metrics.store_error(db)

    # health ----------------------------------------------------------------------------------
    @property
    def expected_interval_s(self) -> float:
        if self.daemon is not None:
            return self.daemon.expected_interval_s
        return self.section.interval_s

    def heartbeat(self, duration_s: float | None) -> Heartbeat:
        return Heartbeat(
            daemon=self.name,
            host=self.config.fleet.host,
            pid=os.getpid(),
            version=__version__,
            role=self.role,
            last_ok_at=self.last_ok_at,
            last_duration_s=duration_s,
            cycles=self.cycles,
            expected_interval_s=self.expected_interval_s,
            started_at=self.started_at,
            next_due_at=self.next_due_at,
            process_started_at=PROCESS_STARTED_AT,
        )

    def health(self) -> HealthReport:
        status = assess(self.name, self.heartbeat(None), self.clock())
        return HealthReport(
            status.ok,
            {
                "daemon": self.name,
                "reason": status.reason,
                "last_ok_at": status.last_ok_at,
                "age_s": status.age_s,
                "cycles": self.cycles,
                "consecutive_failures": self.failures,
            },
        )

    async def _write_heartbeat(self, duration_s: float | None) -> None:
        """Write the heartbeat file (temp + fsync + rename) off the event loop, awaited to the
        end even when a stop cancels us meanwhile (``complete_in_thread``)."""
        beat = self.heartbeat(duration_s)
        self.write_started_mono = time.monotonic()
        try:
            await complete_in_thread(write_heartbeat, self.config.heartbeat_dir, beat)
        except OSError as exc:
            self.log.error("cannot write heartbeat file", error=str(exc))
        finally:
            self.write_started_mono = None

    def state(self, now_mono: float) -> dict[str, Any]:
        """Where this daemon is, for a state dump (SIGUSR1): plain values, no I/O."""
        started = self.cycle_started_mono
        return {
            "daemon": self.name,
            "role": self.role,
            "cycles": self.cycles,
            "consecutive_failures": self.failures,
            "last_ok_at": self.last_ok_at,
            "last_duration_s": self.last_duration_s,
            "cycle_running_s": round(now_mono - started, 3) if started is not None else None,
            "next_due_at": self.next_due_at,
            "wedged": self.wedged(),
        }

    # cycles ----------------------------------------------------------------------------------
    async def run_cycle(self) -> CycleResult | None:
        """Run one cycle under its timeout; record metrics, heartbeat and state-change logs.
        Returns the result, or None when the cycle failed."""
        assert self.daemon is not None
        start_wall = self.clock()
        start = time.monotonic()
        self.cycle_started_mono = start
        outcome = CycleOutcome.OK
        error: str | None = None
        failure: Exception | None = None
        result: CycleResult | None = None
        try:
            # A writer that learns of a newer primary while running (its heartbeat probed the
            # peer after it started: a host back from a crash) stops writing at its next cycle.
            # Only writers read the epoch files, off the event loop; the rest pay nothing.
            fenced = await asyncio.to_thread(self.epoch_refusal) if self.fenceable else None
            if fenced is not None:
                raise Superseded(fenced)
            async with asyncio.timeout(self.section.cycle_timeout_s):
                result = await self.daemon.cycle() or CycleResult()
        except TimeoutError:
            outcome, error = CycleOutcome.TIMEOUT, f"cycle exceeded {self.section.cycle_timeout_s}s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing cycle must never end the daemon
            outcome, error, failure = CycleOutcome.ERROR, describe_error(exc), exc
            for db in store_errors_in(exc):
                self.metrics.store_error(db)
        finally:
            self.cycle_started_mono = None
        duration = time.monotonic() - start
        self.last_duration_s = duration
        self.cycles += 1
        self.metrics.record_cycle(outcome, duration, start_wall + duration)
        if outcome is CycleOutcome.OK:
            if self.failures:
                self.log.info("recovered", failed_cycles=self.failures)
            self.failures = 0
            self.last_ok_at = start_wall + duration
            self.metrics.consecutive_failures.labels(self.name).set(0)
            if not self.dry_run:
                await self._write_heartbeat(duration)
            return result
        self.failures += 1
        self.metrics.consecutive_failures.labels(self.name).set(self.failures)
        if self.failures == 1:
            extra: dict[str, Any] = {}
            if isinstance(failure, BaseExceptionGroup):
                # A TaskGroup's ExceptionGroup: each real error, one per list item.
                extra["causes"] = [describe_error(leaf) for leaf in error_leaves(failure)]
            self.log.error("cycle failed", outcome=outcome, error=error, **extra)
            if failure is not None:
                log_tracebacks(self.log, "cycle failure traceback", failure)
        else:
            self.log.debug("cycle still failing", outcome=outcome, failures=self.failures)
        return None

    def next_delay(self, result: CycleResult | None) -> float:
        if result is None:
            # A failed nightly run is retried within minutes, not at the next fire time.
            base = min(self.section.interval_s, 60.0) if self._cron else self.section.interval_s
            return backoff_delay(self.failures, base, self.section.backoff_max_s, self.rand)
        return 0.0 if result.more else self.section.interval_s

    def _maybe_wedge(self) -> None:
        """Drill/test switch: FLEET_DEBUG_WEDGE_AFTER_CYCLES=N blocks the event loop for good
        after N cycles, so the service manager's watchdog can be seen killing a hung daemon.
        Never set it in production config."""
        after = os.environ.get("FLEET_DEBUG_WEDGE_AFTER_CYCLES")
        if after and after.isdigit() and self.cycles >= int(after):
            self.log.warning("wedging the event loop on purpose (FLEET_DEBUG_WEDGE_AFTER_CYCLES)")
            while True:  # blocks the loop: no WATCHDOG=1, no signal handling in the loop
                time.sleep(60)

    def wedged(self) -> bool:
        """A cycle has outlived its timeout plus a margin (cancellation did not take), or the
        heartbeat write has hung as long (a dead disk, a stuck NFS mount): either way the loop
        no longer cycles, so WATCHDOG=1 must stop and the service manager restart us."""
        limit = self.section.cycle_timeout_s + 30.0
        now = time.monotonic()
        return any(
            started is not None and now - started > limit
            for started in (self.cycle_started_mono, self.write_started_mono)
        )

    # cron ------------------------------------------------------------------------------------
    def _setup_cron(self, expression: str) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(expression, timezone=UTC)
        now = datetime.fromtimestamp(self.clock(), UTC)
        grace = self.section.interval_s
        # Run late rather than never: a fire time missed while we were down (within the grace
        # period, i.e. one schedule period) is due now, coalesced into one run.
        since = datetime.fromtimestamp(max(self.last_ok_at or 0.0, self.clock() - grace), UTC)
        missed = trigger.get_next_fire_time(None, since)
        if (
            missed is not None
            and missed <= now
            and (self.last_ok_at is None or missed.timestamp() > self.last_ok_at)
        ):
            self.log.info("running missed scheduled cycle", missed=missed.isoformat())
            self._due.set()
        upcoming = trigger.get_next_fire_time(None, now)
        self.next_due_at = upcoming.timestamp() if upcoming else None
        self._cron = AsyncIOScheduler(timezone=UTC)
        self._cron.add_job(
            self._due.set,
            trigger,
            id=self.name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(grace),
        )
        self._cron_trigger = trigger

    def _cron_advance(self) -> None:
        trigger = getattr(self, "_cron_trigger", None)
        if trigger is not None:
            upcoming = trigger.get_next_fire_time(None, datetime.fromtimestamp(self.clock(), UTC))
            self.next_due_at = upcoming.timestamp() if upcoming else None

    # loop ------------------------------------------------------------------------------------
    async def loop(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop`` is set. On stop, the in-flight cycle gets ``stop_grace_s``."""
        if self._cron is not None:
            self._cron.start()  # must run inside the loop (APScheduler 3.x)
        while not stop.is_set():
            if self._cron is not None and self.failures == 0:
                await wait_any(stop, self._due)
                if stop.is_set():
                    break
                self._due.clear()
            task = asyncio.create_task(self.run_cycle(), name=f"{self.name}-cycle")
            await wait_any(stop, task)
            if not task.done():
                await self._abandon_on_stop(task)
                break
            result = task.result()
            self._maybe_wedge()
            if self._cron is not None:
                self._cron_advance()
                if result is not None:
                    if not self.dry_run:
                        await self._write_heartbeat(self.last_duration_s)
                    continue
            delay = self.next_delay(result)
            if delay > 0:
                await wait_any(stop, timeout=delay)

    async def _abandon_on_stop(self, task: asyncio.Task[Any]) -> None:
        grace = self.config.fleet.stop_grace_s
        self.log.info("stopping; waiting for in-flight cycle", grace_s=grace)
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            self.log.warning("in-flight cycle abandoned after grace period", grace_s=grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run_sender(self, stop: asyncio.Event) -> None:
        if self.sender is not None:
            await self.sender.run(stop)

    async def drain_outbox(self, timeout_s: float) -> None:
        if self.sender is not None:
            try:
                await self.sender.drain(timeout_s)
            except Exception as exc:  # --once must report its cycle, not a Slack outage
                self.log.warning("outbox drain failed", error=str(exc))


async def wait_any(
    stop: asyncio.Event,
    other: asyncio.Event | asyncio.Task[Any] | None = None,
    timeout: float | None = None,
) -> None:
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
    other_fut: asyncio.Future[Any] | None = None
    if isinstance(other, asyncio.Event):
        other_fut = asyncio.ensure_future(other.wait())
        waiters.add(other_fut)
    elif other is not None:
        waiters.add(other)
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in waiters:
            if fut is not other and not fut.done():
                fut.cancel()

"""The Daemon base and the runner that gives every daemon the same lifecycle.

Load config -> logging -> resources -> metrics server -> READY=1 -> cycles. Cycles are scheduled
after the previous one finishes (no overlap), each under a timeout; a failure is logged on state
change, counted, and retried with capped exponential backoff + jitter, never ending the process.
WATCHDOG=1 is sent while the loop is alive, whatever the cycles' outcome, and withheld only when
the loop hangs or a cycle is stuck past its timeout. SIGTERM/SIGINT: STOPPING=1, finish or
abandon the in-flight cycle within the grace period, close with final writes shielded, exit 0;
a second signal exits at once. A loop or sender task that ends on its own (a bug) ends the
process with exit 1, so the service manager restarts it rather than it living on idle.
Daemons implement ``open``/``cycle``/``close`` and must never install signal handlers, sleep
between cycles, or catch their own cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from shared import __version__
from shared.config import FleetConfig
from shared.heartbeats import Heartbeat, assess, read_heartbeat, write_heartbeat
from shared.logging import get_logger
from shared.metrics import DaemonMetrics, HealthReport, MetricsServer
from shared.notify import Message, NotifyMetrics, Outbox, OutboxSender, Sink, SlackSink
from shared.sdnotify import Notifier, watchdog_interval_s
from shared.sections import DaemonSection

__all__ = [
    "EX_CONFIG",
    "CycleResult",
    "Daemon",
    "DaemonContext",
    "DaemonRunner",
    "RefusedToStart",
    "UnitProfile",
    "backoff_delay",
    "effective_role",
    "fenced",
    "run_daemons",
]

EX_CONFIG = 78
Clock = Callable[[], float]


class RefusedToStart(Exception):
    """This daemon must not run here (role fencing, unusable setup). Exit 78, saying why."""


@dataclass
class CycleResult:
    """What a cycle reports. ``more``: work remains, run the next cycle without waiting."""

    more: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def build_sinks(config: FleetConfig) -> dict[str, Sink]:
    """Every delivery channel an outbox row can name (``Message.sink``)."""
    from shared.hivemind import HiveMindSink

    return {"slack": SlackSink(config.slack), "hivemind": HiveMindSink.from_config(config)}


def fenced(cls: type[Daemon] | None, section: DaemonSection, role: str) -> bool:
    """Does role fencing keep this daemon from running here (restore-loop on a primary,
    email-reactor on a standby)? A daemon that refuses under both roles has a config problem,
    not a fence: it stays expected, and shows as stale."""
    if cls is None or cls.refuse_reason(section, role) is None:
        return False
    other = "standby" if role == "primary" else "primary"
    return cls.refuse_reason(section, other) is None


def effective_role(config: FleetConfig) -> str:
    """The role file written by ``fleet role set`` wins over ``[fleet] role``."""
    try:
        text = config.role_file.read_text(encoding="utf-8").strip().lower()
    except OSError:
        return config.fleet.role
    return text if text in ("primary", "standby") else config.fleet.role


def backoff_delay(
    failures: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Delay before retrying after ``failures`` consecutive failed cycles: base * 2^(n-1),
    capped, with +-20% jitter so a fleet of daemons does not retry in lockstep."""
    if failures <= 0:
        return base_s
    raw = min(max(cap_s, base_s), base_s * (2 ** min(failures - 1, 30)))
    return float(raw * (0.8 + 0.4 * rand()))


@dataclass
class DaemonContext:
    """What a daemon gets from the runtime: config, its section, role, logger, metrics,
    the outbox (None with --dry-run or --once without sending), and an injected clock."""

    config: FleetConfig
    section: DaemonSection
    role: str
    log: Any
    metrics: DaemonMetrics
    outbox: Outbox | None
    dry_run: bool = False
    clock: Clock = time.time

    async def notify(self, msg: Message) -> bool:
        """Enqueue ``msg`` (dedup by key). In --dry-run, log what would be sent instead."""
        if self.dry_run or self.outbox is None:
            self.log.info(
                "dry-run: would notify",
                channel=msg.channel,
                kind=msg.kind,
                dedup_key=msg.dedup_key,
                text=msg.text,
            )
            return False
        return await self.outbox.enqueue(msg)


@dataclass(frozen=True)
class UnitProfile:
    """What a daemon needs from its service manager; the unit/plist generator reads it.
    Paths are the directories it writes (state and logs are always included)."""

    write_paths: tuple[Path, ...] = ()
    shared_tmp: bool = False  # a configured file lives in /tmp: the unit must not PrivateTmp
    tasks_max: int = 64
    memory_max_mb: int = 256
    needs_network: bool = True


class Daemon:
    """Base class. Subclasses set ``name`` (hyphenated) and implement ``cycle``."""

    name: ClassVar[str] = ""
    #: cron expression (UTC) for scheduled daemons; None: run every ``interval_s``.
    schedule: str | None = None

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.log = ctx.log

    @classmethod
    def refuse_reason(cls, section: DaemonSection, role: str) -> str | None:
        """Why this daemon must not start with ``role`` (fencing), or None."""
        return None

    @classmethod
    def unit_profile(cls, config: FleetConfig) -> UnitProfile:
        """Directories written and limits, for the generated systemd unit / plist."""
        return UnitProfile()

    @property
    def expected_interval_s(self) -> float:
        return self.ctx.section.interval_s

    async def open(self) -> None:
        """Acquire resources (DB connections, clients). Runs before READY=1."""

    async def cycle(self) -> CycleResult | None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release resources; runs shielded at shutdown, also after a failed open."""


class DaemonRunner:
    """Runs one daemon: its cycle loop, metrics server, heartbeat file and outbox sender."""

    def __init__(
        self,
        daemon_cls: type[Daemon],
        config: FleetConfig,
        *,
        dry_run: bool = False,
        clock: Clock = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.daemon_cls = daemon_cls
        self.config = config
        self.name = daemon_cls.name
        self.section = config.daemon_section(self.name.replace("-", "_"))
        self.role = effective_role(config)
        self.dry_run = dry_run
        self.clock = clock
        self.rand = rand
        self.log = get_logger(daemon=self.name)
        self.metrics = DaemonMetrics(self.name, config.fleet.host, __version__)
        self.outbox: Outbox | None = None
        self.sender: OutboxSender | None = None
        self.daemon: Daemon | None = None
        self.server: MetricsServer | None = None
        self.started_at = clock()
        self.cycles = 0
        self.failures = 0
        self.last_ok_at: float | None = None
        self.next_due_at: float | None = None
        self.cycle_started_mono: float | None = None
        self.last_duration_s: float | None = None
        self._cron: Any = None
        self._due = asyncio.Event()

    # lifecycle -------------------------------------------------------------------------------
    def check_role(self) -> None:
        reason = self.daemon_cls.refuse_reason(self.section, self.role)
        if reason:
            raise RefusedToStart(f"{self.name}: {reason}")

    async def open(self, *, serve_metrics: bool, with_outbox: bool) -> None:
        self.check_role()
        if with_outbox and not self.dry_run:
            self.outbox = await Outbox(self.config.notify.outbox_db, clock=self.clock).open()
            self.sender = OutboxSender(
                self.outbox,
                build_sinks(self.config),
                self.config.notify,
                log=self.log,
                metrics=NotifyMetrics(self.metrics.registry),
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
                self.metrics, self.health, self.config.fleet.bind, self.section.metrics_port
            )
            await self.server.start()
        if not self.dry_run:
            self._write_heartbeat(duration_s=None)

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

    def _write_heartbeat(self, duration_s: float | None) -> None:
        try:
            write_heartbeat(self.config.heartbeat_dir, self.heartbeat(duration_s))
        except OSError as exc:
            self.log.error("cannot write heartbeat file", error=str(exc))

    # cycles ----------------------------------------------------------------------------------
    async def run_cycle(self) -> CycleResult | None:
        """Run one cycle under its timeout; record metrics, heartbeat and state-change logs.
        Returns the result, or None when the cycle failed."""
        assert self.daemon is not None
        start_wall = self.clock()
        start = time.monotonic()
        self.cycle_started_mono = start
        outcome = "ok"
        error: str | None = None
        result: CycleResult | None = None
        try:
            async with asyncio.timeout(self.section.cycle_timeout_s):
                result = await self.daemon.cycle() or CycleResult()
        except TimeoutError:
            outcome, error = "timeout", f"cycle exceeded {self.section.cycle_timeout_s}s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing cycle must never end the daemon
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self.cycle_started_mono = None
        duration = time.monotonic() - start
        self.last_duration_s = duration
        self.cycles += 1
        self.metrics.record_cycle(outcome, duration, start_wall + duration)
        if outcome == "ok":
            if self.failures:
                self.log.info("recovered", failed_cycles=self.failures)
            self.failures = 0
            self.last_ok_at = start_wall + duration
            self.metrics.consecutive_failures.labels(self.name).set(0)
            if not self.dry_run:
                self._write_heartbeat(duration)
            return result
        self.failures += 1
        self.metrics.consecutive_failures.labels(self.name).set(self.failures)
        if self.failures == 1:
            self.log.error("cycle failed", outcome=outcome, error=error)
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
        """A cycle has outlived its timeout plus a margin: cancellation did not take."""
        started = self.cycle_started_mono
        if started is None:
            return False
        return time.monotonic() - started > self.section.cycle_timeout_s + 30.0

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
                await _wait_any(stop, self._due)
                if stop.is_set():
                    break
                self._due.clear()
            task = asyncio.create_task(self.run_cycle(), name=f"{self.name}-cycle")
            await _wait_any(stop, task)
            if not task.done():
                await self._abandon_on_stop(task)
                break
            result = task.result()
            self._maybe_wedge()
            if self._cron is not None:
                self._cron_advance()
                if result is not None:
                    if not self.dry_run:
                        self._write_heartbeat(self.last_duration_s)
                    continue
            delay = self.next_delay(result)
            if delay > 0:
                await _wait_any(stop, timeout=delay)

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


async def _wait_any(
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


async def _watchdog(
    runners: Sequence[DaemonRunner], notifier: Notifier, interval_s: float, stop: asyncio.Event
) -> None:
    """Ping WATCHDOG=1 while the loop runs and no cycle is wedged. A hung event loop stops
    this task too, which is exactly what systemd should see."""
    while not stop.is_set():
        if not any(r.wedged() for r in runners):
            notifier.watchdog()
        await _wait_any(stop, timeout=interval_s)


# A supervisor that signals the whole process group (GNU timeout, some init scripts) delivers
# the same SIGTERM twice within a millisecond; only a later signal means "stop now".
SECOND_SIGNAL_AFTER_S = 0.5


def _install_signal_handlers(stop: asyncio.Event, notifier: Notifier, log: Any) -> None:
    loop = asyncio.get_running_loop()
    first_at: list[float] = []

    def _on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            if first_at and time.monotonic() - first_at[0] < SECOND_SIGNAL_AFTER_S:
                return  # the same stop request, delivered twice
            log.warning("second signal; exiting now", signal=name)
            os._exit(128 + signum)
        first_at.append(time.monotonic())
        log.info("stopping", signal=name)
        notifier.stopping()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig)


async def run_daemons(
    daemon_classes: Sequence[type[Daemon]],
    config: FleetConfig,
    *,
    once: bool = False,
    dry_run: bool = False,
    notifier: Notifier | None = None,
) -> int:
    """Run the daemons until a signal (or one cycle each with ``once``); return the exit code."""
    log = get_logger()
    runners = [DaemonRunner(cls, config, dry_run=dry_run) for cls in daemon_classes]
    if len(runners) > 1:
        kept = []
        for r in runners:
            try:
                r.check_role()
                kept.append(r)
            except RefusedToStart as exc:
                log.warning("not starting daemon here", reason=str(exc))
        runners = kept
        if not runners:
            log.error("no daemon can run with this role", role=effective_role(config))
            return EX_CONFIG
    notifier = notifier or Notifier()
    stop = asyncio.Event()
    if once:
        return await _run_once(runners, stop, log)
    _install_signal_handlers(stop, notifier, log)
    opened: list[DaemonRunner] = []
    try:
        for r in runners:
            opened.append(r)
            await r.open(serve_metrics=True, with_outbox=True)
            log.info(
                "daemon started",
                daemon=r.name,
                role=r.role,
                pid=os.getpid(),
                metrics_port=r.server.port if r.server else None,
                dry_run=dry_run,
            )
    except RefusedToStart as exc:
        log.error("refusing to start", reason=str(exc))
        await _close_all(opened)
        return EX_CONFIG
    except Exception as exc:
        log.error("startup failed", error=f"{type(exc).__name__}: {exc}")
        await _close_all(opened)
        return 1
    if stop.is_set():
        await _close_all(opened)
        return 0
    notifier.ready(status="cycling")
    tasks = [asyncio.create_task(r.loop(stop), name=f"{r.name}-loop") for r in runners]
    tasks += [asyncio.create_task(r.run_sender(stop), name=f"{r.name}-sender") for r in runners]
    wd = watchdog_interval_s()
    if wd is not None:
        tasks.append(asyncio.create_task(_watchdog(runners, notifier, wd, stop)))
    code = 0
    try:
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            # A loop or sender ended on its own: a bug, not a signal. Exit non-zero so the
            # service manager restarts us, rather than live on without cycling or sending.
            for t in tasks:
                if t.done() and not t.cancelled():
                    failure = t.exception()
                    log.error(
                        "daemon task ended unexpectedly",
                        task=t.get_name(),
                        error=f"{type(failure).__name__}: {failure}" if failure else "returned",
                    )
            code = 1
            notifier.stopping()
            stop.set()
        grace = config.fleet.stop_grace_s
        _done, pending = await asyncio.wait(tasks, timeout=grace + 1.0)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        await asyncio.shield(_close_all(opened))
        notifier.close()
    log.info("stopped", exit_code=code)
    return code


async def _close_all(runners: Sequence[DaemonRunner]) -> None:
    for r in runners:
        await r.close()


async def _run_once(runners: Sequence[DaemonRunner], stop: asyncio.Event, log: Any) -> int:
    code = 0
    for r in runners:
        try:
            await r.open(serve_metrics=False, with_outbox=True)
        except RefusedToStart as exc:
            log.error("refusing to start", reason=str(exc))
            await r.close()
            return EX_CONFIG
        except Exception as exc:
            log.error("startup failed", daemon=r.name, error=f"{type(exc).__name__}: {exc}")
            await r.close()
            code = 1
            continue
        try:
            result = await r.run_cycle()
            if result is None:
                code = 1
            else:
                await r.drain_outbox(timeout_s=15.0)
        finally:
            await asyncio.shield(r.close())
    return code

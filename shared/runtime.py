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
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from shared.backoff import backoff_delay
from shared.config import FleetConfig
from shared.cycles import CycleOutcome, CycleResult
from shared.daemon import Daemon, DaemonContext, RefusedToStart
from shared.exitcodes import EX_CONFIG, ExitCode
from shared.logging import get_logger
from shared.manifest import DaemonManifest, UnitProfile
from shared.roles import Role, RoleFileError
from shared.runner import DaemonRunner, build_sinks, wait_any
from shared.sdnotify import Notifier, watchdog_interval_s

__all__ = [
    "EX_CONFIG",
    "CycleOutcome",
    "CycleResult",
    "Daemon",
    "DaemonContext",
    "DaemonRunner",
    "RefusedToStart",
    "Role",
    "UnitProfile",
    "backoff_delay",
    "build_sinks",
    "run_daemons",
]


async def _watchdog(
    runners: Sequence[DaemonRunner], notifier: Notifier, interval_s: float, stop: asyncio.Event
) -> None:
    """Ping WATCHDOG=1 while the loop runs and no cycle is wedged. A hung event loop stops
    this task too, which is exactly what systemd should see."""
    while not stop.is_set():
        if not any(r.wedged() for r in runners):
            notifier.watchdog()
        await wait_any(stop, timeout=interval_s)


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
    daemons: Sequence[type[Daemon[Any]] | DaemonManifest],
    config: FleetConfig,
    *,
    once: bool = False,
    dry_run: bool = False,
    notifier: Notifier | None = None,
    fleet: Sequence[DaemonManifest] = (),
) -> int:
    """Run the daemons (their classes, or manifests whose classes are imported now) until a
    signal, or one cycle each with ``once``; return the exit code. ``fleet``: every registered
    daemon's manifest, for the daemons that report on the others (heartbeat's /health)."""
    log = get_logger()
    classes = [d.load_daemon() if isinstance(d, DaemonManifest) else d for d in daemons]
    if not fleet:
        # Without the app's registry, the daemons being run are all this process knows of.
        fleet = [cls.manifest for cls in classes if cls.manifest is not None]
    try:
        runners = [DaemonRunner(cls, config, dry_run=dry_run, fleet=fleet) for cls in classes]
    except RoleFileError as exc:
        log.error("refusing to start", reason=str(exc))
        return ExitCode.CONFIG
    role = runners[0].role if runners else None
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
            log.error("no daemon can run with this role", role=role)
            return ExitCode.CONFIG
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
        return ExitCode.CONFIG
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
            return ExitCode.CONFIG
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

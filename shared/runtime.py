"""The process-level lifecycle every daemon shares: ``run_daemons``.

Load config -> logging -> resources -> metrics server -> READY=1 -> cycles. Cycles are scheduled
after the previous one finishes (no overlap), each under a timeout; a failure is logged on state
change, counted, and retried with capped exponential backoff + jitter, never ending the process.
WATCHDOG=1 is sent while the loops are alive, whatever the cycles' outcome (a locked database
included), and withheld when the event loop hangs, a cycle is stuck past its timeout, or a loop
or sender task has ended. Signals (``shared.signals``): SIGTERM/SIGINT
stop gracefully (STOPPING=1, finish or abandon the in-flight cycle within the grace period, close
with final writes shielded, exit 0; a second signal exits at once); SIGHUP reloads the config in
process (RELOADING=1, the daemons stopped as on SIGTERM and opened again on the new config,
READY=1; a config, role file or role that cannot start keeps the running daemons, except a role
this daemon refuses, which stops it with 78 as a restart would); SIGUSR1/SIGUSR2 log a state
dump; other terminating signals stop gracefully with exit 128+signal, so the units restart the
process. A loop or sender task that ends on its own (a bug) ends the process with exit 1, so
the service manager restarts it rather than it living on idle. Daemons implement
``open``/``cycle``/``close`` and must never install signal handlers, sleep between cycles, or
catch their own cancellation.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from shared.backoff import backoff_delay
from shared.config import ConfigError, FleetConfig
from shared.cycles import CycleOutcome, CycleResult
from shared.daemon import Daemon, DaemonContext, RefusedToStart
from shared.exitcodes import EX_CONFIG, ExitCode
from shared.logging import describe_error, get_logger, log_tracebacks
from shared.manifest import DaemonManifest, UnitProfile, fenced_off
from shared.roles import Role, RoleFileError
from shared.runner import DaemonRunner, build_sinks, wait_any
from shared.sdnotify import Notifier, watchdog_interval_s
from shared.signals import ProcessSignals

__all__ = [
    "EX_CONFIG",
    "CycleOutcome",
    "CycleResult",
    "Daemon",
    "DaemonContext",
    "DaemonRunner",
    "RefusedToStart",
    "Reloader",
    "Role",
    "UnitProfile",
    "backoff_delay",
    "build_sinks",
    "run_daemons",
]

DaemonSpec = type[Daemon[Any]] | DaemonManifest
#: SIGHUP's config source: the config and the daemons to run, loaded again (ConfigError when
#: the file no longer loads)
Reloader = Callable[[], tuple[FleetConfig, Sequence[DaemonSpec]]]


def _alive(runners: Sequence[DaemonRunner], tasks: Sequence[asyncio.Task[Any]]) -> bool:
    """Every cycle loop and sender task is still running and no cycle is wedged: failing
    cycles and a locked database count as alive (they are retried), a dead task does not."""
    return not any(t.done() for t in tasks) and not any(r.wedged() for r in runners)


async def _watchdog(
    runners: Callable[[], Sequence[DaemonRunner]],
    tasks: Callable[[], Sequence[asyncio.Task[Any]]],
    notifier: Notifier,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Ping WATCHDOG=1 while the loops themselves are alive (``_alive``: the current runners
    and their tasks, none between a reload's stop and start). A hung event loop stops this
    task too, which is exactly what systemd should see."""
    while not stop.is_set():
        if _alive(runners(), tasks()):
            notifier.watchdog()
        await wait_any(stop, timeout=interval_s)


def _build(
    daemons: Sequence[DaemonSpec],
    config: FleetConfig,
    *,
    dry_run: bool,
    fleet: Sequence[DaemonManifest],
    log: Any,
) -> list[DaemonRunner]:
    """The runners for ``daemons`` on this host's role. With several, those the role refuses
    are left out (RefusedToStart when none is left); one alone is checked by its ``open``.
    RoleFileError when the role file is garbled."""
    classes = [d.load_daemon() if isinstance(d, DaemonManifest) else d for d in daemons]
    runners = [DaemonRunner(cls, config, dry_run=dry_run, fleet=fleet) for cls in classes]
    if len(runners) > 1:
        # Several daemons (run --all): those fenced off this role are skipped, the rest run.
        # `fleet check-config` reports the same decision (shared.manifest.fenced_off).
        role = runners[0].role
        fenced = fenced_off([c.manifest for c in classes if c.manifest is not None], config, role)
        for name, reason in fenced.items():
            log.warning("not starting daemon here", reason=f"{name}: {reason}")
        for runner in runners:
            stand_down = runner.epoch_refusal() if runner.name not in fenced else None
            if stand_down:
                fenced[runner.name] = stand_down
                log.warning("not starting daemon here", reason=f"{runner.name}: {stand_down}")
        runners = [r for r in runners if r.name not in fenced]
        if not runners:
            raise RefusedToStart(f"no daemon can run with this role ({role})")
    return runners


async def run_daemons(
    daemons: Sequence[DaemonSpec],
    config: FleetConfig,
    *,
    once: bool = False,
    dry_run: bool = False,
    notifier: Notifier | None = None,
    fleet: Sequence[DaemonManifest] = (),
    reload: Reloader | None = None,
) -> int:
    """Run the daemons (their classes, or manifests whose classes are imported now) until a
    signal, or one cycle each with ``once``; return the exit code. ``fleet``: every registered
    daemon's manifest, for the daemons that report on the others (heartbeat's /health).
    ``reload``: where SIGHUP gets the new config (default: the same config again, which still
    re-reads the role file and restarts the daemons in process)."""
    log = get_logger()
    if not fleet:
        # Without the app's registry, the daemons being run are all this process knows of.
        classes = [d.load_daemon() if isinstance(d, DaemonManifest) else d for d in daemons]
        fleet = [cls.manifest for cls in classes if cls.manifest is not None]
    try:
        runners = _build(daemons, config, dry_run=dry_run, fleet=fleet, log=log)
    except (RoleFileError, RefusedToStart) as exc:
        log.error("refusing to start", reason=str(exc))
        return ExitCode.CONFIG
    notifier = notifier or Notifier()
    if once:
        return await _run_once(runners, log)
    process = _Process(
        runners,
        notifier,
        log,
        reload=reload or (lambda: (config, daemons)),
        dry_run=dry_run,
        fleet=fleet,
    )
    return await process.run()


class _Process:
    """One long-running ``fleet run``: the current runners (replaced on SIGHUP), the signal
    handlers and the watchdog."""

    def __init__(
        self,
        runners: list[DaemonRunner],
        notifier: Notifier,
        log: Any,
        *,
        reload: Reloader,
        dry_run: bool,
        fleet: Sequence[DaemonManifest],
    ) -> None:
        self.runners = runners
        self.notifier = notifier
        self.log = log
        self.reloader = reload
        self.dry_run = dry_run
        self.fleet = fleet
        self.reloads = 0
        self.signals = ProcessSignals(notifier, log, on_dump=self.dump)
        self.tasks: list[asyncio.Task[Any]] = []  # the running loops and senders

    async def run(self) -> int:
        self.signals.install()
        stop = self.signals.stop
        watchdog: asyncio.Task[None] | None = None
        try:
            code = await self._open(self.runners)
            if code is not None:
                return code
            if stop.is_set():
                await _close_all(self.runners)
                return self.signals.exit_code
            self.notifier.ready(status="cycling")
            wd = watchdog_interval_s()
            if wd is not None:
                watchdog = asyncio.create_task(
                    _watchdog(lambda: self.runners, lambda: self.tasks, self.notifier, wd, stop)
                )
            code = await self._serve()
        finally:
            if watchdog is not None:
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
            self.signals.remove()
            self.notifier.close()
        self.log.info("stopped", exit_code=code)
        return code

    async def _open(self, runners: list[DaemonRunner]) -> int | None:
        """Open every runner; the exit code when one cannot start (all closed again)."""
        opened: list[DaemonRunner] = []
        try:
            for r in runners:
                opened.append(r)
                await r.open(serve_metrics=True, with_outbox=True)
                self.log.info(
                    "daemon started",
                    daemon=r.name,
                    role=r.role,
                    pid=os.getpid(),
                    metrics_port=r.server.port if r.server else None,
                    dry_run=self.dry_run,
                )
        except RefusedToStart as exc:
            self.log.error("refusing to start", reason=str(exc))
            await _close_all(opened)
            return ExitCode.CONFIG
        except Exception as exc:
            self.log.error("startup failed", error=describe_error(exc))
            log_tracebacks(self.log, "startup failure traceback", exc)
            await _close_all(opened)
            return ExitCode.FAILURE
        return None

    def _spawn(self) -> tuple[asyncio.Event, list[asyncio.Task[Any]]]:
        """Start the current runners' loops and senders; the event stops this set only."""
        generation = asyncio.Event()
        tasks = [
            asyncio.create_task(r.loop(generation), name=f"{r.name}-loop") for r in self.runners
        ]
        tasks += [
            asyncio.create_task(r.run_sender(generation), name=f"{r.name}-sender")
            for r in self.runners
            if r.sender is not None  # --dry-run sends nothing: no sender task
        ]
        self.tasks = tasks
        return generation, tasks

    async def _serve(self) -> int:
        """Cycle the current runners until a stop; on SIGHUP swap them for a new set (or keep
        them, still running, when the new config cannot start)."""
        signals = self.signals
        generation, tasks = self._spawn()
        while True:
            waiters = [
                asyncio.create_task(signals.stop.wait()),
                asyncio.create_task(signals.reload.wait()),
            ]
            await asyncio.wait([*waiters, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            code = signals.exit_code
            if not signals.stop.is_set() and any(t.done() for t in tasks):
                # A loop or sender ended on its own: a bug, not a signal. Exit non-zero so the
                # service manager restarts us, rather than live on without cycling or sending.
                for t in tasks:
                    if t.done() and not t.cancelled():
                        failure = t.exception()
                        self.log.error(
                            "daemon task ended unexpectedly",
                            task=t.get_name(),
                            error=describe_error(failure) if failure else "returned",
                        )
                code = ExitCode.FAILURE
                self.notifier.stopping()
                signals.stop.set()
            if signals.stop.is_set():
                await self._stop(generation, tasks)
                return code
            signals.reload.clear()
            self.notifier.reloading()
            outcome = await self._reload(generation, tasks)
            if outcome == "swapped":
                generation, tasks = self._spawn()
            elif outcome != "kept":
                return int(outcome)
            self.notifier.ready(status="cycling")

    async def _stop(self, generation: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
        generation.set()
        self.tasks = []  # ending on purpose: not a dead loop for the watchdog
        grace = self.runners[0].config.fleet.stop_grace_s if self.runners else 0.0
        _done, pending = await asyncio.wait(tasks, timeout=grace + 1.0) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.shield(_close_all(self.runners))

    async def _reload(
        self, generation: asyncio.Event, tasks: list[asyncio.Task[Any]]
    ) -> int | Literal["kept", "swapped"]:
        """Swap the running daemons for ones on the reloaded config. "kept": the new config
        cannot start, the running set (and its tasks) goes on untouched; "swapped": the old set
        is stopped and a new one is open (on the new config, or on the old one when the new set
        failed to open); an exit code: stop."""
        try:
            config, daemons = await asyncio.to_thread(self.reloader)
            fresh = _build(daemons, config, dry_run=self.dry_run, fleet=self.fleet, log=self.log)
            for r in fresh:
                r.check_role()
        except RefusedToStart as exc:
            # The host's role changed under us: stop as a restart would (78, not restarted).
            self.log.error("refusing to run after reload", reason=str(exc))
            self.notifier.stopping()
            await self._stop(generation, tasks)
            return ExitCode.CONFIG
        except ConfigError as exc:
            self.log.error("reload failed; still running as before", errors=exc.errors)
            return "kept"
        except Exception as exc:  # a garbled role file, a daemon that no longer imports
            self.log.error("reload failed; still running as before", error=describe_error(exc))
            return "kept"
        old = self.runners
        await self._stop(generation, tasks)
        if self.signals.stop.is_set():
            return self.signals.exit_code
        self.runners = fresh
        if await self._open(fresh) is None:
            self.reloads += 1
            self.log.info("reloaded", daemons=[r.name for r in fresh], reloads=self.reloads)
            return "swapped"
        # The new set cannot start (a port taken, a resource gone): the old config again.
        self.log.error("reloaded daemons did not start; starting the previous config again")
        self.runners = [
            DaemonRunner(r.daemon_cls, r.config, dry_run=self.dry_run, fleet=self.fleet)
            for r in old
        ]
        code = await self._open(self.runners)
        return "swapped" if code is None else code

    def dump(self, signal_name: str) -> None:
        """SIGUSR1/SIGUSR2: one log line with where each daemon is; nothing changes."""
        self.log.info(
            "state",
            signal=signal_name,
            pid=os.getpid(),
            reloads=self.reloads,
            daemons=[r.state(time.monotonic()) for r in self.runners],
        )


async def _close_all(runners: Sequence[DaemonRunner]) -> None:
    for r in runners:
        await r.close()


async def _run_once(runners: Sequence[DaemonRunner], log: Any) -> int:
    code = 0
    for r in runners:
        try:
            await r.open(serve_metrics=False, with_outbox=True)
        except RefusedToStart as exc:
            log.error("refusing to start", reason=str(exc))
            await r.close()
            return ExitCode.CONFIG
        except Exception as exc:
            log.error("startup failed", daemon=r.name, error=describe_error(exc))
            log_tracebacks(log, "startup failure traceback", exc, daemon=r.name)
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

"""The Daemon base class and what a daemon gets from the runtime (``DaemonContext``).

A daemon implements ``open``/``cycle``/``close`` over its own config section (``Daemon[S]`` is
generic over the section type) and must never install signal handlers, sleep between cycles, or
catch its own cancellation. Where it may run, its metrics, unit profile and entry points are in
its manifest (``daemons/<name>/manifest.py``), which the class names as ``manifest``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from shared.clock import Clock
from shared.config import FleetConfig
from shared.cycles import CycleResult
from shared.manifest import DaemonManifest
from shared.metrics import DaemonMetrics, MetricSet
from shared.notify import Message, OutboxStore
from shared.roles import Role
from shared.sections import DaemonSection

__all__ = ["CycleResult", "Daemon", "DaemonContext", "RefusedToStart"]

S = TypeVar("S", bound=DaemonSection)


class RefusedToStart(Exception):
    """This daemon must not run here (role fencing, unusable setup). Exit 78, saying why."""


@dataclass
class DaemonContext(Generic[S]):
    """What a daemon gets from the runtime: config, its section, role, logger, metrics,
    the outbox (None with --dry-run or --once without sending), and an injected clock."""

    config: FleetConfig
    section: S
    role: Role
    log: Any
    metrics: DaemonMetrics
    outbox: OutboxStore | None
    dry_run: bool = False
    clock: Clock = time.time
    #: every registered daemon's manifest (the heartbeat's /health reads them); set by the app
    fleet: tuple[DaemonManifest, ...] = ()

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


class Daemon(Generic[S]):
    """Base class. Subclasses set ``manifest`` (or, for a daemon without one, ``name``) and
    implement ``cycle``."""

    name: ClassVar[str] = ""
    manifest: ClassVar[DaemonManifest | None] = None
    #: cron expression (UTC) for scheduled daemons; None: run every ``interval_s``.
    schedule: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.manifest is not None and not cls.__dict__.get("name"):
            cls.name = cls.manifest.name

    def __init__(self, ctx: DaemonContext[S]) -> None:
        self.ctx = ctx
        self.section: S = ctx.section
        self.log = ctx.log

    @classmethod
    def refuse_reason(cls, section: Any, role: Role | str) -> str | None:
        """Why this daemon must not start with ``role`` (its manifest's role rule), or None."""
        return cls.manifest.refuse_reason(section, role) if cls.manifest is not None else None

    def own_metrics(self) -> MetricSet:
        """Register the metrics the manifest lists on this daemon's registry."""
        specs = self.manifest.metrics if self.manifest is not None else ()
        return self.ctx.metrics.own(specs)

    @property
    def expected_interval_s(self) -> float:
        return self.ctx.section.interval_s

    async def open(self) -> None:
        """Acquire resources (DB connections, clients). Runs before READY=1."""

    async def cycle(self) -> CycleResult | None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release resources; runs shielded at shutdown, also after a failed open."""

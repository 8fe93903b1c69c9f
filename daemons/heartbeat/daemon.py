"""The heartbeat daemon: serves this host's /health, pings dead-man's switches and watches peer
hosts, alerting #ops and escalating per ``policy``.

Each cycle (every ``interval_s``, short) reads the fleet's heartbeat files, folds finished probes
into the peer states, enqueues the alerts they call for, then starts the probes and pings that
are due, each as its own task with its own deadline; it waits at most one interval for them and
picks up slower ones in a later cycle. The health endpoint lives in the same event loop but never
waits on a probe. It must never log a ping URL, block the loop on I/O, or probe a target twice
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from daemons.heartbeat.config import HeartbeatSection, PeerConfig, PingConfig
from daemons.heartbeat.drill_metrics import DrillMetrics
from daemons.heartbeat.health import HealthServer, HealthView
from daemons.heartbeat.manifest import MANIFEST
from daemons.heartbeat.policy import (
    FleetReport,
    PeerState,
    Thresholds,
    event_message,
    observe,
    ping_target,
    stand_down_verdict,
    url_hash,
)
from daemons.heartbeat.probe import PeerProbe, PingResult, probe_peer, send_ping
from daemons.heartbeat.store import PeerStateFile
from shared.dr_record import read_drill_record
from shared.epochs import Epoch, PeerEpoch, read_epoch, record_peer_epoch
from shared.files import complete_in_thread
from shared.notify import Message
from shared.roles import Role, RoleFileError, effective_role
from shared.runtime import CycleResult, Daemon, DaemonContext, RefusedToStart
from shared.sqlite import StoreError

if TYPE_CHECKING:  # imported with the first probe (``_http``)
    import httpx

__all__ = ["Heartbeat", "HeartbeatUnhealthy", "PingTarget"]

PING_OUTCOMES = ("ok", "fail", "error")


class HeartbeatUnhealthy(Exception):
    """The cycle did its probes but part of the daemon is not working (fails the cycle)."""


@dataclass(frozen=True)
class PingTarget:
    """A configured ping with its secret URL resolved; ``key`` is the only loggable name."""

    config: PingConfig
    url: str
    key: str

    @property
    def label(self) -> str:
        return self.config.name or self.key


@dataclass
class _Probe:
    kind: str  # "peer" | "ping"
    target: str  # peer name or ping key
    started_at: float
    task: asyncio.Task[Any]
    degraded: bool = False


def resolve_pings(pings: list[PingConfig]) -> list[PingTarget]:
    """Read each ping's URL (``url_file`` wins). Raises RefusedToStart naming the ping (by
    name or position, never by URL) when a file is unreadable or holds no usable URL."""
    from daemons.heartbeat.config import check_peer_url

    out: list[PingTarget] = []
    seen: set[str] = set()
    for index, ping in enumerate(pings):
        where = f"heartbeat.pings[{index}]" + (f" ({ping.name})" if ping.name else "")
        if ping.url_file is not None:
            try:
                url = ping.url_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise RefusedToStart(
                    f"{where}.url_file: cannot read {ping.url_file}: {exc.strerror}"
                ) from None
            except UnicodeDecodeError:
                raise RefusedToStart(
                    f"{where}.url_file: {ping.url_file} is not UTF-8 text"
                ) from None
            try:
                check_peer_url(url, allow_credentials=True)
            except ValueError as exc:
                raise RefusedToStart(f"{where}.url_file: the URL in it {exc}") from None
        else:
            url = ping.url.get_secret_value()
        key = url_hash(url)
        if key in seen:
            raise RefusedToStart(f"{where}: the same ping URL is configured twice")
        seen.add(key)
        out.append(PingTarget(ping, url, key))
    return out


class Heartbeat(Daemon[HeartbeatSection]):
    manifest = MANIFEST

    def __init__(self, ctx: DaemonContext[HeartbeatSection]) -> None:
        super().__init__(ctx)
        self.view = HealthView(
            ctx.config, ctx.fleet, cache_s=self.section.health_cache_s, clock=ctx.clock
        )
        self.server: HealthServer | None = None
        self.client: httpx.AsyncClient | None = None
        self.peers: dict[str, PeerConfig] = {p.name: p for p in self.section.peers}
        self.states: dict[str, PeerState] = {name: PeerState(name) for name in self.peers}
        self.pings: dict[str, PingTarget] = {}
        self.store = PeerStateFile(self.section.state_file)
        self.pending: list[Message] = []
        self.next_due: dict[tuple[str, str], float] = {}
        self.in_flight: dict[tuple[str, str], _Probe] = {}
        self.ping_failing: dict[str, bool] = {}
        self._dirty = False
        self._problems_logged: set[str] = set()
        self._last_role = ctx.role
        #: this host's promotion epoch (read with the role) and the peers' epochs to record
        self._local_epoch: Epoch | None = None
        self._seen_epochs: dict[str, PeerEpoch] = {}
        self._last_stale: tuple[str, ...] | None = None
        metrics = self.own_metrics()
        self.m_peer_up = metrics.gauge("fleet_heartbeat_peer_up")
        self.m_peer_failures = metrics.gauge("fleet_heartbeat_peer_consecutive_failures")
        self.m_two_primaries = metrics.gauge("fleet_heartbeat_two_primaries")
        self.m_pings = metrics.counter("fleet_heartbeat_pings_total")
        self.m_degraded = metrics.gauge("fleet_heartbeat_fleet_degraded")
        self.drill = DrillMetrics(metrics)
        self.m_endpoint_up = metrics.gauge("fleet_heartbeat_endpoint_up")
        for name in self.peers:
            self.m_peer_failures.labels(name).set(0)
            self.m_two_primaries.labels(name).set(0)

    # lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        targets = await asyncio.to_thread(resolve_pings, self.section.pings)
        self.pings = {t.key: t for t in targets}
        for key in self.pings:
            for outcome in PING_OUTCOMES:
                self.m_pings.labels(key, outcome)
        loaded = await asyncio.to_thread(self.store.load, list(self.peers))
        if loaded.problem:
            self.log.warning(
                "peer state file ignored; starting fresh",
                path=str(self.store.path),
                problem=loaded.problem,
            )
        self.states.update(loaded.peers)
        self.pending = loaded.pending
        for name, state in self.states.items():
            self._export_peer(name, state)
        await self._ensure_server()

    def _http(self) -> httpx.AsyncClient:
        """The probes' client, built at the first probe: httpx and its TLS context cost ~4 MiB
        that a heartbeat with no peer and no ping never needs."""
        if self.client is None:
            import httpx

            self.client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,  # peers are on the tailnet: no proxy from the env may intercept
                headers={"User-Agent": "alai-fleet-heartbeat"},
                limits=httpx.Limits(
                    max_connections=max(4, 2 * (len(self.peers) + len(self.pings)))
                ),
            )
        return self.client

    async def close(self) -> None:
        probes = list(self.in_flight.values())
        self.in_flight.clear()
        for probe in probes:
            probe.task.cancel()
        for probe in probes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await probe.task
        first: BaseException | None = None
        try:
            await self._save()
        except OSError as exc:
            first = exc
        if self.server is not None:
            server, self.server = self.server, None
            await server.close()
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()
        if first is not None:
            raise first

    async def _ensure_server(self) -> None:
        if self.server is not None:
            return
        server = HealthServer(
            self.view, self.section.health_bind, self.section.health_port, log=self.log
        )
        try:
            await server.start()
        except OSError as exc:
            self.m_endpoint_up.set(0)
            self._problem(
                "endpoint",
                "health endpoint cannot bind; retrying every cycle",
                bind=self.section.health_bind,
                port=self.section.health_port,
                error=exc.strerror or str(exc),
            )
            return
        self.server = server
        self.m_endpoint_up.set(1)
        self._resolved("endpoint")
        self.log.info("health endpoint serving", bind=self.section.health_bind, port=server.port)

    # cycle -----------------------------------------------------------------------------------
    async def cycle(self) -> CycleResult:
        try:
            report, _ = await self.view.current(max_age_s=0)
        except Exception as exc:  # any bug in reading siblings' files; peer watch must go on
            self._problem(
                "health-view",
                "cannot build the health view; treating this host as degraded",
                error=f"{type(exc).__name__}: {exc}",
            )
            report = FleetReport(False, {"stale": ["health view"]})
        else:
            self._resolved("health-view")
        degraded = not report.ok
        self.m_degraded.set(1 if degraded else 0)
        record = await asyncio.to_thread(read_drill_record, self.ctx.config.state_dir)
        self.drill.export(record, self._last_role)
        stale = tuple(report.stale)
        if stale != self._last_stale:  # log on change, naming what is stale
            if stale:
                self.log.warning("fleet degraded on this host", stale=list(stale))
            elif self._last_stale is not None:
                self.log.info("fleet ok again on this host")
            self._last_stale = stale
        await self._ensure_server()
        self._harvest(await self._local_role())
        await self._flush()
        launched = self._launch_due(degraded=degraded)
        if self.in_flight:
            budget = min(self.section.interval_s, self.section.cycle_timeout_s / 2)
            await asyncio.wait([p.task for p in self.in_flight.values()], timeout=budget)
        self._harvest(await self._local_role())
        await self._flush()
        problems = []
        if self.pending:
            problems.append(f"{len(self.pending)} alert(s) waiting for the outbox")
        if self.server is None:
            problems.append("health endpoint not serving")
        if problems:
            raise HeartbeatUnhealthy("; ".join(problems))
        return CycleResult(
            detail={"degraded": degraded, "launched": launched, "in_flight": len(self.in_flight)}
        )

    def _launch_due(self, *, degraded: bool) -> int:
        now = self.ctx.clock()
        launched = 0
        for name, peer in self.peers.items():
            key = ("peer", name)
            if key in self.in_flight or now < self.next_due.get(key, 0.0):
                continue
            self.next_due[key] = now + peer.interval_s
            peer_task = asyncio.create_task(
                probe_peer(self._http(), peer.url, peer.timeout_s), name=f"heartbeat-peer-{name}"
            )
            self.in_flight[key] = _Probe("peer", name, now, peer_task)
            launched += 1
        for ping_key, ping in self.pings.items():
            key = ("ping", ping_key)
            if key in self.in_flight or now < self.next_due.get(key, 0.0):
                continue
            self.next_due[key] = now + ping.config.interval_s
            if self.ctx.dry_run:
                self.log.info("dry-run: would ping", ping=ping.label, fail=degraded)
                continue
            ping_task = asyncio.create_task(
                send_ping(
                    self._http(),
                    ping_target(ping.url, degraded=degraded),
                    timeout_s=ping.config.timeout_s,
                    retries=ping.config.retries,
                ),
                name=f"heartbeat-ping-{ping_key}",
            )
            self.in_flight[key] = _Probe("ping", ping_key, now, ping_task, degraded=degraded)
            launched += 1
        return launched

    async def _local_role(self) -> Role:
        """This host's role now (the role file wins), read off the loop: a promotion or
        demotion takes effect on the next probe result without a restart. A role file garbled
        since the last good read is reported once (and /health shows it); the peer checks go
        on with the last role that was read."""
        config = self.ctx.config
        try:
            role = await asyncio.to_thread(effective_role, config.fleet.role, config.role_file)
        except RoleFileError as exc:
            self._problem(
                "role-file", "role file unreadable; using the last role read", error=str(exc)
            )
            return self._last_role
        self._resolved("role-file")
        self._last_role = role
        self._local_epoch = await asyncio.to_thread(read_epoch, config.role_file)
        return role

    def _harvest(self, local_role: Role) -> None:
        for key, probe in list(self.in_flight.items()):
            if not probe.task.done():
                continue
            del self.in_flight[key]
            if probe.task.cancelled():
                continue
            exc = probe.task.exception()
            crash = f"probe:{probe.kind}:{probe.target}"
            result: PeerProbe | PingResult
            if exc is not None:
                # The adapters return results, so this is a bug; but a target that crashes
                # every probe is down to us, and must count towards its alert.
                self._problem(crash, "probe crashed", kind=probe.kind, error=type(exc).__name__)
                error = type(exc).__name__
                result = (
                    PeerProbe(False, error=error)
                    if probe.kind == "peer"
                    else PingResult(False, 1, error)
                )
            else:
                self._resolved(crash)
                result = probe.task.result()
            if probe.kind == "peer":
                assert isinstance(result, PeerProbe)
                self._apply_peer(probe.target, probe.started_at, result, local_role)
            else:
                assert isinstance(result, PingResult)
                self._apply_ping(probe.target, probe.degraded, result)

    def _apply_peer(
        self, name: str, started_at: float, result: PeerProbe, local_role: Role
    ) -> None:
        peer = self.peers[name]
        previous = self.states[name]
        state, events = observe(
            previous,
            ok=result.ok,
            now=started_at,
            thresholds=Thresholds(peer.alert_after, peer.escalate_after, peer.recovery_after),
            local_role=local_role,
            peer_role=result.role,
            peer_status=result.fleet_status,
            error=result.error,
        )
        self.states[name] = state
        self._dirty = True
        self._export_peer(name, state)
        if result.ok:
            self._seen_epochs[name] = PeerEpoch(name, result.role, result.epoch, started_at)
        host = self.ctx.config.fleet.host
        for event in events:
            if event.kind == "two_primaries":
                verdict = stand_down_verdict(host, self._local_epoch, name, result.epoch)
                event = replace(event, stand_down=verdict)
            log = self.log.warning if event.kind in ("down", "escalated") else self.log.info
            if event.kind == "two_primaries":
                log = self.log.error
            log(
                f"peer {event.kind.replace('_', ' ')}",
                peer=name,
                failures=event.failures,
                outage_s=round(event.outage_s, 1) if event.outage_s is not None else None,
                error=event.error or None,
                stand_down=event.stand_down or None,
            )
            self.pending.extend(
                event_message(
                    event,
                    host=host,
                    ops_channel=self.ctx.config.slack.ops_channel,
                    escalation_channel=self.section.escalation_channel,
                    escalated=previous.level == "escalated",
                )
            )

    def _apply_ping(self, key: str, degraded: bool, result: PingResult) -> None:
        outcome = ("fail" if degraded else "ok") if result.ok else "error"
        self.m_pings.labels(key, outcome).inc()
        label = self.pings[key].label
        failing = not result.ok
        if failing != self.ping_failing.get(key, False):
            if failing:
                self.log.warning(
                    "ping not delivered",
                    ping=label,
                    url_hash=key,
                    error=result.error,
                    attempts=result.attempts,
                )
            else:
                self.log.info("ping delivered again", ping=label, url_hash=key)
            self.ping_failing[key] = failing

    def _export_peer(self, name: str, state: PeerState) -> None:
        if state.last_ok is not None:
            self.m_peer_up.labels(name).set(1 if state.last_ok else 0)
        self.m_peer_failures.labels(name).set(state.consecutive_failures)
        self.m_two_primaries.labels(name).set(1 if state.two_primaries_at is not None else 0)

    # outbox and state ------------------------------------------------------------------------
    async def _flush(self) -> None:
        """Hand pending alerts to the outbox (dedup keys make a repeat harmless), then save the
        state with whatever could not be handed over. The peers' epochs are recorded first:
        they fence this host's writers (shared.epochs)."""
        await self._record_epochs()
        if self.pending:
            kept: list[Message] = []
            for index, msg in enumerate(self.pending):
                try:
                    await self.ctx.notify(msg)
                except (StoreError, sqlite3.Error, OSError) as exc:
                    self.ctx.metrics.store_error(self.ctx.config.notify.outbox_db.name)
                    kept = self.pending[index:]
                    self._problem(
                        "outbox",
                        "cannot enqueue alerts; keeping them",
                        waiting=len(kept),
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    break
            else:
                self._resolved("outbox")
            self._dirty = self._dirty or len(kept) != len(self.pending)
            self.pending = kept
        if self._dirty:
            try:
                await self._save()
            except OSError as exc:
                self._problem("state", "cannot write the peer state file", error=str(exc))
            else:
                self._resolved("state")

    async def _record_epochs(self) -> None:
        seen, self._seen_epochs = self._seen_epochs, {}
        if self.ctx.dry_run:
            return
        for name, peer in seen.items():
            try:
                await complete_in_thread(record_peer_epoch, self.ctx.config.role_file, peer)
            except OSError as exc:
                self._seen_epochs.setdefault(name, peer)
                self._problem("epochs", "cannot record the peers' epochs", error=str(exc))
                return
        self._resolved("epochs")

    async def _save(self) -> None:
        """Write the state file off the loop; a stop arriving meanwhile waits for the write
        (close() writes it again right after, and the newest state must land last)."""
        if self.ctx.dry_run or not self.peers:
            return
        states, pending = dict(self.states), list(self.pending)
        await complete_in_thread(self.store.save, states, pending)
        self._dirty = False

    def _problem(self, key: str, event: str, **fields: Any) -> None:
        if key not in self._problems_logged:
            self._problems_logged.add(key)
            self.log.error(event, **fields)

    def _resolved(self, key: str) -> None:
        if key in self._problems_logged:
            self._problems_logged.discard(key)
            self.log.info("recovered", what=key)

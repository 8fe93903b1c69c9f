"""The ollama-health daemon: each cycle probes every watched LLM server at once, folds the
results through the thresholds, merges the manual override, decides tier routing from the
failover rules, writes the status file the routers read, and queues one #ops alert per
transition (host down / recovered, failover rule activated / cleared). With ``status_link``
set it also publishes its own symlink at that legacy path (the hosts' /tmp), pointing at the
private status file, and reports (once per episode) whatever another user put there instead.

A dead host is a reported state, never a failed cycle. A malformed tier-routing file or override
file is reported once and worked around (last good table; no override), never fatal. File I/O
runs in worker threads (the tier-routing file is re-read only when its (mtime, size) changed),
and the status and memory writes finish even when a stop interrupts the cycle. Its memory
(thresholds, incidents, unsent alerts) lives only in its own file under the private state dir
and is never read back from anywhere else. It must never write the status file in place or in
a directory others can write, send to Slack itself, change the tier-routing file, trust an
override file others could write (or wait on one), or alert a channel [slack] does not name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from typing import Any

from daemons.ollama_health.config import OllamaHealthSection
from daemons.ollama_health.file_trust import (
    LinkState,
    UntrustedFile,
    inspect_link,
    publish_link,
    read_trusted,
    unsafe_setup,
)
from daemons.ollama_health.manifest import MANIFEST
from daemons.ollama_health.policy import (
    MAX_OVERRIDE_BYTES,
    HostState,
    Override,
    OverrideError,
    alert_channel,
    config_error_alert,
    effective_health,
    format_iso,
    host_alert,
    link_error_alert,
    observe,
    override_error_alert,
    parse_override,
    rule_alert,
    rule_changes,
)
from daemons.ollama_health.probe import Prober, ProbeResult
from daemons.ollama_health.routing import RoutingDecision, decide
from daemons.ollama_health.status_file import (
    MAX_STATUS_BYTES,
    Memory,
    StatusFileError,
    build_status,
    memory_from_json,
    parse_status,
    write_status,
)
from daemons.ollama_health.table import (
    RoutingTable,
    TableError,
    parse_tier_routing,
    table_from_section,
)
from shared.files import atomic_write_json, complete_in_thread
from shared.notify import Message
from shared.runtime import CycleResult, Daemon, DaemonContext, RefusedToStart
from shared.sqlite import StoreError

__all__ = ["OllamaHealth", "TierRoutingUnusable"]

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
MAX_TIER_ROUTING_BYTES = 1024 * 1024
MEMORY_FILE_NAME = "ollama-health-memory.json"


class TierRoutingUnusable(Exception):
    """The tier-routing file cannot be used and there is no earlier good version."""


class StatusWriteFailed(Exception):
    """The status or memory file could not be written (the cycle's other work was done)."""


class OllamaHealth(Daemon[OllamaHealthSection]):
    manifest = MANIFEST

    def __init__(
        self, ctx: DaemonContext[OllamaHealthSection], *, prober: Prober | None = None
    ) -> None:
        super().__init__(ctx)
        self.prober = prober
        self.memory = Memory()
        self.memory_path = ctx.config.state_dir / MEMORY_FILE_NAME
        self.table: RoutingTable | None = None
        self._table_key: tuple[int, int] | None = None
        self._config_error: str | None = None
        self._override_error: str | None = None
        self._link_error: str | None = None
        self.status_path = ctx.section.status_file.absolute()
        self._override_state: tuple[tuple[str, bool], ...] = ()
        self._expired_logged: set[str] = set()
        self._known_hosts: set[str] = set()
        self._known_rules: set[str] = set()
        metrics = self.own_metrics()
        self.m_up = metrics.gauge("fleet_ollama_up")
        self.m_probe = metrics.histogram("fleet_ollama_probe_duration_seconds")
        self.m_models = metrics.gauge("fleet_ollama_models")
        self.m_transitions = metrics.counter("fleet_ollama_transitions_total")
        self.m_failover = metrics.gauge("fleet_ollama_failover_active")
        self.m_override = metrics.gauge("fleet_ollama_override_active")
        self.m_override.set(0)

    # lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        problem = await asyncio.to_thread(
            unsafe_setup, self.status_path, self.memory_path.parent, self.section.status_link
        )
        if problem is not None:
            raise RefusedToStart(f"{self.name}: {problem}")
        if self.prober is None:
            self.prober = Prober()
        # Hosts no longer watched are dropped by the first cycle, once the table is known.
        self.memory = await asyncio.to_thread(self._restore_memory)

    def _restore_memory(self) -> Memory:
        """The memory file under the state dir, if it is a regular file of this user; else a
        fresh memory (open incidents are alerted again once they cross the threshold)."""
        try:
            raw = read_trusted(self.memory_path, MAX_STATUS_BYTES, root_may_own=False)
            saved = None if raw is None else parse_status(raw, self.memory_path)
        except (UntrustedFile, StatusFileError) as exc:
            self.log.warning(
                "memory file not used; starting fresh", path=str(self.memory_path), error=str(exc)
            )
            saved = None
        memory = memory_from_json(saved)
        if memory.hosts:
            self.log.info(
                "restored host states",
                source=str(self.memory_path),
                hosts={n: s.healthy for n, s in memory.hosts.items()},
            )
        return memory

    async def close(self) -> None:
        if self.prober is not None:
            prober, self.prober = self.prober, None
            await prober.close()

    # inputs --------------------------------------------------------------------------------
    def _load_table(self) -> RoutingTable:
        """The table from tier_routing_file (re-read when it changes) or the inline keys."""
        path = self.section.tier_routing_file
        if path is None:
            return self.table if self.table is not None else table_from_section(self.section)
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if self.table is not None and key == self._table_key:
                return self.table
            with path.open("rb") as fh:
                raw = fh.read(MAX_TIER_ROUTING_BYTES + 1)
            if len(raw) > MAX_TIER_ROUTING_BYTES:
                raise TableError(f"<file>: larger than {MAX_TIER_ROUTING_BYTES} bytes")
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                raise TableError(f"<file>: not valid JSON ({exc})") from None
            table = parse_tier_routing(doc)
            limit = self.section.cycle_timeout_s - 1
            for host in table.hosts.values():
                if host.timeout_s >= limit:
                    raise TableError(
                        f"ollamaHosts.{host.name}.health_timeout_ms: "
                        f"{round(host.timeout_s * 1000)} must stay below "
                        f"[ollama_health] cycle_timeout_s - 1 s ({limit:g} s)"
                    )
        except OSError as exc:
            raise TierRoutingUnusable(f"cannot read {path}: {exc.strerror or exc}") from None
        except TableError as exc:
            raise TierRoutingUnusable(f"{path}: {exc}") from None
        self._table_key = key
        return table

    async def _refresh_table(self) -> RoutingTable:
        try:
            table = await asyncio.to_thread(self._load_table)
        except TierRoutingUnusable as exc:
            error = str(exc)
            since = self.memory.errors_since.setdefault("config", self.ctx.clock())
            if error != self._config_error:
                self._config_error = error
                self.log.error(
                    "tier routing file unusable"
                    + ("; keeping the last good version" if self.table else ""),
                    error=error,
                )
                self._queue(
                    config_error_alert(
                        error,
                        path=str(self.section.tier_routing_file),
                        channel=self.ctx.config.slack.ops_channel,
                        monitor_host=self.ctx.config.fleet.host,
                        since=since,
                    )
                )
            if self.table is None:
                await self._flush_alerts()
                await self._save_memory()
                raise
            return self.table
        if self._config_error is not None:
            self.log.info("tier routing file usable again", hosts=sorted(table.hosts))
            self._config_error = None
        self.memory.errors_since.pop("config", None)
        if self.table is not None and table is not self.table:
            self.log.info(
                "tier routing table changed", hosts=sorted(table.hosts), rules=sorted(table.rules)
            )
        self.table = table
        return table

    def _read_override(self, table: RoutingTable) -> Override:
        """The override file, or an empty override (missing, or malformed: reported once)."""
        path = self.section.override_file
        error: str | None = None
        try:
            # Never blocks (O_NONBLOCK: a FIFO is refused), never follows a link.
            raw = read_trusted(path, MAX_OVERRIDE_BYTES)
            override = Override()
            if raw is not None:
                override = parse_override(raw.decode("utf-8", errors="replace"), table.hosts)
        except (UntrustedFile, OverrideError) as exc:
            override, error = Override(), str(exc)
        if error is None:
            self.memory.errors_since.pop("override", None)
        else:
            since = self.memory.errors_since.setdefault("override", self.ctx.clock())
        if error != self._override_error:
            self._override_error = error
            if error is not None:
                self.log.error("override file ignored", path=str(path), error=error)
                self._queue(
                    override_error_alert(
                        error,
                        path=str(path),
                        channel=self.ctx.config.slack.ops_channel,
                        monitor_host=self.ctx.config.fleet.host,
                        since=since,
                    )
                )
        if override.unknown_hosts:
            self.log.debug("override names unknown hosts", hosts=list(override.unknown_hosts))
        return override

    # cycle ---------------------------------------------------------------------------------
    async def cycle(self) -> CycleResult:
        assert self.prober is not None
        table = await self._refresh_table()
        override = await asyncio.to_thread(self._read_override, table)
        link = await self._publish_link()
        probes = await self.prober.probe_all(table.hosts.values())
        now = self.ctx.clock()
        forced = override.active(now)
        self._observe(table, probes, forced, now)
        healthy = effective_health(
            {name: self.memory.hosts.get(name, HostState()) for name in table.hosts}, forced
        )
        urls = {
            name: table.hosts[name].endpoint(probe.via)
            for name, probe in probes.items()
            if probe.ok
        }
        decision = decide(table, healthy, urls)
        self._rules(table, decision, forced, now)
        self._report_override(override, forced, now)
        override_view = {
            "active": bool(forced),
            "hosts": dict(forced),
            "expires_at": _iso_or_none(override.expires_at(now)),
            "expired": override.expired(now),
            "unknown_hosts": list(override.unknown_hosts),
            "error": self._override_error,
            "file": str(self.section.override_file),
        }
        doc = build_status(
            table=table,
            memory=self.memory,
            probes=probes,
            forced=forced,
            override=override_view,
            decision=decision,
            now=now,
            interval_s=self.section.interval_s,
            config_error=self._config_error,
            link=link.to_json() if link is not None else None,
        )
        # Status and memory first (routing matters most), alerts after: a crash in between
        # leaves them in the memory file's pending_alerts, and the next start enqueues them
        # (same keys).
        write_error = await self._write(doc)
        memory_error = await self._save_memory()
        if await self._flush_alerts() and not self.ctx.dry_run:
            memory_error = await self._save_memory()
            if write_error is None:
                doc["_monitor"] = self.memory.to_json()
                write_error = await self._write(doc)
        self._update_metrics(table, probes, decision, forced)
        errors = [e for e in (write_error, memory_error) if e is not None]
        if errors:
            raise StatusWriteFailed("; ".join(errors))
        return CycleResult(
            detail={
                "healthy": sorted(n for n, ok in healthy.items() if ok),
                "unhealthy": sorted(n for n, ok in healthy.items() if not ok),
                "active_rules": decision.active_rules,
            }
        )

    def _observe(
        self,
        table: RoutingTable,
        probes: dict[str, ProbeResult],
        forced: dict[str, bool],
        now: float,
    ) -> None:
        for name in list(self.memory.hosts):
            if name not in table.hosts:
                del self.memory.hosts[name]
        for name, probe in probes.items():
            before = self.memory.hosts.get(name, HostState())
            state, transition = observe(
                before,
                probe.ok,
                probe.error,
                now,
                host=name,
                failure_threshold=self.section.failure_threshold,
                recovery_threshold=self.section.recovery_threshold,
            )
            self.memory.hosts[name] = state
            if transition is None:
                if not probe.ok and before.consecutive_failures == 0 and before.healthy:
                    self.log.info(
                        "probe failed; host still counted healthy",
                        llm_host=name,
                        error=probe.error,
                        failure_threshold=self.section.failure_threshold,
                    )
                continue
            self.m_transitions.labels(name, transition.to).inc()
            if transition.to == "down":
                self.log.warning("host down", llm_host=name, error=transition.error)
            else:
                self.log.info(
                    "host recovered",
                    llm_host=name,
                    outage_s=round(transition.outage_s or 0),
                    last_error=transition.error,
                )
            self._queue(
                host_alert(
                    transition,
                    channel=self.ctx.config.slack.ops_channel,
                    monitor_host=self.ctx.config.fleet.host,
                    role=table.hosts[name].role,
                    forced=forced.get(name),
                )
            )

    def _rules(
        self,
        table: RoutingTable,
        decision: RoutingDecision,
        forced: dict[str, bool],
        now: float,
    ) -> None:
        previous = {r: s for r, s in self.memory.rules_since.items() if r in table.rules}
        # Routing already fails over from a host with no history whose probes fail, but like
        # its host alert, the rule's alert waits until the host crosses the threshold.
        settled = {
            r
            for r in decision.active_rules
            if table.rules[r].source in forced
            or self.memory.hosts.get(table.rules[r].source, HostState()).healthy is not None
        }
        current, changes = rule_changes(previous, settled, now)
        self.memory.rules_since = current
        for change in changes:
            rule = table.rules[change.rule]
            self.log.warning(
                "failover rule activated" if change.activated else "failover rule cleared",
                rule=rule.name,
                source=rule.source,
                forced=rule.source in forced,
            )
            self._queue(
                rule_alert(
                    change,
                    rule,
                    channel=self.ctx.config.slack.ops_channel,
                    monitor_host=self.ctx.config.fleet.host,
                    redirects=decision.destinations(rule),
                    forced=forced.get(rule.source) is False,
                )
            )

    def _report_override(self, override: Override, forced: dict[str, bool], now: float) -> None:
        state = tuple(sorted(forced.items()))
        if forced:
            # Logged every cycle on purpose: a forgotten override hides real outages.
            self.log.warning(
                "override active",
                hosts=dict(forced),
                expires_at=_iso_or_none(override.expires_at(now)),
                file=str(self.section.override_file),
            )
        elif self._override_state:
            self.log.info("override no longer active")
        self._override_state = state
        for host in override.expired(now):
            if host not in self._expired_logged:
                self._expired_logged.add(host)
                self.log.info("override entry expired", llm_host=host)
        self._expired_logged &= set(override.expired(now))

    async def _publish_link(self) -> LinkState | None:
        """Publish (or, with --dry-run, only inspect) the symlink at the legacy path; report
        once per episode what keeps it from being ours."""
        link = self.section.status_link
        if link is None:
            self.memory.errors_since.pop("link", None)
            return None
        if self.ctx.dry_run:
            state = await asyncio.to_thread(inspect_link, link, self.status_path)
            if not state.published:
                self.log.info("dry-run: would publish status link", path=str(link))
            return state
        state = await asyncio.to_thread(publish_link, link, self.status_path)
        if state.error is None:
            self.memory.errors_since.pop("link", None)
            if self._link_error is not None:
                self.log.info("status link published again", path=str(link))
        else:
            since = self.memory.errors_since.setdefault("link", self.ctx.clock())
            if state.error != self._link_error:
                self.log.error("status link not published", path=str(link), error=state.error)
                self._queue(
                    link_error_alert(
                        state.error,
                        link=str(link),
                        target=str(self.status_path),
                        channel=self.ctx.config.slack.ops_channel,
                        monitor_host=self.ctx.config.fleet.host,
                        since=since,
                    )
                )
        self._link_error = state.error
        return state

    # outputs -------------------------------------------------------------------------------
    def _queue(self, message: Message) -> None:
        if all(m.dedup_key != message.dedup_key for m in self.memory.pending_alerts):
            self.memory.pending_alerts.append(message)

    async def _write(self, doc: dict[str, Any]) -> str | None:
        if self.ctx.dry_run:
            self.log.info(
                "dry-run: would write status file",
                path=str(self.section.status_file),
                routing=doc["_routing"],
                hosts={n: doc[n]["healthy"] for n in doc if not n.startswith("_")},
            )
            return None
        try:
            await complete_in_thread(write_status, self.status_path, doc)
        except OSError as exc:
            error = f"cannot write {self.status_path}: {exc.strerror or exc}"
            self.log.error("status file not written", error=error)
            return error
        return None

    async def _save_memory(self) -> str | None:
        if self.ctx.dry_run:
            return None
        try:
            await complete_in_thread(atomic_write_json, self.memory_path, self.memory.to_json())
        except OSError as exc:
            error = f"cannot write {self.memory_path}: {exc.strerror or exc}"
            self.log.error("memory file not written", error=error)
            return error
        return None

    async def _flush_alerts(self) -> bool:
        """Enqueue pending alerts; one that fails stays pending (it is also in the memory file
        just written, so a restart re-enqueues it; the dedup key makes repeats no-ops).
        Returns whether any left the pending list."""
        remaining = []
        slack = self.ctx.config.slack
        for message in self.memory.pending_alerts:
            channel = alert_channel(
                message.channel, ops_channel=slack.ops_channel, ceo_channel=slack.ceo_channel
            )
            if channel != message.channel:
                self.log.warning(
                    "alert names an unconfigured channel; sent to ops",
                    channel=message.channel,
                    dedup_key=message.dedup_key,
                )
                message = dataclasses.replace(message, channel=channel)
            try:
                await self.ctx.notify(message)
            except (StoreError, sqlite3.Error, OSError) as exc:  # outbox locked/unwritable
                self.ctx.metrics.store_error(self.ctx.config.notify.outbox_db.name)
                self.log.warning(
                    "alert not queued yet; retrying next cycle",
                    dedup_key=message.dedup_key,
                    error=f"{type(exc).__name__}: {exc}",
                )
                remaining.append(message)
        handed_over = len(remaining) < len(self.memory.pending_alerts)
        self.memory.pending_alerts = remaining
        return handed_over

    def _update_metrics(
        self,
        table: RoutingTable,
        probes: dict[str, ProbeResult],
        decision: RoutingDecision,
        forced: dict[str, bool],
    ) -> None:
        for name in self._known_hosts - set(table.hosts):
            for metric in (self.m_up, self.m_models, self.m_probe):
                with contextlib.suppress(KeyError):
                    metric.remove(name)
            for to in ("down", "up"):
                with contextlib.suppress(KeyError):
                    self.m_transitions.remove(name, to)
        self._known_hosts = set(table.hosts)
        for name in table.hosts:
            state = self.memory.hosts.get(name, HostState())
            self.m_up.labels(name).set(1 if state.healthy else 0)
            probe = probes.get(name)
            self.m_models.labels(name).set(len(probe.models) if probe and probe.ok else 0)
            if probe is not None:
                self.m_probe.labels(name).observe(probe.duration_s)
            for to in ("down", "up"):
                self.m_transitions.labels(name, to)
        for rule in self._known_rules - set(table.rules):
            with contextlib.suppress(KeyError):
                self.m_failover.remove(rule)
        self._known_rules = set(table.rules)
        for rule in table.rules:
            self.m_failover.labels(rule).set(1 if rule in decision.active_rules else 0)
        self.m_override.set(len(forced))


def _iso_or_none(ts: float | None) -> str | None:
    return format_iso(ts) if ts is not None else None

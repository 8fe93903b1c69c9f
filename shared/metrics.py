"""Per-daemon Prometheus registry: the series every daemon exports, and ``MetricSet``, which
registers a daemon's own metrics from the ``MetricSpec`` list in its manifest (the same list the
dashboards and rules are generated from, so a metric cannot exist in one and not the other).

Each daemon owns one registry (a fresh one per test). No I/O and no HTTP here
(``shared.metrics_server`` serves them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from shared.cycles import CycleOutcome
from shared.manifest import MetricSpec, metric

__all__ = [
    "CYCLE_BUCKETS",
    "NOTIFY_METRICS",
    "PROCESS_STARTED_AT",
    "RUNTIME_METRICS",
    "DaemonMetrics",
    "MetricSet",
]

# When this process started, to within its start-up (`fleet run` imports this module before
# any daemon opens): every daemon in the process exports the same value, a SIGHUP reload keeps
# it, a restart exports a new one, which FleetDaemonCrashLooping counts. Not prometheus-client's
# process_start_time_seconds: that lives on the global registry, and each daemon serves its own.
PROCESS_STARTED_AT = time.time()

# `_created` series double every counter's cardinality and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CYCLE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# Every daemon (DaemonMetrics below).
RUNTIME_METRICS: tuple[MetricSpec, ...] = (
    metric(
        "fleet_build_info",
        "gauge",
        "alai-fleet build running this daemon (always 1)",
        "daemon",
        "version",
    ),
    metric("fleet_cycles_total", "counter", "Daemon cycles by outcome", "daemon", "outcome"),
    MetricSpec(
        "fleet_cycle_duration_seconds",
        "histogram",
        "Wall time of one daemon cycle",
        ("daemon",),
        CYCLE_BUCKETS,
    ),
    metric(
        "fleet_last_success_timestamp_seconds",
        "gauge",
        "Unix time the last cycle succeeded",
        "daemon",
    ),
    metric(
        "fleet_consecutive_failures",
        "gauge",
        "Cycles failed in a row since the last success",
        "daemon",
    ),
    metric(
        "fleet_start_time_seconds",
        "gauge",
        "Unix time the process running this daemon started (a restart changes it)",
        "daemon",
    ),
    metric(
        "fleet_store_errors_total",
        "counter",
        "Database operations given up after bounded retries (locked, unreadable), by file",
        "daemon",
        "db",
    ),
)

# Every daemon running an outbox sender (shared.notify NotifyMetrics).
NOTIFY_METRICS: tuple[MetricSpec, ...] = (
    metric("fleet_notifications_pending", "gauge", "Outbox rows waiting to be delivered"),
    metric("fleet_notifications_sent_total", "counter", "Messages delivered by sink", "sink"),
    metric(
        "fleet_notifications_failed_total",
        "counter",
        "Failed delivery attempts by sink and reason",
        "sink",
        "reason",
    ),
    metric(
        "fleet_notifications_collapsed_total",
        "counter",
        "Summaries made from collapsed alerts",
        "sink",
    ),
)


class MetricSet:
    """The metrics named by ``specs``, registered on ``registry``; look them up by the name
    they have on /metrics (``counter("fleet_claims_released_total")``)."""

    def __init__(self, specs: Iterable[MetricSpec], registry: CollectorRegistry) -> None:
        self.registry = registry
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        for spec in specs:
            self._register(spec)

    def _register(self, spec: MetricSpec) -> None:
        labels = list(spec.labels)
        if spec.kind == "gauge":
            self._gauges[spec.name] = Gauge(
                spec.client_name, spec.help, labels, registry=self.registry
            )
        elif spec.kind == "counter":
            self._counters[spec.name] = Counter(
                spec.client_name, spec.help, labels, registry=self.registry
            )
        elif spec.buckets is not None:
            self._histograms[spec.name] = Histogram(
                spec.client_name, spec.help, labels, buckets=spec.buckets, registry=self.registry
            )
        else:
            self._histograms[spec.name] = Histogram(
                spec.client_name, spec.help, labels, registry=self.registry
            )

    def gauge(self, name: str) -> Gauge:
        return self._gauges[name]

    def counter(self, name: str) -> Counter:
        return self._counters[name]

    def histogram(self, name: str) -> Histogram:
        return self._histograms[name]


class DaemonMetrics:
    """The series every daemon exports, on a registry the daemon adds its own to. No series
    names the machine: Prometheus adds ``host`` from the scrape target."""

    def __init__(
        self,
        daemon: str,
        version: str,
        registry: CollectorRegistry | None = None,
        *,
        started_at: float = PROCESS_STARTED_AT,
    ) -> None:
        self.daemon = daemon
        self.registry = registry if registry is not None else CollectorRegistry()
        common = MetricSet(RUNTIME_METRICS, self.registry)
        self.build_info = common.gauge("fleet_build_info")
        self.cycles = common.counter("fleet_cycles_total")
        self.cycle_duration = common.histogram("fleet_cycle_duration_seconds")
        self.last_success = common.gauge("fleet_last_success_timestamp_seconds")
        self.consecutive_failures = common.gauge("fleet_consecutive_failures")
        common.gauge("fleet_start_time_seconds").labels(daemon).set(started_at)
        self.store_errors = common.counter("fleet_store_errors_total")
        self.build_info.labels(daemon, version).set(1)
        for outcome in CycleOutcome:
            self.cycles.labels(daemon, outcome.value)
        self.cycle_duration.labels(daemon)
        self.last_success.labels(daemon)
        self.consecutive_failures.labels(daemon).set(0)

    def own(self, specs: Iterable[MetricSpec]) -> MetricSet:
        """Register a daemon's own metrics (its manifest's list) on this registry."""
        return MetricSet(specs, self.registry)

    def record_cycle(self, outcome: CycleOutcome | str, duration_s: float, now: float) -> None:
        outcome = CycleOutcome(outcome)
        self.cycles.labels(self.daemon, outcome.value).inc()
        self.cycle_duration.labels(self.daemon).observe(duration_s)
        if outcome is CycleOutcome.OK:
            self.last_success.labels(self.daemon).set(now)

    def store_error(self, db: str) -> None:
        """Count one database operation given up on (``db``: its file name, "" unknown)."""
        self.store_errors.labels(self.daemon, db or "unknown").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

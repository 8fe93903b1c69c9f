"""The Prometheus/Grafana pack, generated from one catalogue of the metrics each daemon exports:
prometheus.yml (one job per daemon, one target per host), the alert rules, and the Grafana
provisioning files and dashboard. A metric renamed in a daemon but not here breaks a test, not
a dashboard. Pure rendering to text; this module must never scrape, start or write anything.

Keep ``DAEMON_METRICS`` in sync with each daemon's ``Gauge``/``Counter``/``Histogram`` names
(names as they appear on /metrics: counters with ``_total``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemons import REGISTRY, DaemonSpec
from shared.config import FleetConfig

__all__ = [
    "DAEMON_METRICS",
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "EXAMPLE_HOSTS",
    "NOTIFY_METRICS",
    "RUNTIME_METRICS",
    "AlertRule",
    "ExportedMetric",
    "HostTarget",
    "alert_rules",
    "claims_alert_after_s",
    "dashboard_exprs",
    "exported_series",
    "job_name",
    "metric_names_in",
    "metrics_for",
    "overview_dashboard",
    "recording_rules",
    "render_examples",
    "render_grafana",
    "render_prometheus_config",
    "render_rules",
    "to_yaml",
    "unknown_metrics",
]

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class ExportedMetric:
    """One metric family as it appears on /metrics (counters already end in ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    def series(self) -> tuple[str, ...]:
        """The sample names Prometheus stores for this family."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def _m(name: str, kind: Kind, help_: str, *labels: str) -> ExportedMetric:
    return ExportedMetric(name, kind, help_, tuple(labels))


# Every daemon (shared/metrics.py DaemonMetrics).
RUNTIME_METRICS: tuple[ExportedMetric, ...] = (
    _m("fleet_build_info", "gauge", "build running the daemon (1)", "daemon", "version", "host"),
    _m("fleet_cycles_total", "counter", "cycles by outcome", "daemon", "outcome"),
    _m("fleet_cycle_duration_seconds", "histogram", "wall time of one cycle", "daemon"),
    _m("fleet_last_success_timestamp_seconds", "gauge", "last successful cycle", "daemon"),
    _m("fleet_consecutive_failures", "gauge", "cycles failed in a row", "daemon"),
)

# Every daemon running an outbox sender (shared/notify.py NotifyMetrics).
NOTIFY_METRICS: tuple[ExportedMetric, ...] = (
    _m("fleet_notifications_pending", "gauge", "outbox rows waiting"),
    _m("fleet_notifications_sent_total", "counter", "messages delivered", "sink"),
    _m("fleet_notifications_failed_total", "counter", "failed deliveries", "sink", "reason"),
    _m("fleet_notifications_collapsed_total", "counter", "summaries of collapsed alerts", "sink"),
)

# Each daemon's own metrics, as its issue names them. The claim-sweeper list is checked against
# a real scrape; the others' helpers keep theirs in sync with their code.
DAEMON_METRICS: dict[str, tuple[ExportedMetric, ...]] = {
    "email-reactor": (
        _m("fleet_email_decisions_total", "counter", "emails decided", "action", "source"),
        _m("fleet_email_llm_requests_total", "counter", "LLM requests", "outcome"),
        _m("fleet_email_llm_duration_seconds", "histogram", "LLM request time"),
        _m("fleet_email_backlog", "gauge", "undecided emails"),
        _m("fleet_email_oldest_undecided_age_seconds", "gauge", "oldest undecided email age"),
        _m("fleet_email_paperless_errors_total", "counter", "Paperless lookup errors"),
    ),
    "ollama-health": (
        _m("fleet_ollama_up", "gauge", "Ollama host healthy (1) or not (0)", "host"),
        _m("fleet_ollama_probe_duration_seconds", "histogram", "probe time", "host"),
        _m("fleet_ollama_models", "gauge", "models the host serves", "host"),
        _m("fleet_ollama_transitions_total", "counter", "health transitions", "host", "to"),
        _m("fleet_ollama_failover_active", "gauge", "failover rule in effect", "rule"),
        _m("fleet_ollama_override_active", "gauge", "manual override file in effect"),
    ),
    "restore-loop": (
        _m("fleet_restore_lag_seconds", "gauge", "standby copy lag", "db", "tier"),
        _m("fleet_restore_local_txid", "gauge", "standby copy TXID", "db"),
        _m("fleet_restore_replica_txid", "gauge", "replica TXID", "db"),
        _m("fleet_restore_follower_restarts_total", "counter", "follower restarts", "db", "reason"),
        _m("fleet_restore_last_success_timestamp_seconds", "gauge", "last good restore", "db"),
        _m("fleet_restore_failures_total", "counter", "restore failures", "db", "reason"),
        _m("fleet_restore_rpo_target_seconds", "gauge", "RPO target of a tier", "tier"),
        _m("fleet_restore_promoted", "gauge", "host promoted, followers stopped for good"),
        _m("fleet_restore_followers", "gauge", "follower children running"),
        _m(
            "fleet_restore_blob_list_requests_per_day",
            "gauge",
            "estimated blob LIST requests a day",
        ),
    ),
    "heartbeat": (
        _m("fleet_heartbeat_peer_up", "gauge", "peer /health answering", "peer"),
        _m(
            "fleet_heartbeat_peer_consecutive_failures",
            "gauge",
            "failed peer probes in a row",
            "peer",
        ),
        _m("fleet_heartbeat_pings_total", "counter", "dead-man pings", "url_hash", "outcome"),
        _m("fleet_heartbeat_fleet_degraded", "gauge", "a local daemon is unhealthy"),
        _m("fleet_heartbeat_two_primaries", "gauge", "peer and this host both primary", "peer"),
        _m("fleet_heartbeat_endpoint_up", "gauge", "/health endpoint bound and serving"),
    ),
    "blueprint-watchdog": (
        _m("fleet_blueprint_files", "gauge", "files scanned", "type"),
        _m("fleet_blueprint_noncompliant", "gauge", "non-compliant files", "type", "reason"),
        _m("fleet_blueprint_scan_duration_seconds", "gauge", "duration of the last scan"),
        _m("fleet_blueprint_scan_problems", "gauge", "directories the last scan could not read"),
        _m("fleet_zakon_registry_ok", "gauge", "ZAKON registry valid (1) or not (0)"),
    ),
    "claim-sweeper": (
        _m("fleet_claims_held", "gauge", "live leases"),
        _m("fleet_claims_expired", "gauge", "leases past expiry"),
        _m("fleet_claims_released_total", "counter", "expired leases released"),
        _m("fleet_claims_oldest_expired_age_seconds", "gauge", "oldest expired lease age"),
    ),
}

_METRIC_RE = re.compile(r"\bfleet_[a-z0-9_]+\b")


def metrics_for(daemon: str) -> tuple[ExportedMetric, ...]:
    """Everything ``daemon`` exports when it runs as a service."""
    return (*RUNTIME_METRICS, *NOTIFY_METRICS, *DAEMON_METRICS.get(daemon, ()))


def exported_series(daemons: Iterable[str] | None = None) -> set[str]:
    """Sample names the catalogue says exist (histograms expanded)."""
    names = list(daemons) if daemons is not None else list(DAEMON_METRICS)
    return {s for d in names for m in metrics_for(d) for s in m.series()}


def metric_names_in(expr: str) -> set[str]:
    """The fleet_ series a PromQL expression reads (recording-rule names use ':' and are
    not matched)."""
    return {m for m in _METRIC_RE.findall(expr) if ":" not in m}


def unknown_metrics(exprs: Iterable[str], daemons: Iterable[str] | None = None) -> set[str]:
    """fleet_ series the expressions read that no daemon in the catalogue exports."""
    known = exported_series(daemons)
    return {name for expr in exprs for name in metric_names_in(expr)} - known


# ---------------------------------------------------------------------------------------------
# YAML (a small emitter: prometheus and grafana accept any YAML; strings are JSON-quoted
# unless plainly safe, multi-line strings are block scalars)

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            head = f"{pad}{_scalar(key)}:"
            lines += _yaml_keyed(head, item, indent)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, Mapping) and item:
                inner = _yaml_lines(item, indent + 2)
                inner[0] = f"{pad}- " + inner[0][indent + 2 :]
                lines += inner
            else:
                lines += _yaml_keyed(f"{pad}-", item, indent)
    else:
        lines.append(pad + _scalar(value))
    return lines


def _yaml_keyed(head: str, item: Any, indent: int) -> list[str]:
    if isinstance(item, Mapping):
        return [f"{head} {{}}"] if not item else [head, *_yaml_lines(item, indent + 2)]
    if isinstance(item, list | tuple):
        return [f"{head} []"] if not item else [head, *_yaml_lines(item, indent + 2)]
    if isinstance(item, str) and "\n" in item:
        body = item.rstrip("\n").split("\n")
        return [f"{head} |-", *((" " * (indent + 2) + line).rstrip() for line in body)]
    return [f"{head} {_scalar(item)}"]


def to_yaml(value: Any) -> str:
    return "\n".join(_yaml_lines(value, 0)) + "\n"


# ---------------------------------------------------------------------------------------------
# prometheus.yml


@dataclass(frozen=True)
class HostTarget:
    """A host to scrape: its name (the ``host`` label), the address its daemons' metrics
    listen on, and its role (None: every enabled daemon is expected there)."""

    name: str
    address: str
    role: str | None = None


def _daemon_class(spec: DaemonSpec) -> Any:
    import importlib

    return getattr(importlib.import_module(spec.module), spec.class_name)


def job_name(daemon: str) -> str:
    return f"fleet-{daemon}"


def render_prometheus_config(
    config: FleetConfig,
    hosts: Sequence[HostTarget],
    *,
    scrape_interval: str = "15s",
    rule_files: Sequence[str] = ("rules/fleet.rules.yml",),
    registry: Mapping[str, DaemonSpec] = REGISTRY,
) -> str:
    """One job per enabled daemon with a metrics port; one target per host that runs it (a
    host with a role skips daemons that refuse that role, e.g. restore-loop on the primary)."""
    jobs: list[dict[str, Any]] = []
    for spec in registry.values():
        section = config.daemon_section(spec.section)
        if not section.enabled or section.metrics_port == 0:
            continue
        cls = _daemon_class(spec)
        statics = [
            {
                "targets": [f"{host.address}:{section.metrics_port}"],
                "labels": {"host": host.name, "daemon": spec.name},
            }
            for host in hosts
            if host.role is None or not cls.refuse_reason(section, host.role)
        ]
        if statics:
            jobs.append(
                {
                    "job_name": job_name(spec.name),
                    # the daemons' own labels (daemon, host of an Ollama server) win
                    "honor_labels": True,
                    "metrics_path": "/metrics",
                    "static_configs": statics,
                }
            )
    doc = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": list(rule_files),
        "scrape_configs": jobs,
    }
    header = (
        "# Generated by `fleet observability prometheus`; regenerate instead of editing.\n"
        "# Daemons bind [fleet] bind (127.0.0.1 by default): scraping another host needs its\n"
        "# bind set to an address this Prometheus reaches (e.g. its Tailscale IP).\n"
    )
    return header + to_yaml(doc)


# ---------------------------------------------------------------------------------------------
# Alert rules


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str
    severity: Literal["critical", "warning"]
    summary: str
    description: str
    runbook: str  # path under docs/, may use {{ $labels.daemon }}
    daemons: tuple[str, ...] = ()  # whose metrics it reads (empty: every daemon's)

    @property
    def anchor(self) -> str:
        return self.name.lower()

    def to_rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook,
                "doc_url": f"docs/alerts.md#{self.anchor}",
            },
        }


_BY = "job, instance, host, daemon"


def claims_alert_after_s(config: FleetConfig) -> float:
    """The sweeper already posts #ops per lease after alert_after_s; the page is for a lease
    stuck much longer (a dead session holding work): an hour, or alert_after_s if longer."""
    return max(3600.0, config.claim_sweeper.alert_after_s)


NOTIFICATIONS_BACKLOG = 50


def alert_rules(config: FleetConfig) -> list[AlertRule]:
    claims_s = claims_alert_after_s(config)
    return [
        AlertRule(
            "FleetDaemonDown",
            'up{job=~"fleet-.+"} == 0',
            "2m",
            "critical",
            "{{ $labels.daemon }} on {{ $labels.host }} is down",
            "Prometheus cannot scrape {{ $labels.instance }} for 2 minutes: the process is not "
            "running, is restarting in a loop, or refused to start (exit 78).",
            "docs/runbooks/{{ $labels.daemon }}.md",
        ),
        AlertRule(
            "FleetCycleStale",
            "(time() - fleet_last_success_timestamp_seconds)\n"
            "  > on (daemon) group_left () (3 * fleet:expected_interval_seconds)\n"
            "and fleet_last_success_timestamp_seconds > 0",
            "1m",
            "warning",
            "{{ $labels.daemon }} on {{ $labels.host }}: no successful cycle for 3 intervals",
            "The daemon runs (it is scraped) but its last successful cycle is "
            "{{ $value | humanizeDuration }} old, more than 3 expected intervals.",
            "docs/runbooks/{{ $labels.daemon }}.md",
        ),
        AlertRule(
            "FleetCyclesFailing",
            f'sum by ({_BY}) (increase(fleet_cycles_total{{outcome!="ok"}}[15m])) > 0\n'
            f'unless sum by ({_BY}) (increase(fleet_cycles_total{{outcome="ok"}}[15m])) > 0',
            "5m",
            "warning",
            "{{ $labels.daemon }} on {{ $labels.host }}: every cycle in 15 minutes failed",
            "Cycles are attempted and fail or time out (fleet_cycles_total by outcome); the "
            "daemon retries with backoff and logs `recovered` when it works again.",
            "docs/runbooks/{{ $labels.daemon }}.md",
        ),
        AlertRule(
            "FleetOllamaHostDown",
            "fleet_ollama_up == 0",
            "2m",
            "critical",
            "Ollama on {{ $labels.host }} is down",
            "ollama-health has marked the Ollama server unhealthy for 2 minutes; tier routing "
            "fails over per the failover rules.",
            "docs/runbooks/ollama-health.md",
            ("ollama-health",),
        ),
        AlertRule(
            "FleetOllamaFailoverActive",
            "fleet_ollama_failover_active > 0",
            "5m",
            "warning",
            "Ollama failover rule {{ $labels.rule }} is active",
            "Tiers are being redirected to the other host (or to Claude) because of a down "
            "host or a manual override.",
            "docs/runbooks/ollama-health.md",
            ("ollama-health",),
        ),
        AlertRule(
            "FleetRestoreLagAboveRPO",
            # the standby exports each tier's target from its own [restore_loop] rpo_target_s
            "fleet_restore_lag_seconds\n"
            "  > on (job, instance, tier) group_left () fleet_restore_rpo_target_seconds",
            "1m",
            "critical",
            "{{ $labels.db }} ({{ $labels.tier }}) on {{ $labels.host }} lags beyond its RPO",
            "The standby copy is {{ $value | humanizeDuration }} behind the primary, more than "
            "the tier's RPO target: a failover now would lose more than promised.",
            "docs/runbooks/restore-loop.md",
            ("restore-loop",),
        ),
        AlertRule(
            "FleetNotificationsBacklog",
            f"max by (host) (fleet_notifications_pending) > {NOTIFICATIONS_BACKLOG}",
            "15m",
            "warning",
            "{{ $value }} notifications waiting in the outbox on {{ $labels.host }}",
            "Slack or HiveMind deliveries are failing or rate-limited (or a silence is "
            "holding alerts); nothing is lost, messages wait in the outbox.",
            "docs/notifications.md",
        ),
        AlertRule(
            "FleetClaimsExpired",
            f"fleet_claims_expired > 0 and fleet_claims_oldest_expired_age_seconds > {claims_s:g}",
            "5m",
            "warning",
            "{{ $labels.host }}: a Mission Control lease expired over "
            f"{claims_s / 60:g} minutes ago",
            "A task is held by a session that stopped extending its lease; nobody else may "
            "take it until it is released.",
            "docs/runbooks/claim-sweeper.md",
            ("claim-sweeper",),
        ),
        AlertRule(
            "FleetBlueprintNoncompliant",
            "sum by (job, instance, host, type, reason) (fleet_blueprint_noncompliant) > 0",
            "10m",
            "warning",
            "{{ $value }} {{ $labels.type }} files non-compliant ({{ $labels.reason }})",
            "The nightly blueprint/ZAKON scan found files that fail the schema or liveness checks.",
            "docs/runbooks/blueprint-watchdog.md",
            ("blueprint-watchdog",),
        ),
        AlertRule(
            "FleetZakonRegistryBroken",
            # 0 also means "no registry", which only matters where ZAKON files exist
            "fleet_zakon_registry_ok == 0\n"
            "and on (job, instance)\n"
            '  sum by (job, instance) (fleet_blueprint_files{type="zakon"}) > 0',
            "10m",
            "critical",
            "ZAKON registry on {{ $labels.host }} is missing or invalid",
            "The registry is absent or corrupt while ZAKON files exist: the fail-closed gate "
            "blocks every ZAKON write until it is fixed.",
            "docs/runbooks/blueprint-watchdog.md",
            ("blueprint-watchdog",),
        ),
        AlertRule(
            "FleetTwoPrimaries",
            "fleet_heartbeat_two_primaries > 0",
            "1m",
            "critical",
            "{{ $labels.host }} and {{ $labels.peer }} both report role primary",
            "Both hosts run the daemons that write replicated databases: writes on either can "
            "be lost at the next restore or failover.",
            "docs/runbooks/heartbeat.md",
            ("heartbeat",),
        ),
        AlertRule(
            "FleetHeartbeatPeerDown",
            "fleet_heartbeat_peer_up == 0",
            "2m",
            "critical",
            "{{ $labels.host }} cannot reach peer {{ $labels.peer }}",
            "The peer's /health has failed for 2 minutes: the host, its network or its "
            "heartbeat daemon is down.",
            "docs/runbooks/heartbeat.md",
            ("heartbeat",),
        ),
    ]


def recording_rules(
    config: FleetConfig, registry: Mapping[str, DaemonSpec] = REGISTRY
) -> list[dict[str, Any]]:
    """Constants the alerts compare against: each daemon's expected interval, from the config
    the rules are generated from (the daemons do not export it)."""
    rules: list[dict[str, Any]] = []
    for spec in registry.values():
        interval = config.daemon_section(spec.section).interval_s
        rules.append(
            {
                "record": "fleet:expected_interval_seconds",
                "expr": f"vector({interval:g})",
                "labels": {"daemon": spec.name},
            }
        )
    return rules


def render_rules(config: FleetConfig, registry: Mapping[str, DaemonSpec] = REGISTRY) -> str:
    doc = {
        "groups": [
            {"name": "alai-fleet-constants", "rules": recording_rules(config, registry)},
            {"name": "alai-fleet", "rules": [a.to_rule() for a in alert_rules(config)]},
        ]
    }
    header = (
        "# Generated by `fleet observability prometheus` from the config (daemon intervals,\n"
        "# claim alert age); regenerate instead of editing. What each alert means:\n"
        "# docs/alerts.md.\n"
    )
    return header + to_yaml(doc)


# ---------------------------------------------------------------------------------------------
# Grafana

DATASOURCE_UID = "alai-fleet-prometheus"
DASHBOARD_UID = "alai-fleet-overview"
_DS = {"type": "prometheus", "uid": "${datasource}"}
_HOST = 'host=~"$host"'


@dataclass
class _Layout:
    """Places panels left to right, 24 columns wide, rows stacked."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    x: int = 0
    y: int = 0
    row_h: int = 0
    next_id: int = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int = 8, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x, self.row_h = 0, 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": _DS, "expr": expr, "legendFormat": legend, "refId": ref}


def _timeseries(
    title: str, targets: list[dict[str, Any]], unit: str = "short", description: str = ""
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": _DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def _stat(title: str, target: dict[str, Any], unit: str, mappings: list[Any]) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "datasource": _DS,
        "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
        "targets": [target],
    }


def _legend(labels: Sequence[str], with_host: bool = True) -> str:
    parts = ["{{host}}"] if with_host else []
    parts += [f"{{{{{label}}}}}" for label in labels if label != "host"]
    return " ".join(parts) or "{{host}}"


def _metric_panel(metric: ExportedMetric, daemon: str) -> dict[str, Any]:
    """The obvious graph for a metric: gauges as they are, counters as rates, histograms as
    p50/p95."""
    sel = f"{metric.name}{{{_HOST}}}"
    labels = [lb for lb in metric.labels if lb != "daemon"]
    if metric.kind == "counter":
        by = ", ".join(["host", *[lb for lb in labels if lb != "host"]])
        expr = f"sum by ({by}) (rate({sel}[$__rate_interval]))"
        return _timeseries(metric.name, [_target(expr, _legend(labels))], "ops", metric.help)
    if metric.kind == "histogram":
        by = ", ".join(["le", "host", *[lb for lb in labels if lb != "host"]])
        bucket = f"{metric.name}_bucket{{{_HOST}}}"
        targets = [
            _target(
                f"histogram_quantile({q}, sum by ({by}) (rate({bucket}[$__rate_interval])))",
                f"p{round(q * 100)} " + _legend(labels),
                ref,
            )
            for q, ref in ((0.5, "A"), (0.95, "B"))
        ]
        return _timeseries(metric.name, targets, "s", metric.help)
    unit = "s" if metric.name.endswith("_seconds") else "short"
    return _timeseries(metric.name, [_target(sel, _legend(labels))], unit, metric.help)


def overview_dashboard(daemons: Sequence[str] | None = None) -> dict[str, Any]:
    """Fleet health first (every daemon's up, last success, cycles, durations, outbox), then
    one row per daemon with its own metrics."""
    names = list(daemons) if daemons is not None else list(REGISTRY)
    lay = _Layout()
    lay.row("Fleet health")
    up_map = [
        {"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}}},
        {"type": "value", "options": {"1": {"text": "up", "color": "green"}}},
    ]
    lay.add(
        _stat(
            "Daemon up",
            _target(f'up{{job=~"fleet-.+", {_HOST}}}', "{{host}} {{daemon}}"),
            "none",
            up_map,
        ),
        w=12,
    )
    lay.add(
        _stat(
            "Since last successful cycle",
            _target(
                f"time() - fleet_last_success_timestamp_seconds{{{_HOST}}} "
                f"and fleet_last_success_timestamp_seconds{{{_HOST}}} > 0",
                "{{host}} {{daemon}}",
            ),
            "s",
            [],
        ),
        w=12,
    )
    lay.add(
        _timeseries(
            "Cycles by outcome",
            [
                _target(
                    f"sum by (host, daemon, outcome) "
                    f"(rate(fleet_cycles_total{{{_HOST}}}[$__rate_interval]))",
                    "{{host}} {{daemon}} {{outcome}}",
                )
            ],
            "ops",
        )
    )
    lay.add(
        _timeseries(
            "Cycle duration p95",
            [
                _target(
                    "histogram_quantile(0.95, sum by (le, host, daemon) "
                    f"(rate(fleet_cycle_duration_seconds_bucket{{{_HOST}}}[$__rate_interval])))",
                    "{{host}} {{daemon}}",
                )
            ],
            "s",
        )
    )
    lay.add(
        _timeseries(
            "Consecutive failed cycles",
            [_target(f"fleet_consecutive_failures{{{_HOST}}}", "{{host}} {{daemon}}")],
        )
    )
    lay.add(
        _timeseries(
            "Outbox: pending",
            [
                _target(
                    f"max by (host) (fleet_notifications_pending{{{_HOST}}})",
                    "{{host}}",
                )
            ],
        )
    )
    lay.add(
        _timeseries(
            "Outbox: sent / failed",
            [
                _target(
                    "sum by (host, sink) "
                    f"(rate(fleet_notifications_sent_total{{{_HOST}}}[$__rate_interval]))",
                    "{{host}} sent {{sink}}",
                    "A",
                ),
                _target(
                    "sum by (host, sink, reason) "
                    f"(rate(fleet_notifications_failed_total{{{_HOST}}}[$__rate_interval]))",
                    "{{host}} failed {{sink}} {{reason}}",
                    "B",
                ),
            ],
            "ops",
        )
    )
    lay.add(
        {
            "type": "table",
            "title": "Versions",
            "datasource": _DS,
            "targets": [
                {
                    **_target(f"fleet_build_info{{{_HOST}}}", ""),
                    "format": "table",
                    "instant": True,
                }
            ],
        }
    )
    for daemon in names:
        own = DAEMON_METRICS.get(daemon, ())
        if not own:
            continue
        lay.row(daemon)
        for metric in own:
            lay.add(_metric_panel(metric, daemon))
    return {
        "uid": DASHBOARD_UID,
        "title": "alai-fleet overview",
        "tags": ["alai-fleet"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Prometheus",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "type": "query",
                    "name": "host",
                    "label": "host",
                    "datasource": _DS,
                    "query": {"query": "label_values(fleet_build_info, host)", "refId": "host"},
                    "definition": "label_values(fleet_build_info, host)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "current": {},
                },
            ]
        },
        "annotations": {"list": []},
        "panels": lay.panels,
    }


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression a dashboard runs (panel targets and template queries)."""
    exprs: list[str] = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                exprs.append(str(target["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, Mapping) and query.get("query"):
            exprs.append(str(query["query"]))
    return exprs


def render_grafana() -> dict[str, str]:
    """config/grafana/: relative path -> content."""
    datasource = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "alai-fleet Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": "http://127.0.0.1:9090",
                "isDefault": False,
                "editable": False,
            }
        ],
    }
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "alai-fleet",
                "folder": "alai-fleet",
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": "/var/lib/grafana/dashboards/alai-fleet"},
            }
        ],
    }
    header = "# Generated by `fleet observability grafana`; regenerate instead of editing.\n"
    return {
        "provisioning/datasources/alai-fleet.yml": header + to_yaml(datasource),
        "provisioning/dashboards/alai-fleet.yml": header + to_yaml(provider),
        "dashboards/fleet-overview.json": json.dumps(overview_dashboard(), indent=2) + "\n",
    }


EXAMPLE_HOSTS: tuple[HostTarget, ...] = (
    HostTarget(name="anvil", address="anvil", role="primary"),
    HostTarget(name="forge", address="forge", role="standby"),
)


def render_examples(example_config: Path) -> dict[str, str]:
    """Repository-relative path -> content for the committed Prometheus/Grafana files,
    rendered from the example config as the example hosts would load it."""
    from shared.config import load_config
    from shared.units import pinned_environment

    with pinned_environment(Path("/home/alai")):
        config = load_config(example_config)
    files = {
        "config/prometheus/prometheus.yml": render_prometheus_config(config, EXAMPLE_HOSTS),
        "config/prometheus/rules/fleet.rules.yml": render_rules(config),
    }
    files.update({f"config/grafana/{rel}": text for rel, text in render_grafana().items()})
    return files

"""The Grafana side of the pack: the "alai-fleet overview" dashboard (fleet health first, then
one row per daemon with a panel for each metric its manifest lists) and the provisioning files
that point Grafana at it. The ``$host`` variable lists the machines ``up`` knows (the scrape
target's ``host``: no daemon exports one); colours follow each daemon's interval and alerts
from the config (``panels``). Pure rendering from the config and manifests given; never talks
to Grafana.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.config import FleetConfig
from shared.manifest import DaemonManifest
from shared.observability.panels import (
    DS,
    HOST,
    WARN,
    age_stat,
    alert_levels,
    metric_panel,
    state_stat,
    target,
    thresholds,
    timeseries,
)
from shared.observability.rules import CRASH_LOOP_RESTARTS, NOTIFICATIONS_BACKLOG
from shared.observability.yamldoc import yaml_file

__all__ = [
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "HOST_VALUES",
    "dashboard_exprs",
    "overview_dashboard",
    "render_grafana",
]

DATASOURCE_UID = "alai-fleet-prometheus"
DASHBOARD_UID = "alai-fleet-overview"
#: the host picker's query: the machines with a fleet scrape target, up or down
HOST_VALUES = 'label_values(up{job=~"fleet-.+"}, host)'
_DAEMON = "{{host}} {{daemon}}"


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


def _fleet_health(lay: _Layout, config: FleetConfig, manifests: Sequence[DaemonManifest]) -> None:
    """Every daemon's up and last success (one tile each, coloured by its own interval), then
    cycles, durations, failures, restarts and the outbox."""
    lay.row("Fleet health")
    lay.add(
        state_stat(
            "Daemons up",
            f'up{{job=~"fleet-.+", {HOST}}}',
            _DAEMON,
            good="up",
            bad="DOWN",
            description="Prometheus scraped the daemon's /metrics (0: not running or not "
            "reachable; FleetDaemonDown after 2 minutes)",
        ),
        w=24,
        h=5,
    )
    for manifest in manifests:
        interval = config.daemon_section(manifest.section_name).interval_s
        lay.add(
            age_stat(
                f"{manifest.name} last success: time ago",
                "fleet_last_success_timestamp_seconds",
                f'daemon="{manifest.name}", {HOST}',
                "{{host}}",
                interval,
                description=f"Time since the last successful cycle; expected every "
                f"{interval:g} s (yellow: late, red: 3 intervals, FleetCycleStale)",
            ),
            w=4,
            h=5,
        )
    lay.add(
        timeseries(
            "Cycles by outcome",
            [
                target(
                    "sum by (host, daemon, outcome) "
                    f"(rate(fleet_cycles_total{{{HOST}}}[$__rate_interval]))",
                    "{{host}} {{daemon}} {{outcome}}",
                )
            ],
            unit="ops",
        )
    )
    lay.add(
        timeseries(
            "Cycle duration p95",
            [
                target(
                    "histogram_quantile(0.95, sum by (le, host, daemon) "
                    f"(rate(fleet_cycle_duration_seconds_bucket{{{HOST}}}[$__rate_interval])))",
                    _DAEMON,
                )
            ],
            unit="s",
        )
    )
    lay.add(
        timeseries(
            "Consecutive failed cycles",
            [target(f"fleet_consecutive_failures{{{HOST}}}", _DAEMON)],
        )
    )
    lay.add(
        timeseries(
            "Restarts in the last 15 minutes",
            [target(f"changes(fleet_start_time_seconds{{{HOST}}}[15m])", _DAEMON)],
            description="More than this line: FleetDaemonCrashLooping",
            level=(CRASH_LOOP_RESTARTS, WARN),
        )
    )
    lay.add(
        timeseries(
            "Databases given up on (locked, unreadable)",
            [
                target(
                    "sum by (host, daemon, db) "
                    f"(rate(fleet_store_errors_total{{{HOST}}}[$__rate_interval]))",
                    "{{host}} {{daemon}} {{db}}",
                )
            ],
            unit="ops",
            description="Database operations given up after bounded retries (locked, "
            "unreadable), by file",
        )
    )
    lay.add(
        timeseries(
            "Outbox: pending",
            [target(f"max by (host) (fleet_notifications_pending{{{HOST}}})", "{{host}}")],
            description="Messages waiting in the host's outbox; above the line for 15 minutes: "
            "FleetNotificationsBacklog",
            level=(NOTIFICATIONS_BACKLOG, WARN),
        )
    )
    lay.add(
        timeseries(
            "Outbox: sent / failed",
            [
                target(
                    "sum by (host, sink) "
                    f"(rate(fleet_notifications_sent_total{{{HOST}}}[$__rate_interval]))",
                    "{{host}} sent {{sink}}",
                    "A",
                ),
                target(
                    "sum by (host, sink, reason) "
                    f"(rate(fleet_notifications_failed_total{{{HOST}}}[$__rate_interval]))",
                    "{{host}} failed {{sink}} {{reason}}",
                    "B",
                ),
            ],
            unit="ops",
        )
    )
    lay.add(
        {
            "type": "table",
            "title": "Versions",
            "description": "The alai-fleet version each daemon runs",
            "datasource": DS,
            "fieldConfig": {"defaults": {"thresholds": thresholds()}, "overrides": []},
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True, "__name__": True},
                    },
                }
            ],
            "targets": [
                {
                    **target(f"fleet_build_info{{{HOST}}}", ""),
                    "format": "table",
                    "instant": True,
                }
            ],
        }
    )


def overview_dashboard(config: FleetConfig, manifests: Sequence[DaemonManifest]) -> dict[str, Any]:
    """Fleet health first, then one row per daemon (in manifest order) with its own metrics,
    their colours and alert levels from ``config`` (intervals, the alerts' thresholds)."""
    lay = _Layout()
    _fleet_health(lay, config, manifests)
    for manifest in manifests:
        if not manifest.metrics:
            continue
        section = config.daemon_section(manifest.section_name)
        levels = alert_levels(manifest.alerts(section))
        lay.row(manifest.name)
        for spec in manifest.metrics:
            lay.add(metric_panel(spec, interval_s=section.interval_s, levels=levels))
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
                    "label": "Host",
                    "description": "Machines with a fleet scrape target (the host label of up)",
                    "datasource": DS,
                    "query": {"query": HOST_VALUES, "refId": "host"},
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "sort": 1,
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
        for query in panel.get("targets", []):
            if query.get("expr"):
                exprs.append(str(query["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, Mapping) and query.get("query"):
            exprs.append(str(query["query"]))
    return exprs


def render_grafana(config: FleetConfig, manifests: Sequence[DaemonManifest]) -> dict[str, str]:
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
    dashboard = overview_dashboard(config, manifests)
    return {
        "provisioning/datasources/alai-fleet.yml": yaml_file(header, datasource),
        "provisioning/dashboards/alai-fleet.yml": yaml_file(header, provider),
        "dashboards/fleet-overview.json": json.dumps(dashboard, indent=2) + "\n",
    }

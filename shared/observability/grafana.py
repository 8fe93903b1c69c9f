"""The Grafana side of the pack: the "alai-fleet overview" dashboard (fleet health first, then
one row per daemon with a panel for each metric its manifest lists) and the provisioning files
that point Grafana at it. Pure rendering from the manifests given; never talks to Grafana.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.manifest import DaemonManifest, MetricSpec
from shared.observability.yamldoc import yaml_file

__all__ = [
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "dashboard_exprs",
    "overview_dashboard",
    "render_grafana",
]

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


def _metric_panel(metric: MetricSpec) -> dict[str, Any]:
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


def overview_dashboard(manifests: Sequence[DaemonManifest]) -> dict[str, Any]:
    """Fleet health first (every daemon's up, last success, cycles, durations, outbox), then
    one row per daemon (in manifest order) with its own metrics."""
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
            "Restarts in the last 15 minutes",
            [
                _target(
                    f"changes(fleet_start_time_seconds{{{_HOST}}}[15m])",
                    "{{host}} {{daemon}}",
                )
            ],
        )
    )
    lay.add(
        _timeseries(
            "Databases given up on (locked, unreadable)",
            [
                _target(
                    "sum by (host, daemon, db) "
                    f"(rate(fleet_store_errors_total{{{_HOST}}}[$__rate_interval]))",
                    "{{host}} {{daemon}} {{db}}",
                )
            ],
            "ops",
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
    for manifest in manifests:
        if not manifest.metrics:
            continue
        lay.row(manifest.name)
        for metric in manifest.metrics:
            lay.add(_metric_panel(metric))
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


def render_grafana(manifests: Sequence[DaemonManifest]) -> dict[str, str]:
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
    dashboard = overview_dashboard(manifests)
    return {
        "provisioning/datasources/alai-fleet.yml": yaml_file(header, datasource),
        "provisioning/dashboards/alai-fleet.yml": yaml_file(header, provider),
        "dashboards/fleet-overview.json": json.dumps(dashboard, indent=2) + "\n",
    }

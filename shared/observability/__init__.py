"""The Prometheus/Grafana pack, rendered from the daemons' manifests (the one list of metrics
each daemon both registers and is graphed and alerted on, and its own alert rules):
``prometheus`` (scrape config and its ``alerting:`` block), ``rules`` (recording and alert
rules), ``alertmanager`` (routing, receivers, inhibition), ``grafana`` (dashboard and
provisioning; its panels from ``panels``), checked against ``catalogue``. A metric renamed in
a manifest changes the daemon, the dashboard and the rules together; a rule or panel reading a
metric no manifest lists fails a test. The machine is only ever the scrape target's ``host``
label. Pure rendering to text: nothing here imports a daemon, scrapes, starts or writes
anything.
"""

from __future__ import annotations

from shared.observability.alertmanager import (
    ANNOUNCED_RECEIVER,
    ESCALATION_RECEIVER,
    OPS_RECEIVER,
    alertmanager_duration,
    render_alertmanager_config,
)
from shared.observability.catalogue import (
    exported_series,
    metric_names_in,
    metrics_for,
    unknown_metrics,
)
from shared.observability.grafana import (
    DASHBOARD_UID,
    DATASOURCE_UID,
    HOST_VALUES,
    dashboard_exprs,
    overview_dashboard,
    render_grafana,
)
from shared.observability.prometheus import HostTarget, job_name, render_prometheus_config
from shared.observability.rules import (
    CRASH_LOOP_RESTARTS,
    NOTIFICATIONS_BACKLOG,
    alert_rules,
    fleet_alert_rules,
    recording_rules,
    render_rules,
)
from shared.observability.yamldoc import to_yaml, yaml_file

__all__ = [
    "ANNOUNCED_RECEIVER",
    "CRASH_LOOP_RESTARTS",
    "DASHBOARD_UID",
    "DATASOURCE_UID",
    "ESCALATION_RECEIVER",
    "HOST_VALUES",
    "NOTIFICATIONS_BACKLOG",
    "OPS_RECEIVER",
    "HostTarget",
    "alert_rules",
    "alertmanager_duration",
    "dashboard_exprs",
    "exported_series",
    "fleet_alert_rules",
    "job_name",
    "metric_names_in",
    "metrics_for",
    "overview_dashboard",
    "recording_rules",
    "render_alertmanager_config",
    "render_grafana",
    "render_prometheus_config",
    "render_rules",
    "to_yaml",
    "unknown_metrics",
    "yaml_file",
]

"""``NotifyMetrics``: the outbox sender's Prometheus series, registered from the one spec
list ``shared.metrics.NOTIFY_METRICS`` (the list the dashboards and rules are generated
from). Registration only; the sender updates them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from shared.metrics import NOTIFY_METRICS, MetricSet

__all__ = ["NotifyMetrics"]


class NotifyMetrics:
    """``pending`` (gauge), ``sent{sink}``, ``failed{sink,reason}``, ``collapsed{sink}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        metrics = MetricSet(NOTIFY_METRICS, registry)
        self.pending = metrics.gauge("fleet_notifications_pending")
        self.sent = metrics.counter("fleet_notifications_sent_total")
        self.failed = metrics.counter("fleet_notifications_failed_total")
        self.collapsed = metrics.counter("fleet_notifications_collapsed_total")
        # Export the zeros, so a rate() over them exists before the first message.
        self.sent.labels("slack")
        self.collapsed.labels("slack")

"""Which Prometheus alerts Alertmanager must not deliver because a daemon already announces the
same condition itself, per event and with its detail (docs/alerts.md, "Who sends what"). The
app holds this table because it names the daemons' alerts; the renderer
(``shared.observability.render_alertmanager_config``) routes these alerts to a receiver that
sends nothing. The alerts still exist: Alertmanager's UI and Grafana show them and they take
part in inhibition.

An alert that is not listed is delivered: warnings to #ops, criticals to the escalation
channel. List one here only when the daemon's own message reaches the same people with more
detail; a critical a daemon only chats about in #ops stays a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DAEMON_ANNOUNCED"]

DAEMON_ANNOUNCED: Mapping[str, str] = MappingProxyType(
    {
        "FleetHeartbeatPeerDown": (
            "heartbeat posts the peer down and recovered to #ops and pages [heartbeat] "
            "escalation_channel after escalate_after failed probes; it works when the host "
            "running Prometheus is the one that is down"
        ),
        "FleetOllamaFailoverActive": (
            "ollama-health posts each failover rule turning on and off to #ops, with the "
            "tiers it redirects"
        ),
        "FleetBlueprintNoncompliant": (
            "blueprint-watchdog's nightly report lists the non-compliant files in #ops and HiveMind"
        ),
        "FleetClaimsExpired": (
            "claim-sweeper posts each expired lease to #ops (after alert_after_s) with the "
            "command that releases it"
        ),
    }
)

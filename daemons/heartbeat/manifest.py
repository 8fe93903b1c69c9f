"""heartbeat's manifest: what the app knows about it without importing its runtime code."""

from __future__ import annotations

from collections.abc import Sequence

from daemons.heartbeat.config import HeartbeatSection
from shared.manifest import AlertRule, DaemonManifest, metric

__all__ = ["MANIFEST"]


def alerts(_section: HeartbeatSection) -> Sequence[AlertRule]:
    return (
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
        AlertRule(
            "FleetDrDrillOverdue",
            "fleet_dr_drill_expected == 1 and on(instance) "
            "(time() - fleet_dr_drill_last_success_timestamp_seconds > 30 * 86400)",
            "1h",
            "warning",
            "No DR drill has passed on {{ $labels.host }} in 30 days",
            "The operators' bar is 'Backup/DR: tested within 30 days'. Run `fleet dr drill` on "
            "the standby (or check why its timer did not) and read the evidence report.",
            "docs/runbooks/heartbeat.md",
            ("heartbeat",),
        ),
        AlertRule(
            "FleetDrDrillDbFailed",
            "fleet_dr_drill_db_ok == 0",
            "5m",
            "critical",
            "The last DR drill on {{ $labels.host }} could not restore {{ $labels.db }}",
            "Its replica is missing, corrupt or behind the standby copy: a failover now would "
            "lose or refuse this DB. The drill's report names the problem.",
            "docs/runbooks/heartbeat.md",
            ("heartbeat",),
        ),
    )


MANIFEST = DaemonManifest(
    name="heartbeat",
    section=HeartbeatSection,
    daemon="daemons.heartbeat.daemon:Heartbeat",
    description="host health endpoint, dead-man's-switch pings, peer watch with escalation",
    metrics=(
        metric(
            "fleet_heartbeat_peer_up",
            "gauge",
            "1 if the peer's last probe got a health answer, 0 if it failed",
            "peer",
        ),
        metric(
            "fleet_heartbeat_peer_consecutive_failures",
            "gauge",
            "Failed probes of the peer in a row",
            "peer",
        ),
        metric(
            "fleet_heartbeat_pings_total",
            "counter",
            "Dead-man's-switch pings by outcome (ok: success sent, fail: /fail sent, error:"
            " not delivered after retries)",
            "url_hash",
            "outcome",
        ),
        metric(
            "fleet_heartbeat_fleet_degraded",
            "gauge",
            "1 while a daemon enabled on this host is stale or missing",
        ),
        metric(
            "fleet_heartbeat_two_primaries",
            "gauge",
            "1 while the peer and this host both report role primary",
            "peer",
        ),
        metric(
            "fleet_heartbeat_endpoint_up",
            "gauge",
            "1 while the /health endpoint is bound and serving",
        ),
        metric(
            "fleet_dr_drill_expected",
            "gauge",
            "1 on a standby (it should pass `fleet dr drill` every 30 days), 0 on a primary",
        ),
        metric(
            "fleet_dr_drill_last_success_timestamp_seconds",
            "gauge",
            "When `fleet dr drill` last passed on this host (0: never)",
        ),
        metric(
            "fleet_dr_drill_last_run_timestamp_seconds",
            "gauge",
            "When `fleet dr drill` last ran on this host (0: never)",
        ),
        metric("fleet_dr_drill_passed", "gauge", "1 if the last DR drill passed, 0 if not"),
        metric(
            "fleet_dr_drill_criterion_ok",
            "gauge",
            "1 if the last DR drill met this acceptance criterion, 0 if not",
            "criterion",
        ),
        metric(
            "fleet_dr_drill_db_ok",
            "gauge",
            "1 if the last DR drill restored and verified this DB, 0 if it failed",
            "db",
        ),
    ),
    alerts=alerts,
    commands={"heartbeat": "daemons.heartbeat.cli:heartbeat"},
)

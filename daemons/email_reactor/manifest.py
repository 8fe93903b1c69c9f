"""email-reactor's manifest: what the app knows about it without importing its runtime code."""

from __future__ import annotations

from collections.abc import Sequence

from daemons.email_reactor.config import EmailReactorSection
from shared.config import FleetConfig
from shared.manifest import DaemonManifest, MetricSpec, UnitProfile, WrittenDb, metric
from shared.roles import Role

__all__ = ["LLM_BUCKETS", "MANIFEST"]

LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30)


def refuse(_section: EmailReactorSection, role: Role) -> str | None:
    if role is Role.STANDBY:
        return (
            "email-reactor writes email-inbox.db and mission-control.db, which are "
            "replicated from the primary; it runs on the primary only (promote this "
            "host with `fleet role set primary` or disable [email_reactor] here)"
        )
    return None


def writes(config: FleetConfig, section: EmailReactorSection) -> Sequence[WrittenDb]:
    return (
        WrittenDb(
            "mission_control.db", config.mission_control.db, "email-reactor (creates MC tasks)"
        ),
        WrittenDb(
            "email_reactor.inbox_db", section.inbox_db, "email-reactor (its reactor columns)"
        ),
    )


def unit_profile(config: FleetConfig, section: EmailReactorSection) -> UnitProfile:
    return UnitProfile(
        write_paths=(
            section.inbox_db.parent,
            config.mission_control.db.parent,
            section.state_dir,
            # each state file may live elsewhere (the alai layout: state/ and logs/)
            section.audit_path.parent,
            section.quarantine_path.parent,
            section.digest_state_path.parent,
        ),
        tasks_max=64,
        memory_max_mb=384,
    )


MANIFEST = DaemonManifest(
    name="email-reactor",
    section=EmailReactorSection,
    daemon="daemons.email_reactor.daemon:EmailReactor",
    description="triage the strategic inbox into MC tasks and #ceo pushes, daily digest",
    refuse=refuse,
    metrics=(
        metric(
            "fleet_email_decisions_total",
            "counter",
            "Emails decided, by action and source",
            "action",
            "source",
        ),
        metric(
            "fleet_email_llm_requests_total", "counter", "Classifier requests by outcome", "outcome"
        ),
        MetricSpec(
            "fleet_email_llm_duration_seconds",
            "histogram",
            "Classifier request wall time",
            (),
            LLM_BUCKETS,
        ),
        metric("fleet_email_backlog", "gauge", "New emails not yet decided"),
        metric(
            "fleet_email_oldest_undecided_age_seconds",
            "gauge",
            "Age of the oldest undecided new email (0: none)",
        ),
        metric(
            "fleet_email_stale",
            "gauge",
            "ACTION emails undecided, or partner emails without task or push, past stale_after_h",
        ),
        metric(
            "fleet_email_stale_alerts_total",
            "counter",
            "#ceo messages sent for stale emails (one per email, ever)",
        ),
        metric(
            "fleet_email_paperless_errors_total",
            "counter",
            "Paperless lookups that failed (DB fallback used)",
        ),
    ),
    writes=writes,
    unit_profile=unit_profile,
    commands={"email": "daemons.email_reactor.cli:email"},
)

"""email-reactor's manifest: what the app knows about it without importing its runtime code."""

from __future__ import annotations

from collections.abc import Sequence

from daemons.email_reactor.config import EmailReactorSection
from daemons.email_reactor.contracts import EMAILS
from shared.config import FleetConfig
from shared.manifest import AlertRule, DaemonManifest, MetricSpec, UnitProfile, WrittenDb, metric
from shared.roles import Role
from shared.schema_contract import ContractUse
from shared.shared_tables import TASKS_CREATE

__all__ = ["LLM_BUCKETS", "MANIFEST", "malformed_share_expr"]

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


def contracts(config: FleetConfig, section: EmailReactorSection) -> Sequence[ContractUse]:
    return (
        ContractUse(section.inbox_db, EMAILS, "email-reactor"),
        ContractUse(
            config.mission_control.db,
            TASKS_CREATE,
            "email-reactor",
            config.mission_control.task_defaults,
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
        process_type="Standard",  # commits to shared DBs others wait on; pushes with a deadline
    )


def malformed_share_expr(section: EmailReactorSection) -> str:
    """Malformed answers / answers over the last hour, from the requests counter (the same
    share llm_health.py alerts #ops on), guarded by a minimum number of answers."""
    answers = (
        "sum without (outcome) "
        '(increase(fleet_email_llm_requests_total{outcome=~"yes|no|malformed"}[1h]))'
    )
    malformed = (
        'sum without (outcome) (increase(fleet_email_llm_requests_total{outcome="malformed"}[1h]))'
    )
    return (
        f"{malformed} / {answers} > {section.malformed_alert_share:g}"
        f" and {answers} >= {section.malformed_alert_min_answers}"
    )


def alerts(section: EmailReactorSection) -> Sequence[AlertRule]:
    return (
        AlertRule(
            "FleetEmailStale",
            "fleet_email_stale > 0",
            "10m",
            "warning",
            "{{ $labels.host }}: {{ $value }} email(s) waiting past "
            f"{section.stale_after_h:g} h with nobody acting on them",
            "An ACTION email undecided, or a partner email with neither Mission Control task "
            "nor push, for longer than stale_after_h (the founding incident: a partner's mail "
            "sat 72 h). email-reactor sent #ceo one message per email.",
            "docs/runbooks/email-reactor.md",
            ("email-reactor",),
        ),
        AlertRule(
            "FleetEmailLLMMalformed",
            malformed_share_expr(section),
            "5m",
            "critical",
            "{{ $labels.host }}: {{ $value | humanizePercentage }} of the LLM classifier's "
            "answers in the last hour were malformed",
            "Mail from unknown senders whose answer stays malformed after the strict retry is "
            "filed llm_no (reason llm_malformed) with no task and no push: a model that does "
            "not answer exactly YES or NO (a reasoning preamble, null content).",
            "docs/runbooks/email-reactor.md",
            ("email-reactor",),
        ),
    )


MANIFEST = DaemonManifest(
    name="email-reactor",
    section=EmailReactorSection,
    daemon="daemons.email_reactor.daemon:EmailReactor",
    description="triage the strategic inbox into MC tasks and #ceo pushes, daily digest",
    refuse=refuse,
    contracts=contracts,
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
            "fleet_email_llm_malformed_share",
            "gauge",
            "Malformed classifier answers / answers in the last hour (0: no answers)",
        ),
        metric(
            "fleet_email_paperless_errors_total",
            "counter",
            "Paperless lookups that failed (DB fallback used)",
        ),
    ),
    alerts=alerts,
    writes=writes,
    unit_profile=unit_profile,
    commands={"email": "daemons.email_reactor.cli:email"},
)

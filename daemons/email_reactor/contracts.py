"""The contract of ``emails`` in email-inbox.db, the table email-agent.js ingests into.

The reactor reads mail from it and writes back only ``mc_task_id``, ``partner_tier`` and
``reactor_pushed_at`` (columns email-inbox.js defines). Standard library only: the manifest
imports it.
"""

from __future__ import annotations

from shared.schema_contract import TableContract

__all__ = ["EMAILS"]

EMAILS = TableContract(
    db="email-inbox.db",
    table="emails",
    owner="email-agent.js",
    required=(
        "id",
        "from_addr",
        "subject",
        "status",
        "created_at",
        "mc_task_id",
        "partner_tier",
        "reactor_pushed_at",
    ),
    optional={
        "account": "digest, pushes and `fleet email explain` show no account",
        "from_name": "the partner-spoof check and pushes see no display name",
        "to_addr": "the known-contact check by past replies (OWN mail) is off",
        "reply_to": "the reply-to mismatch check is off",
        "body_text": "the security scan and the LLM see no body",
        "attachments": "the macro-attachment check is off",
        "headers": "header checks are off",
        "classification": (
            "ACTION/OWN are unknown: stale-ACTION alerts, the digest's ACTION rows and the "
            "OWN filter are off"
        ),
    },
    declarations={
        "id": "INTEGER",
        "mc_task_id": "INTEGER",
        "partner_tier": "INTEGER DEFAULT 0",
        "status": "TEXT DEFAULT 'new'",
    },
    indexes=(
        (
            "idx_emails_partner_tier",
            "CREATE INDEX IF NOT EXISTS idx_emails_partner_tier ON emails(partner_tier)",
        ),
        (
            "idx_emails_reactor_pushed",
            "CREATE INDEX IF NOT EXISTS idx_emails_reactor_pushed ON emails(reactor_pushed_at)",
        ),
        (
            "idx_emails_reactor_new",
            "CREATE INDEX IF NOT EXISTS idx_emails_reactor_new ON emails(status, created_at)",
        ),
    ),
)

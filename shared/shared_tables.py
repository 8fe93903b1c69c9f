"""The contracts of the tables the fleet shares with the Node tools, outside any one daemon:
Mission Control's ``tasks`` (mc.js, the Node hooks, Mehanik) and HiveMind's ``messages``.
The inbox's ``emails`` contract lives with the email-reactor. Standard library only (manifests
import it); the machinery is ``shared.schema_contract``.
"""

from __future__ import annotations

from shared.schema_contract import TableContract

__all__ = ["HIVEMIND_MESSAGES", "TASKS_CREATE", "TASKS_LEASES", "TASK_FILLED"]

#: the columns the fleet fills when it creates a task (the ones the table has)
TASK_FILLED = (
    "title",
    "description",
    "status",
    "priority",
    "source",
    "source_ref",
    "created_at",
    "updated_at",
)

_TASK_INDEXES = (
    (
        "idx_tasks_lease_until",
        "CREATE INDEX IF NOT EXISTS idx_tasks_lease_until ON tasks(lease_until)"
        " WHERE lease_holder IS NOT NULL",
    ),
    (
        "idx_tasks_source_ref",
        "CREATE INDEX IF NOT EXISTS idx_tasks_source_ref ON tasks(source, source_ref)"
        " WHERE source_ref IS NOT NULL",
    ),
)

#: creating tasks from mail (email-reactor): (source, source_ref) is the idempotency key
TASKS_CREATE = TableContract(
    db="mission-control.db",
    table="tasks",
    owner="mc.js",
    required=("id", "title", "source", "source_ref"),
    optional={
        "description": "tasks are created without the mail's summary",
        "status": "tasks are created without a status (mc.js's default applies)",
        "priority": "partner priority is not recorded on the task",
        "created_at": "tasks carry no creation time from the fleet",
        "updated_at": "tasks carry no update time from the fleet",
    },
    inserts=TASK_FILLED,
    unfilled_fix=(
        'give each a value in [mission_control] task_defaults, e.g. created_by = "email-reactor"'
    ),
    indexes=_TASK_INDEXES[1:],
    declarations={"status": "TEXT DEFAULT 'open'"},
)

#: the lease protocol (fleet mc, claim-sweeper)
TASKS_LEASES = TableContract(
    db="mission-control.db",
    table="tasks",
    owner="mc.js",
    required=("id", "lease_holder", "lease_until"),
    optional={
        "title": "sweeper alerts and `fleet mc show` name tasks by id only",
        "status": "`fleet mc show` reports no status",
        "updated_at": "lease changes do not touch updated_at",
    },
    indexes=_TASK_INDEXES[:1],
)

#: the HiveMind notification sink
HIVEMIND_MESSAGES = TableContract(
    db="hivemind.db",
    table="messages",
    owner="HiveMind",
    required=("body",),
    optional={
        "ts": "messages carry no time",
        "source": "messages do not say which daemon sent them",
        "topic": "messages carry no topic (channel)",
        "severity": "messages carry no severity",
    },
    inserts=("ts", "source", "topic", "severity", "body", "fleet_dedup_key"),
)

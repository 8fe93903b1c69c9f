"""Mission Control's front door: the task and lease store protocol both backends implement,
and ``open_store`` choosing one from an ``McTarget`` (a SQLite file, the default, or a
PostgreSQL URL: ``[mission_control] url`` / ``$ALAI_MC_URL``).

``shared.mc_sqlite`` (stdlib sqlite3) and ``shared.mc_postgres`` (psycopg 3, imported only when
a URL is used, so the SQLite hook path never loads it) hold the code. Callers import the
names below from here; this module does no I/O of its own and must never print a password.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from shared.clock import Clock
from shared.leases import (
    ExpiredLease,
    LeaseHeld,
    LeaseInfo,
    LeaseNotHeld,
    LeaseUnreadable,
    MissingColumns,
    NoSuchTask,
    TaskRef,
    TaskView,
    UnreadableLease,
)
from shared.mc_sqlite import MissionControl, parse_ts, pending_schema_changes
from shared.mc_target import McTarget, McTargetError
from shared.schema_contract import ContractReport
from shared.sqlite import StoreError
from shared.timestamps import format_iso, format_sql_ts

__all__ = [
    "ExpiredLease",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseNotHeld",
    "LeaseStore",
    "LeaseUnreadable",
    "McTarget",
    "McTargetError",
    "MissingColumns",
    "MissionControl",
    "NoSuchTask",
    "StoreError",
    "TaskRef",
    "TaskView",
    "UnreadableLease",
    "format_iso",
    "format_sql_ts",
    "open_store",
    "parse_ts",
    "pending_schema_changes",
]


class LeaseStore(Protocol):
    """What every Mission Control backend offers (``fleet mc``, the claim-sweeper and the
    email-reactor use only this)."""

    report: ContractReport | None  # the SQLite task-creation contract (None on Postgres)

    def open(self) -> Any: ...
    def close(self) -> None: ...
    def recheck(self) -> ContractReport | None: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *_exc: object) -> None: ...
    def now(self) -> datetime: ...
    def create_task(
        self,
        title: str,
        *,
        description: str = "",
        priority: str | None = None,
        source: str | None = None,
        source_ref: str | None = None,
    ) -> TaskRef: ...
    def status(self, task_id: int) -> LeaseInfo: ...
    def show(self, task_id: int) -> TaskView: ...
    def claim(
        self, task_id: int, actor: str, session: str, ttl_minutes: int = 10, *, enforce: bool = True
    ) -> LeaseInfo: ...
    def extend(
        self, task_id: int, actor: str, session: str, ttl_minutes: int = 10
    ) -> LeaseInfo: ...
    def release(
        self, task_id: int, actor: str = "", session: str = "", *, force: bool = False
    ) -> bool: ...
    def lease_counts(self) -> tuple[int, int]: ...
    def expired_leases(self, limit: int | None = None) -> list[ExpiredLease]: ...
    def unreadable_leases(self) -> list[UnreadableLease]: ...
    def release_expired(self, lease: ExpiredLease) -> bool: ...


def open_store(
    target: McTarget,
    *,
    clock: Clock = time.time,
    create: bool = True,
    migrate: bool = False,
    creates_tasks: bool = False,
    task_defaults: Mapping[str, object] | None = None,
    hook: bool = False,
) -> LeaseStore:
    """An opened store for ``target``. ``hook``: the pre-tool-hook budget of a one-shot CLI
    process (fail in seconds: 1 s busy wait x 3 tries on SQLite; on Postgres 3 s of
    reconnects, each statement bounded on this side too: a frozen backend is a lost
    connection, `no answer from the server within 4 s`). Raises StoreError,
    McTargetError (a bad password file: exit 78 in the CLI) or
    MissingColumns."""
    if target.url is not None:
        from shared.mc_postgres import PostgresMissionControl

        pg = PostgresMissionControl(
            target.url,
            password_file=target.password_file,
            clock=clock,
            create=create,
            migrate=migrate,
            retry_s=3.0 if hook else 10.0,
            client_deadline=hook,
        )
        return pg.open()
    assert target.path is not None
    store = MissionControl(
        target.path,
        clock=clock,
        create=create,
        migrate=migrate,
        creates_tasks=creates_tasks,
        task_defaults=task_defaults,
        **({"busy_timeout_ms": 1000, "attempts": 3} if hook else {}),
    )
    return store.open()

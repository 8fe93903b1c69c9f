"""The outbox's one API (``OutboxStore``) and where it lives: ``outbox_for([notify])``.

``[notify] url`` empty (the default): ``SqliteOutbox`` on ``[notify] outbox_db``, one file per
host, exactly as before. ``[notify] url = "postgresql://..."``: ``PostgresOutbox``, one table
every host shares, so a dedup key enqueued on one host is never sent again from another. Both
keep the same semantics (dedup, claims with a lease, retry/backoff, dead letters, collapse,
silence, prune); the sender and the daemons see only ``OutboxStore``.
This module chooses and describes; it does no I/O and never prints a password.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from shared.clock import Clock
from shared.notify.message import Message, OutboxRow, Silence
from shared.notify.outbox_sqlite import COMPONENT, MIGRATIONS, SqliteOutbox
from shared.sections import NotifySection

__all__ = ["COMPONENT", "MIGRATIONS", "Outbox", "OutboxStore", "outbox_for"]

#: the SQLite outbox under its historical name (tests and tools open a file with it)
Outbox = SqliteOutbox


class OutboxStore(Protocol):
    """What senders, daemons and ``fleet silence`` use; both backends implement it. Every
    method raises ``shared.sqlite.StoreError`` (or a raw ``sqlite3.Error``) when the store
    cannot be used; none of them drops a row."""

    boot: str

    @property
    def store_name(self) -> str: ...

    async def open(self) -> OutboxStore: ...
    async def close(self) -> None: ...
    def now(self) -> float: ...
    def mono(self) -> float: ...
    async def enqueue(self, msg: Message) -> bool: ...
    async def pending_count(self) -> int: ...
    async def counts(self) -> dict[str, int]: ...
    async def silence(self) -> Silence | None: ...
    def silenced(self, silence: Silence | None) -> bool: ...
    async def set_silence(self, duration_s: float, reason: str = "") -> Silence: ...
    async def clear_silence(self) -> bool: ...
    async def requeue_abandoned(self) -> int: ...
    async def hold_alerts(self) -> int: ...
    async def collapse(self, stale_alert_s: float, burst: int) -> list[int]: ...
    async def ready(
        self,
        *,
        include_alerts: bool,
        limit: int,
        per_channel: int | None = None,
        max_delay_s: float | None = None,
    ) -> list[OutboxRow]: ...
    async def claim(self, row_id: int, owner: str, lease_s: float) -> bool: ...
    async def mark_sent(self, row_id: int, owner: str) -> None: ...
    async def mark_retry(self, row_id: int, owner: str, delay_s: float, error: str) -> None: ...
    async def mark_dead(self, row_id: int, owner: str, error: str) -> None: ...
    async def sent_at(self, dedup_keys: Sequence[str]) -> dict[str, float]: ...
    async def sent_recently(self, sink: str, channel: str, window_s: float = 60.0) -> int: ...
    async def prune(self, older_than_s: float) -> int: ...


def outbox_for(settings: NotifySection, *, clock: Clock | None = None) -> OutboxStore:
    """The outbox ``[notify]`` names (not yet opened): Postgres when ``url`` is set, else the
    SQLite file ``outbox_db`` (on Postgres, what that file still holds undelivered is moved
    over at ``open()``). The password comes from ``password`` (filled from
    ``password_file`` by the config loader); without one, from Mission Control's sources
    (``shared.mc_target.read_password``) or libpq's own (peer auth, ~/.pgpass)."""
    tick = clock if clock is not None else time.time
    if settings.url:
        from shared.notify.outbox_postgres import PostgresOutbox

        password = settings.password.get_secret_value() or None
        return PostgresOutbox(
            settings.url, password=password, clock=tick, local_db=settings.outbox_db
        )
    return SqliteOutbox(settings.outbox_db, clock=tick)

"""``SqliteOutbox``: the host's durable notification store in SQLite (``[notify] outbox_db``,
the default; ``shared.notify.outbox_postgres`` is the same store on a Postgres server).

It stores messages under a dedup key, keeps the silence, and offers the row operations senders
use: claim by compare-and-set with a lease, mark sent/retry/dead, requeue what a dead sender
left, prune. Collapsing stale alerts is decided by ``shared.notify.collapse.plan_collapse``;
this module only gathers the rows for it and applies the plan in one IMMEDIATE transaction
(``shared.sqlite.transaction``, like every write here: serialized with this process's other
writes on the connection, rolled back whole on any failure or cancellation).
It must never decide what to collapse nor send anything, and never block the event loop
(queries run on aiosqlite's thread, migrations in ``asyncio.to_thread``). The statements it
shares with the Postgres outbox are in ``shared.notify.outbox_sql``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from shared.clock import Clock, MonotonicClock, boot_id
from shared.notify.collapse import CollapsePlan, PendingAlert, WaitingSummary, plan_collapse
from shared.notify.outbox_adopt import restore_moving
from shared.notify.outbox_sql import (
    ABSORB,
    COLLAPSE,
    FOLDED_ALERTS,
    PENDING_ALERTS,
    REGROUP,
    RELEASE,
    SUMMARY_INSERT,
    WAITING_SUMMARIES,
    OutboxQueries,
    pending_alerts,
    summary_params,
    waiting_summaries,
)
from shared.sqlite import (
    DEFAULT_BUSY_TIMEOUT_MS,
    AsyncDatabase,
    apply_migrations,
    connect_sync,
)

__all__ = ["COMPONENT", "MIGRATIONS", "SqliteOutbox"]

COMPONENT = "outbox"


def _migration_1(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " dedup_key TEXT NOT NULL UNIQUE,"
        " sink TEXT NOT NULL,"
        " channel TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " text TEXT NOT NULL,"
        " payload TEXT NOT NULL DEFAULT '{}',"
        " daemon TEXT NOT NULL DEFAULT '',"
        " created_at REAL NOT NULL,"
        " status TEXT NOT NULL DEFAULT 'pending',"  # pending|sending|sent|collapsed|dead
        " held INTEGER NOT NULL DEFAULT 0,"  # 1: held back by a silence
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt_at REAL NOT NULL DEFAULT 0,"
        " claimed_by TEXT,"
        " claimed_until REAL,"
        " sent_at REAL,"
        " summary_id INTEGER,"
        " last_error TEXT)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS idx_outbox_status ON outbox(status, next_attempt_at)")
    conn.execute("CREATE INDEX IF NOT EXISTS idx_outbox_channel_sent ON outbox(channel, sent_at)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS silence ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " until REAL NOT NULL, reason TEXT NOT NULL DEFAULT '', set_at REAL NOT NULL)"
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    """Monotonic readings (and the boot they belong to) for the intervals measured on them:
    the rate limit's window over sends and a silence's length."""
    conn.execute("ALTER TABLE outbox ADD COLUMN sent_mono REAL")
    conn.execute("ALTER TABLE outbox ADD COLUMN sent_boot TEXT")
    conn.execute("ALTER TABLE silence ADD COLUMN set_mono REAL")
    conn.execute("ALTER TABLE silence ADD COLUMN set_boot TEXT")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_outbox_channel_sent_mono ON outbox(channel, sent_mono)"
    )


MIGRATIONS = [_migration_1, _migration_2]


class SqliteOutbox(AsyncDatabase, OutboxQueries):
    """The host's outbox database (``[notify] outbox_db``): enqueue, silence, and the row
    operations senders use. Open with ``await open()``; ``close()`` is idempotent."""

    label = "outbox"

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = time.time,
        mono: MonotonicClock = time.monotonic,
        boot: str | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        super().__init__(path, busy_timeout_ms=busy_timeout_ms)
        self._clock = clock
        self._mono = mono
        #: whose monotonic readings are comparable with ours (the clock restarts at boot)
        self.boot = boot if boot is not None else boot_id()
        self._migrated = False

    async def open(self) -> SqliteOutbox:
        """Migrate and connect. If that fails (the file is locked past busy_timeout, say),
        the error is raised, yet the outbox stays wanted: each later use tries again and raises
        StoreError until it works, so a daemon can start without it and catch up."""
        await self._connect()
        return self

    @property
    def store_name(self) -> str:
        """The ``db`` label of ``fleet_store_errors_total`` for this store."""
        return self.path.name

    async def _prepare(self) -> None:
        if self._migrated:
            return

        def _migrate() -> None:
            conn = connect_sync(self.path, busy_timeout_ms=self._busy_timeout_ms)
            try:
                apply_migrations(conn, COMPONENT, MIGRATIONS)
                restore_moving(conn)  # a move to Postgres that stopped half-way: send here
            finally:
                conn.close()

        await asyncio.to_thread(_migrate)
        self._migrated = True

    def now(self) -> float:
        return self._clock()

    def mono(self) -> float:
        return self._mono()

    async def collapse(self, stale_alert_s: float, burst: int) -> list[int]:
        """Fold held, stale or bursting pending alerts into one summary per (sink, channel),
        as ``plan_collapse`` decides (the rules are documented there).

        Runs as one IMMEDIATE transaction, so two senders never both summarize a row.
        Returns the ids of the summary rows created.
        """
        now = self.now()

        async def _do(db: aiosqlite.Connection) -> list[int]:
            alerts = await self._pending_alerts(db)
            channels = {(a.row.sink, a.row.channel) for a in alerts}
            waiting = await self._waiting_summaries(db, channels) if channels else []
            plan = plan_collapse(alerts, waiting, now, stale_alert_s=stale_alert_s, burst=burst)
            return await self._apply(db, plan)

        return await self._transaction(_do)

    @staticmethod
    async def _select(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read inside the caller's transaction (no busy retry of its own)."""
        async with db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _pending_alerts(self, db: aiosqlite.Connection) -> list[PendingAlert]:
        return pending_alerts(await self._select(db, PENDING_ALERTS))

    async def _waiting_summaries(
        self, db: aiosqlite.Connection, channels: Collection[tuple[str, str]]
    ) -> list[WaitingSummary]:
        """Undelivered summaries on ``channels``, each with the alerts it stands for."""
        raw = [r for r in await self._select(db, WAITING_SUMMARIES) if (r[1], r[2]) in channels]
        if not raw:
            return []
        ids = [int(r[0]) for r in raw]
        folded = await self._select(db, FOLDED_ALERTS.format(marks=", ".join("?" * len(ids))), ids)
        return waiting_summaries(raw, folded)

    @staticmethod
    async def _apply(db: aiosqlite.Connection, plan: CollapsePlan) -> list[int]:
        """Write ``plan`` inside the caller's transaction; return the new summary ids."""
        if plan.release:
            await db.executemany(RELEASE, [(i,) for i in plan.release])
        created: list[int] = []
        for summary in plan.summaries:
            cur = await db.execute(SUMMARY_INSERT, summary_params(summary))
            summary_id = int(cur.lastrowid or 0)
            await db.executemany(COLLAPSE, [(summary_id, i) for i in summary.collapses])
            await db.executemany(REGROUP, [(summary_id, i) for i in summary.regroups])
            await db.executemany(ABSORB, [(summary_id, i) for i in summary.absorbs])
            created.append(summary_id)
        return created

    async def claim(self, row_id: int, owner: str, lease_s: float) -> bool:
        """Take ``row_id`` for ``owner`` until the lease lapses; False if another sender has
        it (compare-and-set on ``status = 'pending'``)."""
        return (
            await self._execute(
                "UPDATE outbox SET status = 'sending', claimed_by = ?, claimed_until = ?,"
                " attempts = attempts + 1 WHERE id = ? AND status = 'pending'",
                (owner, self.now() + lease_s, row_id),
            )
            == 1
        )

    async def sent_recently(self, sink: str, channel: str, window_s: float = 60.0) -> int:
        """Sends on (sink, channel) in the last ``window_s``, on the monotonic clock (sends of
        this boot; a wall-clock step changes nothing). Rows sent before the monotonic column
        existed count by wall time, never from the future."""
        mono, now = self.mono(), self.now()
        rows = await self._fetchall(
            "SELECT count(*) FROM outbox WHERE channel = ? AND sink = ? AND ("
            " (sent_boot = ? AND sent_mono > ? AND sent_mono <= ?)"
            " OR (sent_boot IS NULL AND sent_at > ? AND sent_at <= ?))",
            (channel, sink, self.boot, mono - window_s, mono, now - window_s, now),
        )
        return int(rows[0][0])

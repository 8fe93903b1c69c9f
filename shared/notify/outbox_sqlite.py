"""``SqliteOutbox``: the host's durable notification store in SQLite (``[notify] outbox_db``,
the default; ``shared.notify.outbox_postgres`` is the same store on a Postgres server).

It stores messages under a dedup key, keeps the silence, and offers the row operations senders
use: claim by compare-and-set with a lease, mark sent/retry/dead, requeue what a dead sender
left, prune. Collapsing stale alerts is decided by ``shared.notify.collapse.plan_collapse``;
this module only gathers the rows for it and applies the plan in one IMMEDIATE transaction
(``shared.sqlite.transaction``, like every write here: serialized with this process's other
writes on the connection, rolled back whole on any failure or cancellation).
It must never decide what to collapse nor send anything, and never block the event loop
(queries run on aiosqlite's thread, migrations in ``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from shared.clock import Clock, MonotonicClock, boot_id
from shared.notify.collapse import CollapsePlan, PendingAlert, WaitingSummary, plan_collapse
from shared.notify.message import MAX_SILENCE_S, ROW_COLUMNS, Message, OutboxRow, Silence
from shared.notify.outbox_adopt import restore_moving
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


class SqliteOutbox(AsyncDatabase):
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

    async def enqueue(self, msg: Message) -> bool:
        """Store ``msg`` durably; False if its dedup key was already enqueued (a no-op)."""
        count = await self._execute(
            "INSERT OR IGNORE INTO outbox(dedup_key, sink, channel, kind, text, payload, daemon,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                msg.dedup_key,
                msg.sink,
                msg.channel,
                msg.kind,
                msg.text,
                json.dumps(msg.payload, sort_keys=True),
                msg.daemon,
                self.now(),
            ),
        )
        return count == 1

    async def pending_count(self) -> int:
        rows = await self._fetchall(
            "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
        )
        return int(rows[0][0])

    async def counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT status, count(*) FROM outbox GROUP BY status")
        return {str(s): int(n) for s, n in rows}

    # silence -----------------------------------------------------------------------------
    async def silence(self) -> Silence | None:
        rows = await self._fetchall(
            "SELECT until, reason, set_at, set_mono, set_boot FROM silence WHERE id = 1"
        )
        if not rows:
            return None
        until, reason, set_at, set_mono, set_boot = rows[0]
        return Silence(
            float(until),
            str(reason),
            float(set_at),
            float(set_mono) if set_mono is not None else None,
            str(set_boot) if set_boot is not None else None,
        )

    def silenced(self, silence: Silence | None) -> bool:
        """Is ``silence`` in force now (on the monotonic clock when it was set this boot)?"""
        return silence is not None and silence.active(self.now(), self.mono(), self.boot)

    async def set_silence(self, duration_s: float, reason: str = "") -> Silence:
        """Silence alerts for ``duration_s`` (more than 0, at most ``MAX_SILENCE_S``; else
        ValueError)."""
        if not 0 < duration_s <= MAX_SILENCE_S:
            raise ValueError(
                f"a silence lasts more than 0 s and at most {MAX_SILENCE_S / 86400:.0f}d "
                f"({MAX_SILENCE_S:.0f} s), not {duration_s:g} s"
            )
        now = self.now()
        silence = Silence(now + duration_s, reason, now, self.mono(), self.boot)
        await self._execute(
            "INSERT INTO silence(id, until, reason, set_at, set_mono, set_boot)"
            " VALUES (1, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET until = excluded.until, reason = excluded.reason,"
            " set_at = excluded.set_at, set_mono = excluded.set_mono,"
            " set_boot = excluded.set_boot",
            (silence.until, reason, now, silence.set_mono, silence.boot),
        )
        return silence

    async def clear_silence(self) -> bool:
        return await self._execute("DELETE FROM silence WHERE id = 1") == 1

    # sender operations -------------------------------------------------------------------
    async def requeue_abandoned(self) -> int:
        """Rows whose sender's claim lapsed (it died mid-send) become pending again."""
        return await self._execute(
            "UPDATE outbox SET status = 'pending', claimed_by = NULL"
            " WHERE status = 'sending' AND claimed_until < ?",
            (self.now(),),
        )

    async def hold_alerts(self) -> int:
        return await self._execute(
            "UPDATE outbox SET held = 1 WHERE status = 'pending' AND kind = 'alert' AND held = 0"
        )

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
        raw = await self._select(
            db,
            f"SELECT {ROW_COLUMNS}, held FROM outbox"
            " WHERE status = 'pending' AND kind = 'alert' ORDER BY id",
        )
        return [PendingAlert(OutboxRow.from_db(r), bool(r[10])) for r in raw]

    async def _waiting_summaries(
        self, db: aiosqlite.Connection, channels: Collection[tuple[str, str]]
    ) -> list[WaitingSummary]:
        """Undelivered summaries on ``channels``, each with the alerts it stands for."""
        raw = await self._select(
            db,
            "SELECT id, sink, channel, attempts, next_attempt_at FROM outbox"
            " WHERE status = 'pending' AND kind = 'summary' ORDER BY id",
        )
        raw = [r for r in raw if (r[1], r[2]) in channels]
        if not raw:
            return []
        ids = [int(r[0]) for r in raw]
        marks = ", ".join("?" * len(ids))
        folded: dict[int, list[OutboxRow]] = {}
        for r in await self._select(
            db,
            f"SELECT {ROW_COLUMNS}, summary_id FROM outbox"
            f" WHERE kind = 'alert' AND summary_id IN ({marks}) ORDER BY id",
            ids,
        ):
            folded.setdefault(int(r[10]), []).append(OutboxRow.from_db(r))
        return [
            WaitingSummary(
                id=int(s_id),
                sink=str(sink),
                channel=str(channel),
                attempts=int(attempts),
                next_attempt_at=float(next_at),
                alerts=tuple(folded.get(int(s_id), ())),
            )
            for s_id, sink, channel, attempts, next_at in raw
        ]

    @staticmethod
    async def _apply(db: aiosqlite.Connection, plan: CollapsePlan) -> list[int]:
        """Write ``plan`` inside the caller's transaction; return the new summary ids. Every
        update is guarded by the status the plan saw, so a row changed since is left alone."""
        if plan.release:
            await db.executemany(
                "UPDATE outbox SET held = 0 WHERE id = ?", [(i,) for i in plan.release]
            )
        created: list[int] = []
        for summary in plan.summaries:
            cur = await db.execute(
                "INSERT INTO outbox(dedup_key, sink, channel, kind, text, payload,"
                " daemon, created_at, attempts, next_attempt_at)"
                " VALUES (?, ?, ?, 'summary', ?, '{}', 'outbox', ?, ?, ?)",
                (
                    summary.dedup_key,
                    summary.sink,
                    summary.channel,
                    summary.text,
                    summary.created_at,
                    summary.attempts,
                    summary.next_attempt_at,
                ),
            )
            summary_id = int(cur.lastrowid or 0)
            await db.executemany(
                "UPDATE outbox SET status = 'collapsed', summary_id = ?, held = 0"
                " WHERE id = ? AND status = 'pending'",
                [(summary_id, i) for i in summary.collapses],
            )
            await db.executemany(
                "UPDATE outbox SET summary_id = ? WHERE id = ? AND kind = 'alert'",
                [(summary_id, i) for i in summary.regroups],
            )
            await db.executemany(
                "UPDATE outbox SET status = 'collapsed', summary_id = ?"
                " WHERE id = ? AND status = 'pending'",
                [(summary_id, i) for i in summary.absorbs],
            )
            created.append(summary_id)
        return created

    async def ready(
        self,
        *,
        include_alerts: bool,
        limit: int,
        per_channel: int | None = None,
        max_delay_s: float | None = None,
    ) -> list[OutboxRow]:
        """Rows due now, oldest first; at most ``per_channel`` per (sink, channel), so one
        rate-limited channel's backlog cannot starve the others out of the batch. With
        ``max_delay_s`` (the longest retry delay ever set), a row due later than that from
        now is due now: the wall clock was set back after its delay was set."""
        kinds = "('alert', 'push', 'summary')" if include_alerts else "('push')"
        cap = per_channel if per_channel is not None else limit
        now = self.now()
        horizon = now + max_delay_s if max_delay_s is not None else float("inf")
        rows = await self._fetchall(
            f"SELECT {ROW_COLUMNS} FROM ("
            f" SELECT {ROW_COLUMNS}, ROW_NUMBER() OVER"
            " (PARTITION BY sink, channel ORDER BY id) AS rn FROM outbox"
            f" WHERE status = 'pending' AND kind IN {kinds}"
            " AND (next_attempt_at <= ? OR next_attempt_at > ?)"
            ") WHERE rn <= ? ORDER BY id LIMIT ?",
            (now, horizon, cap, limit),
        )
        return [OutboxRow.from_db(r) for r in rows]

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

    async def mark_sent(self, row_id: int, owner: str) -> None:
        await self._execute(
            "UPDATE outbox SET status = 'sent', sent_at = ?, sent_mono = ?, sent_boot = ?,"
            " last_error = NULL WHERE id = ? AND claimed_by = ?",
            (self.now(), self.mono(), self.boot, row_id, owner),
        )

    async def mark_retry(self, row_id: int, owner: str, delay_s: float, error: str) -> None:
        await self._execute(
            "UPDATE outbox SET status = 'pending', claimed_by = NULL, next_attempt_at = ?,"
            " last_error = ? WHERE id = ? AND claimed_by = ?",
            (self.now() + delay_s, error[:500], row_id, owner),
        )

    async def mark_dead(self, row_id: int, owner: str, error: str) -> None:
        await self._execute(
            "UPDATE outbox SET status = 'dead', last_error = ? WHERE id = ? AND claimed_by = ?",
            (error[:500], row_id, owner),
        )

    async def sent_at(self, dedup_keys: Sequence[str]) -> dict[str, float]:
        """When each of these keys was delivered (keys not yet sent are absent)."""
        out: dict[str, float] = {}
        for start in range(0, len(dedup_keys), 500):
            chunk = list(dedup_keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT dedup_key, sent_at FROM outbox WHERE status = 'sent'"
                f" AND dedup_key IN ({marks})",
                chunk,
            )
            out.update({str(k): float(t) for k, t in rows})
        return out

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

    async def prune(self, older_than_s: float) -> int:
        return await self._execute(
            "DELETE FROM outbox WHERE status IN ('sent', 'collapsed', 'dead')"
            " AND coalesce(sent_at, created_at) < ?"
            # A collapsed alert stays while its summary is still undelivered.
            " AND NOT (status = 'collapsed' AND summary_id IN"
            " (SELECT id FROM outbox WHERE status IN ('pending', 'sending')))",
            (self.now() - older_than_s,),
        )

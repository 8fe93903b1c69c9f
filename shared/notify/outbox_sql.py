"""The half of the outbox that is the same on both backends: the statements written once, in
SQL both SQLite and PostgreSQL accept, and the row operations built only on them
(``OutboxQueries``, a mixin of ``SqliteOutbox`` and ``PostgresOutbox``).

Statements are written with ``?`` placeholders; a backend whose driver wants ``%s`` (psycopg)
sets ``placeholder`` and each statement is translated as it is sent (no statement here
holds a literal ``?`` or ``%``). What really differs stays in each backend's module: the schema
and its migrations, the connection, the claim (``FOR UPDATE SKIP LOCKED`` on Postgres), the
rate-limit count (other hosts' sends on Postgres) and how a collapse's transaction is held.
No I/O of its own: every query goes through the backend's ``_execute`` and ``_fetchall``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from shared.notify.collapse import PendingAlert, PlannedSummary, WaitingSummary
from shared.notify.message import MAX_SILENCE_S, ROW_COLUMNS, Message, OutboxRow, Silence

__all__ = [
    "ABSORB",
    "COLLAPSE",
    "FOLDED_ALERTS",
    "PENDING_ALERTS",
    "REGROUP",
    "RELEASE",
    "SUMMARY_INSERT",
    "WAITING_SUMMARIES",
    "OutboxQueries",
    "pending_alerts",
    "summary_params",
    "to_pyformat",
    "waiting_summaries",
]

# A collapse, inside the backend's transaction (``shared.notify.collapse`` decides what). -----
PENDING_ALERTS = (
    f"SELECT {ROW_COLUMNS}, held FROM outbox"
    " WHERE status = 'pending' AND kind = 'alert' ORDER BY id"
)
WAITING_SUMMARIES = (
    "SELECT id, sink, channel, attempts, next_attempt_at FROM outbox"
    " WHERE status = 'pending' AND kind = 'summary' ORDER BY id"
)
#: the alerts folded into the waiting summaries ``{marks}`` (one placeholder per summary id)
FOLDED_ALERTS = (
    f"SELECT {ROW_COLUMNS}, summary_id FROM outbox"
    " WHERE kind = 'alert' AND summary_id IN ({marks}) ORDER BY id"
)
RELEASE = "UPDATE outbox SET held = 0 WHERE id = ?"
SUMMARY_INSERT = (
    "INSERT INTO outbox(dedup_key, sink, channel, kind, text, payload,"
    " daemon, created_at, attempts, next_attempt_at)"
    " VALUES (?, ?, ?, 'summary', ?, '{}', 'outbox', ?, ?, ?)"
)  # the new id: the cursor's lastrowid (SQLite), or with `` RETURNING id`` (Postgres)
# Every update is guarded by the status the plan saw, so a row changed since is left alone.
COLLAPSE = (
    "UPDATE outbox SET status = 'collapsed', summary_id = ?, held = 0"
    " WHERE id = ? AND status = 'pending'"
)
REGROUP = "UPDATE outbox SET summary_id = ? WHERE id = ? AND kind = 'alert'"
ABSORB = (
    "UPDATE outbox SET status = 'collapsed', summary_id = ? WHERE id = ? AND status = 'pending'"
)


def to_pyformat(sql: str) -> str:
    """``sql`` with psycopg's ``%s`` placeholders for ``?``."""
    return sql.replace("?", "%s")


def summary_params(summary: PlannedSummary) -> tuple[Any, ...]:
    """The parameters of ``SUMMARY_INSERT`` for ``summary``."""
    return (
        summary.dedup_key,
        summary.sink,
        summary.channel,
        summary.text,
        summary.created_at,
        summary.attempts,
        summary.next_attempt_at,
    )


def pending_alerts(raw: Sequence[Sequence[Any]]) -> list[PendingAlert]:
    """The rows of ``PENDING_ALERTS``."""
    return [PendingAlert(OutboxRow.from_db(r), bool(r[10])) for r in raw]


def waiting_summaries(
    raw: Sequence[Sequence[Any]], folded: Sequence[Sequence[Any]]
) -> list[WaitingSummary]:
    """The rows of ``WAITING_SUMMARIES`` (those kept) with the ``FOLDED_ALERTS`` of each."""
    alerts: dict[int, list[OutboxRow]] = {}
    for r in folded:
        alerts.setdefault(int(r[10]), []).append(OutboxRow.from_db(r))
    return [
        WaitingSummary(
            id=int(s_id),
            sink=str(sink),
            channel=str(channel),
            attempts=int(attempts),
            next_attempt_at=float(next_at),
            alerts=tuple(alerts.get(int(s_id), ())),
        )
        for s_id, sink, channel, attempts, next_at in raw
    ]


class OutboxQueries:
    """The ``OutboxStore`` operations whose SQL is the same on both backends. A backend sets
    ``placeholder`` and ``silence_table`` and provides ``now``, ``mono``, ``boot``,
    ``_execute`` and ``_fetchall``; it lists this class after the base that defines those."""

    #: ``?`` (sqlite3) or ``%s`` (psycopg)
    placeholder: ClassVar[str] = "?"
    #: where the one silence row lives
    silence_table: ClassVar[str] = "silence"
    boot: str

    if TYPE_CHECKING:

        def now(self) -> float: ...
        def mono(self) -> float: ...
        async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
        async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else to_pyformat(sql)

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._execute(self._q(sql), params)

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._fetchall(self._q(sql), params)

    # messages ----------------------------------------------------------------------------
    async def enqueue(self, msg: Message) -> bool:
        """Store ``msg`` durably; False if its dedup key was already enqueued (a no-op; on a
        shared outbox, by any host)."""
        count = await self._write(
            "INSERT INTO outbox(dedup_key, sink, channel, kind, text, payload, daemon,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING",
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
        rows = await self._read(
            "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
        )
        return int(rows[0][0])

    async def counts(self) -> dict[str, int]:
        rows = await self._read("SELECT status, count(*) FROM outbox GROUP BY status")
        return {str(s): int(n) for s, n in rows}

    # silence -----------------------------------------------------------------------------
    async def silence(self) -> Silence | None:
        rows = await self._read(
            "SELECT until, reason, set_at, set_mono, set_boot"
            f" FROM {self.silence_table} WHERE id = 1"
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
        await self._write(
            f"INSERT INTO {self.silence_table}(id, until, reason, set_at, set_mono, set_boot)"
            " VALUES (1, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET until = excluded.until, reason = excluded.reason,"
            " set_at = excluded.set_at, set_mono = excluded.set_mono,"
            " set_boot = excluded.set_boot",
            (silence.until, reason, now, silence.set_mono, silence.boot),
        )
        return silence

    async def clear_silence(self) -> bool:
        return await self._write(f"DELETE FROM {self.silence_table} WHERE id = 1") == 1

    # sender operations -------------------------------------------------------------------
    async def requeue_abandoned(self) -> int:
        """Rows whose sender's claim lapsed (it died mid-send) become pending again."""
        return await self._write(
            "UPDATE outbox SET status = 'pending', claimed_by = NULL"
            " WHERE status = 'sending' AND claimed_until < ?",
            (self.now(),),
        )

    async def hold_alerts(self) -> int:
        return await self._write(
            "UPDATE outbox SET held = 1 WHERE status = 'pending' AND kind = 'alert' AND held = 0"
        )

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
        rows = await self._read(
            f"SELECT {ROW_COLUMNS} FROM ("
            f" SELECT {ROW_COLUMNS}, ROW_NUMBER() OVER"
            " (PARTITION BY sink, channel ORDER BY id) AS rn FROM outbox"
            f" WHERE status = 'pending' AND kind IN {kinds}"
            " AND (next_attempt_at <= ? OR next_attempt_at > ?)"
            ") AS due WHERE rn <= ? ORDER BY id LIMIT ?",
            (now, horizon, cap, limit),
        )
        return [OutboxRow.from_db(r) for r in rows]

    async def mark_sent(self, row_id: int, owner: str) -> None:
        await self._write(
            "UPDATE outbox SET status = 'sent', sent_at = ?, sent_mono = ?, sent_boot = ?,"
            " last_error = NULL WHERE id = ? AND claimed_by = ?",
            (self.now(), self.mono(), self.boot, row_id, owner),
        )

    async def mark_retry(self, row_id: int, owner: str, delay_s: float, error: str) -> None:
        await self._write(
            "UPDATE outbox SET status = 'pending', claimed_by = NULL, next_attempt_at = ?,"
            " last_error = ? WHERE id = ? AND claimed_by = ?",
            (self.now() + delay_s, error[:500], row_id, owner),
        )

    async def mark_dead(self, row_id: int, owner: str, error: str) -> None:
        await self._write(
            "UPDATE outbox SET status = 'dead', last_error = ? WHERE id = ? AND claimed_by = ?",
            (error[:500], row_id, owner),
        )

    async def sent_at(self, dedup_keys: Sequence[str]) -> dict[str, float]:
        """When each of these keys was delivered (keys not yet sent are absent)."""
        out: dict[str, float] = {}
        for start in range(0, len(dedup_keys), 500):
            chunk = list(dedup_keys[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = await self._read(
                "SELECT dedup_key, sent_at FROM outbox WHERE status = 'sent'"
                f" AND dedup_key IN ({marks})",
                chunk,
            )
            out.update({str(k): float(t) for k, t in rows})
        return out

    async def prune(self, older_than_s: float) -> int:
        return await self._write(
            "DELETE FROM outbox WHERE status IN ('sent', 'collapsed', 'dead')"
            " AND coalesce(sent_at, created_at) < ?"
            # A collapsed alert stays while its summary is still undelivered.
            " AND NOT (status = 'collapsed' AND summary_id IS NOT NULL AND summary_id IN"
            " (SELECT id FROM outbox WHERE status IN ('pending', 'sending')))",
            (self.now() - older_than_s,),
        )

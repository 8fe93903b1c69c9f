"""email-inbox.db adapter: reads new mail, records decisions, tracks deferred pushes.

``emails`` belongs to the ingesting agent (email-agent.js): the reactor creates it only when
missing (a fresh machine) and never alters it; its own bookkeeping lives in its own tables,
``reactor_decisions`` (the source of truth: an email is decided once, ever),
``reactor_llm_attempts``, ``reactor_stale_alerts`` and ``reactor_poison_rows`` (rows that
cannot be typed, see ``rows.py``: set aside with their reason, released once they read clean).
The live layout is checked against the ``EMAILS`` contract at open and whenever
``PRAGMA schema_version`` moves: a missing required column raises ``ContractViolation``; a
missing optional one reads as NULL (the feature it feeds is degraded, see ``report``).
``created_at`` is read in every form the Node tools write (SQLite text, ISO with ``T`` and ``Z``
or an offset, epoch seconds or milliseconds): rows in the canonical form compare as text
(indexed), the others through ``fleet_ts`` (registered on the connection,
``shared.timestamps``); a value nobody can read counts as new mail (never lost).
Every read types its rows one by one; text that is not UTF-8 never raises (nor reaches a
message). Nothing here drops or rewrites foreign data.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from daemons.email_reactor.actions import TASK_ACTIONS, EmailAction
from daemons.email_reactor.contracts import EMAILS
from daemons.email_reactor.records import (
    Decision,
    DigestRow,
    Recorded,
    StoredDecision,
    stored,
)
from daemons.email_reactor.rows import (
    EMAIL_COLUMNS,
    InboxRows,
    PoisonRow,
    decode_text,
    sql_timestamp,
    text_or_none,
    typed_row,
    typed_rows,
)
from daemons.email_reactor.rules import Email, domain_of
from shared.schema_contract import ContractReport, ContractUse, ContractViolation, check_contract
from shared.sqlite import (
    AsyncDatabase,
    apply_migrations,
    connect_sync,
    table_columns,
)
from shared.timestamps import CANONICAL_GLOB

__all__ = [
    "Decision",
    "DigestRow",
    "InboxRows",
    "InboxStore",
    "PoisonRow",
    "Recorded",
    "StoredDecision",
    "sql_timestamp",
]

COMPONENT = "email_reactor"


def _migration_1(conn: sqlite3.Connection) -> None:
    # ``emails`` belongs to email-agent.js: created here only on a fresh machine (no table at
    # all), with the columns and indexes email-inbox.js defines. An existing table is never
    # altered; `fleet db migrate` shows and (with --apply) makes what the contract lacks.
    if not table_columns(conn, "emails"):
        conn.execute(
            "CREATE TABLE emails ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " account TEXT NOT NULL DEFAULT '',"
            " from_addr TEXT NOT NULL DEFAULT '',"
            " from_name TEXT DEFAULT '',"
            " to_addr TEXT DEFAULT '',"
            " reply_to TEXT DEFAULT '',"
            " subject TEXT DEFAULT '',"
            " body_text TEXT DEFAULT '',"
            " attachments TEXT DEFAULT '[]',"
            " headers TEXT DEFAULT '{}',"
            " classification TEXT DEFAULT '',"
            " status TEXT NOT NULL DEFAULT 'new',"
            " created_at TEXT NOT NULL DEFAULT (datetime('now')),"
            " mc_task_id INTEGER,"
            " partner_tier INTEGER DEFAULT 0,"
            " reactor_pushed_at TEXT)"
        )
        for _name, sql in EMAILS.indexes:
            conn.execute(sql)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reactor_decisions ("
        " email_id INTEGER PRIMARY KEY,"
        " action TEXT NOT NULL,"
        " reason TEXT NOT NULL DEFAULT '',"
        " source TEXT NOT NULL DEFAULT '',"
        " mc_task_id INTEGER,"
        " decided_at TEXT NOT NULL,"
        " sender_hash TEXT NOT NULL DEFAULT '',"
        " push_key TEXT,"
        " push_channel TEXT,"
        " push_text TEXT,"
        " push_enqueued_at TEXT,"
        " audited INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_reactor_decisions_push ON reactor_decisions"
        "(push_enqueued_at) WHERE push_key IS NOT NULL"
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS idx_reactor_decisions_unaudited ON reactor_decisions"
        "(audited) WHERE audited = 0"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reactor_llm_attempts ("
        " email_id INTEGER PRIMARY KEY, attempts INTEGER NOT NULL, last_error TEXT,"
        " updated_at TEXT NOT NULL)"
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reactor_stale_alerts ("
        " email_id INTEGER PRIMARY KEY, alerted_at TEXT NOT NULL)"
    )


def _migration_3(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reactor_poison_rows ("
        " email_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL,"
        " first_seen TEXT NOT NULL)"
    )


MIGRATIONS = [_migration_1, _migration_2, _migration_3]


#: an unreadable created_at sorts after every real one: such mail is still triaged (never
#: lost), never counted stale, and never moves the backlog's oldest age
_UNREADABLE_TS = "9999-12-31 23:59:59"


def _ts(column: str) -> str:
    """SQL for ``column`` as canonical UTC text, whatever form another tool wrote. Text goes
    to ``fleet_ts`` as a BLOB: sqlite3 fails the whole query on an argument not UTF-8."""
    raw = f"CASE WHEN typeof({column}) = 'text' THEN CAST({column} AS BLOB) ELSE {column} END"
    return (
        f"(CASE WHEN typeof({column}) = 'text' AND {column} GLOB '{CANONICAL_GLOB}'"
        f" THEN {column} ELSE coalesce(fleet_ts({raw}), '{_UNREADABLE_TS}') END)"
    )


_CREATED = _ts("e.created_at")


class InboxStore(AsyncDatabase):
    label = "inbox store"

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        super().__init__(path, busy_timeout_ms=busy_timeout_ms, attempts=6)
        self._use = ContractUse(path, EMAILS, "email-reactor")
        self.report: ContractReport | None = None
        self._cookie = -1
        self._col: dict[str, str] = {}
        self._select = ""
        self._new_where = ""
        self._has_decisions = False
        self._has_poison = False
        self._not_poison = ""

    async def open(self, *, migrate: bool = True) -> InboxStore:
        """Open (``migrate``: create what is missing on a fresh machine and the reactor's own
        tables; False: read only). Raises ContractViolation when ``emails`` cannot be used."""

        def _prepare() -> tuple[ContractReport, bool, bool]:
            conn = connect_sync(
                self.path, busy_timeout_ms=self._busy_timeout_ms, readonly=not migrate
            )
            try:
                if migrate:
                    apply_migrations(conn, COMPONENT, MIGRATIONS)
                decided = bool(table_columns(conn, "reactor_decisions"))
                poison = bool(table_columns(conn, "reactor_poison_rows"))
                return check_contract(conn, self._use), decided, poison
            finally:
                conn.close()

        report, has_decisions, self._has_poison = await asyncio.to_thread(_prepare)
        if not report.ok:
            raise ContractViolation(report)
        if self._has_poison:  # else: a --dry-run before the first real run
            self._not_poison = (
                " AND NOT EXISTS (SELECT 1 FROM reactor_poison_rows p WHERE p.email_id = e.id)"
            )
        self._apply(report, has_decisions)
        await self._connect(readonly=not migrate)
        self._set_text_factory(decode_text)  # before any read: see rows.py
        await self._create_function("fleet_ts", 1, sql_timestamp, deterministic=True)
        self._cookie = await self._schema_cookie()
        return self

    def _apply(self, report: ContractReport, has_decisions: bool) -> None:
        self.report = report
        names = report.names
        self._col = {c: f"e.{c}" if c in names else "NULL" for c in EMAIL_COLUMNS}
        self._select = ", ".join(f"e.{c}" if c in names else f"NULL AS {c}" for c in EMAIL_COLUMNS)
        self._new_where = (
            f" FROM emails e WHERE e.status = 'new' AND {_CREATED} >= ?"
            f" AND coalesce({self._col['classification']}, '') != 'OWN'{self._not_poison}"
        )
        if has_decisions:  # else: a --dry-run before the first real run, nothing decided yet
            self._new_where += (
                " AND NOT EXISTS (SELECT 1 FROM reactor_decisions d WHERE d.email_id = e.id)"
            )
        self._has_decisions = has_decisions

    async def _schema_cookie(self) -> int:
        rows = await self._fetchall("PRAGMA schema_version")
        return int(rows[0][0]) if rows else 0

    async def recheck(self) -> ContractReport | None:
        """Re-read the contract when the schema moved since the last check: the new report
        (the caller says what changed), or None when nothing moved. Raises ContractViolation
        (and checks again next time) when ``emails`` became unusable."""
        cookie = await self._schema_cookie()
        if cookie == self._cookie:
            return None

        def _check() -> ContractReport:
            conn = connect_sync(self.path, busy_timeout_ms=self._busy_timeout_ms, readonly=True)
            try:
                return check_contract(conn, self._use)
            finally:
                conn.close()

        report = await asyncio.to_thread(_check)
        if not report.ok:
            raise ContractViolation(report)
        self._apply(report, self._has_decisions)
        self._cookie = cookie
        return report

    async def new_emails(self, since: str, limit: int) -> InboxRows:
        """Undecided new mail created at or after ``since`` (SQLite UTC text), oldest first,
        and the rows among them that cannot be typed (not already set aside)."""
        rows = await self._fetchall(
            f"SELECT {self._select}{self._new_where} ORDER BY {_CREATED}, e.id LIMIT ?",
            (since, limit),
        )
        return typed_rows(rows)

    async def email(self, email_id: int) -> Email | PoisonRow | None:
        rows = await self._fetchall(
            f"SELECT {self._select} FROM emails e WHERE e.id = ?", (email_id,)
        )
        return typed_row(rows[0]) if rows else None

    # rows set aside ------------------------------------------------------------------------
    async def set_aside(self, rows: Sequence[PoisonRow], at: str) -> list[PoisonRow]:
        """Record rows that cannot be typed; return those not recorded before."""
        new = []
        for row in rows:
            if await self._write(
                "INSERT OR IGNORE INTO reactor_poison_rows(email_id, kind, reason, first_seen)"
                " VALUES (?, ?, ?, ?)",
                (row.email_id, row.kind, row.reason, at),
            ):
                new.append(row)
        return new

    async def set_aside_since(self, email_id: int) -> str | None:
        """When this row was set aside (None: it is not)."""
        if not self._has_poison:
            return None
        rows = await self._fetchall(
            "SELECT first_seen FROM reactor_poison_rows WHERE email_id = ?", (email_id,)
        )
        return str(rows[0][0]) if rows else None

    async def release_fixed(self, limit: int = 100) -> list[int]:
        """Release the rows set aside that now type cleanly (someone fixed them): they are
        read as new mail again. Returns their ids."""
        rows = await self._fetchall(
            f"SELECT {self._select} FROM emails e JOIN reactor_poison_rows p"
            " ON p.email_id = e.id ORDER BY p.email_id LIMIT ?",
            (limit,),
        )
        fixed = [int(row[0]) for row in rows if not isinstance(typed_row(row), PoisonRow)]
        for email_id in fixed:
            await self._write("DELETE FROM reactor_poison_rows WHERE email_id = ?", (email_id,))
        return fixed

    async def backlog(self, since: str) -> tuple[int, str | None]:
        """How many undecided new mails, and the oldest one's created_at (canonical text)."""
        rows = await self._fetchall(f"SELECT count(*), min({_CREATED}){self._new_where}", (since,))
        oldest = rows[0][1]
        return int(rows[0][0]), None if oldest in (None, _UNREADABLE_TS) else oldest

    async def own_recipients(self) -> set[str]:
        """Every address we ever sent mail to (classification 'OWN'), lower-cased."""
        cls, to = self._col["classification"], self._col["to_addr"]
        if "NULL" in (cls, to):
            return set()  # degraded: no OWN mail to learn from (see report)
        rows = await self._fetchall(
            f"SELECT {to} FROM emails e WHERE {cls} = 'OWN' AND {to} IS NOT NULL"
        )
        out: set[str] = set()
        for (value,) in rows:
            to_addr = text_or_none(value)
            for part in (to_addr or "").replace(";", ",").split(","):
                addr = part.strip()
                if "<" in addr and ">" in addr:
                    addr = addr[addr.index("<") + 1 : addr.index(">")]
                if "@" in addr:
                    out.add(addr.strip().lower())
        return out

    async def record(
        self,
        email: Email,
        decision: Decision,
        *,
        mc_task_id: int | None,
        decided_at: str,
        sender_hash: str,
        push_key: str | None,
    ) -> Recorded:
        """Commit a decision (and write the task id back to ``emails``) in one transaction.
        ``inserted`` False: the email was already decided (nothing changes). ``push`` False:
        no push is owed, also when the ingest path set ``reactor_pushed_at`` since the row
        was read (it pushed the mail itself; a second push would double it)."""

        async def _do(db: aiosqlite.Connection) -> Recorded:
            key, channel, text = push_key, decision.push_channel, decision.push_text
            if key is not None:
                cur = await db.execute(
                    "SELECT 1 FROM emails WHERE id = ? AND reactor_pushed_at IS NOT NULL",
                    (email.id,),
                )
                if await cur.fetchone() is not None:
                    key = channel = text = None
            cur = await db.execute(
                "INSERT OR IGNORE INTO reactor_decisions(email_id, action, reason, source,"
                " mc_task_id, decided_at, sender_hash, push_key, push_channel, push_text)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    email.id,
                    decision.action,
                    decision.reason,
                    decision.source,
                    mc_task_id,
                    decided_at,
                    sender_hash,
                    key,
                    channel,
                    text,
                ),
            )
            inserted = cur.rowcount == 1
            if inserted and (mc_task_id is not None or decision.partner_tier):
                await db.execute(
                    "UPDATE emails SET mc_task_id = coalesce(mc_task_id, ?),"
                    " partner_tier = max(coalesce(partner_tier, 0), ?) WHERE id = ?",
                    (mc_task_id, decision.partner_tier, email.id),
                )
            await db.execute("DELETE FROM reactor_llm_attempts WHERE email_id = ?", (email.id,))
            return Recorded(inserted, inserted and key is not None)

        return await self._transaction(_do)

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        """One write (autocommit), serialized with ``record``'s transactions."""
        return await self._execute(sql, params)

    async def mark_audited(self, email_id: int) -> None:
        await self._write(
            "UPDATE reactor_decisions SET audited = 1 WHERE email_id = ?", (email_id,)
        )

    async def mark_all_audited(self, email_ids: Sequence[int]) -> None:
        async def _do(db: aiosqlite.Connection) -> None:
            await db.executemany(
                "UPDATE reactor_decisions SET audited = 1 WHERE email_id = ?",
                [(i,) for i in email_ids],
            )

        await self._transaction(_do)

    async def unaudited(self) -> list[StoredDecision]:
        rows = await self._fetchall(
            "SELECT email_id, action, reason, source, mc_task_id, decided_at, sender_hash"
            " FROM reactor_decisions WHERE audited = 0 ORDER BY email_id"
        )
        return [stored(r) for r in rows]

    async def stored_decision(self, email_id: int) -> StoredDecision | None:
        if not self._has_decisions:
            return None
        rows = await self._fetchall(
            "SELECT email_id, action, reason, source, mc_task_id, decided_at, sender_hash"
            " FROM reactor_decisions WHERE email_id = ?",
            (email_id,),
        )
        return stored(rows[0]) if rows else None

    async def deferred_pushes(self, limit: int) -> list[tuple[int, str, str, str]]:
        """(email_id, push_key, channel, text) decided but not yet enqueued, strategic
        partners' first, then oldest mail first; not those the ingest path pushed meanwhile
        (``reactor_pushed_at`` set)."""
        rows = await self._fetchall(
            "SELECT d.email_id, d.push_key, d.push_channel, d.push_text FROM reactor_decisions d"
            " JOIN emails e ON e.id = d.email_id WHERE d.push_key IS NOT NULL"
            " AND d.push_enqueued_at IS NULL AND e.reactor_pushed_at IS NULL ORDER BY"
            " CASE WHEN typeof(e.partner_tier) = 'integer' AND e.partner_tier > 0 THEN 0 ELSE 1"
            f" END, {_CREATED}, d.email_id LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), r[1], r[2], r[3]) for r in rows]

    async def mark_push_enqueued(self, email_id: int, at: str) -> None:
        await self._write(
            "UPDATE reactor_decisions SET push_enqueued_at = ? WHERE email_id = ?", (at, email_id)
        )

    async def unconfirmed_pushes(self, limit: int = 500) -> list[tuple[int, str]]:
        """Pushes enqueued whose delivery has not been written back to reactor_pushed_at."""
        rows = await self._fetchall(
            "SELECT d.email_id, d.push_key FROM reactor_decisions d JOIN emails e"
            " ON e.id = d.email_id WHERE d.push_enqueued_at IS NOT NULL"
            " AND e.reactor_pushed_at IS NULL LIMIT ?",
            (limit,),
        )
        return [(int(r[0]), r[1]) for r in rows]

    async def mark_pushed(self, email_id: int, at: str) -> None:
        await self._write(
            "UPDATE emails SET reactor_pushed_at = ? WHERE id = ? AND reactor_pushed_at IS NULL",
            (at, email_id),
        )

    async def llm_attempt(self, email_id: int, error: str, at: str) -> int:
        """Count one more unreachable-LLM cycle for this email; return the total."""
        await self._write(
            "INSERT INTO reactor_llm_attempts(email_id, attempts, last_error, updated_at)"
            " VALUES (?, 1, ?, ?) ON CONFLICT(email_id) DO UPDATE SET"
            " attempts = attempts + 1, last_error = excluded.last_error,"
            " updated_at = excluded.updated_at",
            (email_id, error[:200], at),
        )
        rows = await self._fetchall(
            "SELECT attempts FROM reactor_llm_attempts WHERE email_id = ?", (email_id,)
        )
        return int(rows[0][0])

    async def cutover(self, before: str, decided_at: str) -> int:
        """Decide every undecided new mail created before ``before`` as skipped_cutover."""
        return await self._write(
            "INSERT OR IGNORE INTO reactor_decisions(email_id, action, reason, source,"
            " decided_at, audited) SELECT e.id, ?, 'cutover', 'cutover', ?, 0"
            f" FROM emails e WHERE {_CREATED} < ? AND e.status = 'new'"
            f" AND coalesce({self._col['classification']}, '') != 'OWN' AND NOT EXISTS"
            " (SELECT 1 FROM reactor_decisions d WHERE d.email_id = e.id)",
            (EmailAction.SKIPPED_CUTOVER, decided_at, before),
        )

    async def stale_emails(self, since: str, cutoff: str, limit: int = 1000) -> InboxRows:
        """Mail created between ``since`` and ``cutoff`` (SQLite UTC text) that nobody acts
        on: an ACTION email still new and undecided, or a partner email (``partner_tier`` > 0)
        with neither a task nor a push (unless quarantined or skipped at cutover). Oldest
        first, already-alerted ones included (see ``stale_alerted``); rows set aside are not."""
        rows = await self._fetchall(
            f"SELECT {self._select} FROM emails e"
            " LEFT JOIN reactor_decisions d ON d.email_id = e.id"
            f" WHERE {_CREATED} >= ? AND {_CREATED} < ?{self._not_poison}"
            f" AND coalesce({self._col['classification']}, '') != 'OWN' AND ("
            " (d.email_id IS NULL AND e.status = 'new'"
            f"  AND {self._col['classification']} = 'ACTION')"
            " OR (coalesce(e.partner_tier, 0) > 0 AND e.mc_task_id IS NULL"
            "     AND e.reactor_pushed_at IS NULL"
            "     AND coalesce(d.action, '') NOT IN (?, ?)))"
            f" ORDER BY {_CREATED}, e.id LIMIT ?",
            (
                since,
                cutoff,
                EmailAction.SECURITY_QUARANTINE,
                EmailAction.SKIPPED_CUTOVER,
                limit,
            ),
        )
        return typed_rows(rows)

    async def stale_alerted(self, email_ids: Sequence[int]) -> set[int]:
        """Which of these emails already had their stale message."""
        if not email_ids:
            return set()
        marks = ", ".join("?" for _ in email_ids)
        rows = await self._fetchall(
            f"SELECT email_id FROM reactor_stale_alerts WHERE email_id IN ({marks})",
            tuple(email_ids),
        )
        return {int(r[0]) for r in rows}

    async def mark_stale_alerted(self, email_id: int, at: str) -> None:
        await self._write(
            "INSERT OR IGNORE INTO reactor_stale_alerts(email_id, alerted_at) VALUES (?, ?)",
            (email_id, at),
        )

    async def digest_candidates(
        self, since: str, cutoff: str
    ) -> tuple[list[DigestRow], list[PoisonRow]]:
        """ACTION mail from partners, or mail decided linked/llm_yes (``TASK_ACTIONS``),
        created between ``since`` and ``cutoff``, with no later OWN mail to that sender; and
        the rows among them that cannot be typed."""
        rows = await self._fetchall(
            f"SELECT {self._select}, {_CREATED}"
            " FROM emails e LEFT JOIN reactor_decisions d ON d.email_id = e.id"
            f" WHERE {_CREATED} >= ? AND {_CREATED} <= ?{self._not_poison}"
            f" AND (({self._col['classification']} = 'ACTION'"
            "       AND coalesce(e.partner_tier, 0) > 0)"
            f"      OR d.action IN ({', '.join('?' for _ in TASK_ACTIONS)}))"
            f" ORDER BY coalesce(e.partner_tier, 0) = 0, {_CREATED}",
            (since, cutoff, *TASK_ACTIONS),
        )
        typed = typed_rows([r[:-1] for r in rows])
        if not typed.emails:
            return [], typed.poison
        created = {int(r[0]): str(r[-1]) for r in rows}
        cls, to = self._col["classification"], self._col["to_addr"]
        replies = (
            []
            if "NULL" in (cls, to)
            else await self._fetchall(
                f"SELECT lower({to}), {_CREATED} FROM emails e WHERE {cls} = 'OWN'"
                f" AND {_CREATED} >= ?",
                (since,),
            )
        )
        answers = [(text_or_none(to) or "", ts) for to, ts in replies]
        out = []
        for e in typed.emails:
            sender, at = e.from_addr.lower(), created[e.id]
            if not any(sender and sender in to and ts > at for to, ts in answers):
                domain = domain_of(e.from_addr)
                out.append(
                    DigestRow(e.id, e.account, e.from_name, domain, e.subject, at, e.partner_tier)
                )
        return out, typed.poison

"""The HiveMind notification sink: delivers outbox rows with ``sink="hivemind"`` as a row in
hivemind.db ``messages`` (``ts, source, topic, severity, body``) or, when ``hivemind_url`` is
set, as a JSON POST to it.

Settings come from ``[blueprint_watchdog]`` (``hivemind_db``, ``hivemind_url``,
``hivemind_token``/``hivemind_token_file``, ``hivemind_timeout_s``). ``messages`` belongs to
HiveMind: it is created only when missing, and an existing one is never altered. Each send reads
its live schema (PRAGMA table_info), fills the columns of ours it has, and refuses (permanent
``schema_mismatch``, naming the table and columns) when it lacks ``body`` or has a NOT NULL
column without default that the fleet does not fill. The fleet's own bookkeeping, the table
``fleet_hivemind_sent`` (dedup key -> rowid, written in the message's transaction), makes a row
re-sent after a crash land once. An insert that changed no row (a conflicting row, a trigger
that ignores it) is a failed send, never a sent one. The DB is replicated from the primary, so
on a standby the DB mode reports itself unavailable and the outbox holds its rows. Failures
raise ``SinkError``: retryable for a locked/corrupt DB, connection errors, timeouts,
408/429/5xx and auth errors (a rotated token must hold messages, not kill them); permanent for
other 4xx and for a table the fleet cannot write. It must never log the token.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from shared.notify import OutboxRow, SinkError
from shared.schema_contract import ContractUse, check_contract
from shared.shared_tables import HIVEMIND_MESSAGES

__all__ = ["COMPONENT", "HiveMindSink"]

COMPONENT = "hivemind_sink"
DEDUP_COLUMN = "fleet_dedup_key"  # on tables an earlier fleet created or extended
SEVERITIES = frozenset({"info", "warning", "critical"})


def _migration_1(conn: sqlite3.Connection) -> None:
    # Only when HiveMind has no messages table at all (a fresh machine). An earlier version
    # also added columns and an index to an existing table; that is HiveMind's schema, not ours.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " ts TEXT NOT NULL,"
        " source TEXT NOT NULL,"
        " topic TEXT NOT NULL,"
        " severity TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " fleet_dedup_key TEXT)"
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS fleet_hivemind_sent ("
        " dedup_key TEXT PRIMARY KEY, message_rowid INTEGER NOT NULL, sent_at TEXT NOT NULL)"
    )


MIGRATIONS = [_migration_1, _migration_2]


class _SchemaMismatch(Exception):
    """``messages`` is laid out so that the fleet cannot write a complete row."""


def _insert_plan(conn: sqlite3.Connection, db: Path) -> tuple[str, ...]:
    """The columns of ``messages`` to fill, checked against the shared contract
    (``shared.shared_tables.HIVEMIND_MESSAGES``); raise ``_SchemaMismatch`` naming the columns
    when the table lacks a required one or has a NOT NULL column without default that the fleet
    does not fill."""
    report = check_contract(conn, ContractUse(db, HIVEMIND_MESSAGES, COMPONENT))
    if not report.present:
        raise _SchemaMismatch("hivemind.db has no messages table")
    if not report.ok:
        raise _SchemaMismatch("; ".join(report.problems()))
    return tuple(c for c in HIVEMIND_MESSAGES.inserts or () if c in report.names)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def message_fields(row: OutboxRow) -> dict[str, str]:
    """What a HiveMind message says: ``ts`` (when the alert was raised, ISO-8601 UTC),
    ``source`` (the daemon), ``topic`` (the row's channel), ``severity``, ``body``."""
    severity = str(row.payload.get("severity", "warning"))
    return {
        "ts": _iso(row.created_at),
        "source": str(row.payload.get("source") or row.daemon or "alai-fleet"),
        "topic": row.channel,
        "severity": severity if severity in SEVERITIES else "warning",
        "body": row.text,
        "dedup_key": row.dedup_key,
    }


class HiveMindSink:
    name = "hivemind"

    def __init__(
        self,
        *,
        db: Path | None,
        url: str = "",
        token: str = "",
        timeout_s: float = 10.0,
        writable: bool = True,
    ) -> None:
        self._db = db
        self._url = url
        self._token = token
        self._timeout_s = timeout_s
        self._writable = writable
        self._migrated = False
        self._client: Any = None

    @property
    def mode(self) -> str:
        return "http" if self._url else "db"

    @property
    def available(self) -> bool:
        if self._url:
            return True
        return self._db is not None and self._writable

    async def send(self, row: OutboxRow) -> None:
        if self._url:
            await self._post(row)
            return
        if not self.available:
            raise SinkError("not_configured", detail="HiveMind DB is not writable on a standby")
        await asyncio.to_thread(self._insert, row)

    # database ------------------------------------------------------------------------------
    def _insert(self, row: OutboxRow) -> None:
        from shared.sqlite import apply_migrations, connect_sync, is_busy, transaction_sync

        assert self._db is not None
        fields = message_fields(row)
        try:
            conn = connect_sync(self._db, busy_timeout_ms=3000)
        except (sqlite3.Error, OSError) as exc:
            raise SinkError("db_error", detail=f"cannot open {self._db}: {exc}") from None
        try:
            if not self._migrated:
                apply_migrations(conn, COMPONENT, MIGRATIONS)
                self._migrated = True
            with transaction_sync(conn):
                self._insert_once(conn, fields)
        except _SchemaMismatch as exc:
            raise SinkError(
                "schema_mismatch", permanent=True, detail=f"{self._db}: {exc}"
            ) from None
        except sqlite3.IntegrityError as exc:
            # A UNIQUE/CHECK/NOT NULL constraint of HiveMind's: the same row fails every time.
            raise SinkError(
                "not_written", permanent=True, detail=f"{self._db} messages: {exc}"
            ) from None
        except sqlite3.Error as exc:
            reason = "db_busy" if is_busy(exc) else "db_error"
            raise SinkError(reason, detail=f"{self._db}: {exc}") from None
        finally:
            conn.close()

    def _insert_once(self, conn: sqlite3.Connection, fields: dict[str, str]) -> None:
        """Write one message unless its dedup key was written before (inside a transaction)."""
        key = fields["dedup_key"]
        if conn.execute("SELECT 1 FROM fleet_hivemind_sent WHERE dedup_key = ?", (key,)).fetchone():
            return
        assert self._db is not None
        columns = _insert_plan(conn, self._db)
        if (
            DEDUP_COLUMN in columns
            and conn.execute(f"SELECT 1 FROM messages WHERE {DEDUP_COLUMN} = ?", (key,)).fetchone()
        ):
            return  # written by a version before the fleet_hivemind_sent table
        values = [key if c == DEDUP_COLUMN else fields[c] for c in columns]
        cur = conn.execute(
            f"INSERT INTO messages({', '.join(columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})",
            values,
        )
        if cur.rowcount != 1:  # e.g. a BEFORE INSERT trigger that RAISE(IGNORE)s it
            raise SinkError(
                "not_written",
                permanent=True,
                detail=f"{self._db} messages: the insert changed no row",
            )
        conn.execute(
            "INSERT INTO fleet_hivemind_sent(dedup_key, message_rowid, sent_at) VALUES (?, ?, ?)",
            (key, cur.lastrowid, _iso(time.time())),
        )

    # HTTP ----------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout_s), follow_redirects=False
            )
        return self._client

    async def _post(self, row: OutboxRow) -> None:
        import httpx

        headers = {"Content-Type": "application/json", "Idempotency-Key": row.dedup_key}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = await asyncio.wait_for(
                self._get_client().post(self._url, json=message_fields(row), headers=headers),
                timeout=self._timeout_s + 5,
            )
        except (TimeoutError, httpx.TimeoutException):
            raise SinkError("timeout", detail=f"no answer within {self._timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise SinkError("connection", detail=type(exc).__name__) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 429:
            raise SinkError("rate_limited", retry_after_s=_retry_after(response.headers))
        if status in (401, 403):
            raise SinkError("auth", detail=f"HTTP {status}")
        if status == 408 or status >= 500:
            raise SinkError("server_error", detail=f"HTTP {status}")
        raise SinkError("rejected", permanent=True, detail=f"HTTP {status}")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

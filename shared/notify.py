"""Notifications: a durable SQLite outbox with dedup keys, and the sender that drains it.

Daemons never talk to Slack directly: they ``enqueue`` a Message (a dedup key makes a repeat a
no-op) and an ``OutboxSender`` delivers it. Rows are claimed by compare-and-set with a lease, so
any number of senders on one host share the outbox without sending a row twice; a sender that
dies mid-send leaves its row to be retried when the lease lapses (the one duplicate a crash can
cause). Policy lives in small functions of data and ``now``: stale or silenced alerts collapse
into one summary per channel, bursts collapse, each channel is rate limited, and #ceo pushes
are never silenced. Transports raise one ``SinkError`` with a ``permanent`` flag. Nothing here
may drop a message silently: every row ends as sent, collapsed (into a sent summary) or dead
(permanent error, counted and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.sections import NotifySection, SlackSection
from shared.sqlite import AsyncDatabase, apply_migrations, connect_sync, retry_busy_async

__all__ = [
    "Message",
    "NotifyMetrics",
    "Outbox",
    "OutboxRow",
    "OutboxSender",
    "Silence",
    "Sink",
    "SinkError",
    "SlackSink",
    "summary_text",
]

Kind = Literal["alert", "push", "summary"]
COMPONENT = "outbox"
Clock = Callable[[], float]


@dataclass(frozen=True)
class Message:
    """What a daemon asks to have delivered. ``kind="push"`` (e.g. #ceo) is never silenced
    or collapsed; ``"alert"`` is."""

    channel: str
    text: str
    dedup_key: str
    kind: Kind = "alert"
    sink: str = "slack"
    daemon: str = ""
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    dedup_key: str
    sink: str
    channel: str
    kind: str
    text: str
    payload: dict[str, Any]
    daemon: str
    created_at: float
    attempts: int


@dataclass(frozen=True)
class Silence:
    until: float
    reason: str
    set_at: float

    def active(self, now: float) -> bool:
        return self.until > now


class SinkError(Exception):
    """A delivery failed. ``permanent``: retrying cannot help (the row goes dead)."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        retry_after_s: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    name: str

    @property
    def available(self) -> bool: ...

    async def send(self, row: OutboxRow) -> None: ...

    async def close(self) -> None: ...


# Slack errors that no retry can fix. Auth errors are NOT here: a rotated token must hold
# messages until it is fixed, not kill them.
SLACK_PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_arguments",
        "user_not_found",
        "cannot_dm_bot",
        "restricted_action",
    }
)


class SlackSink:
    """chat.postMessage through slack-sdk's AsyncWebClient; retries are the outbox's job."""

    name = "slack"

    def __init__(self, settings: SlackSection) -> None:
        self._token = settings.token.get_secret_value()
        self._base_url = (
            settings.base_url if settings.base_url.endswith("/") else settings.base_url + "/"
        )
        self._timeout = int(max(1, settings.timeout_s))
        self._client: Any = None

    @property
    def available(self) -> bool:
        return bool(self._token)

    def _get_client(self) -> Any:
        if self._client is None:
            from slack_sdk.web.async_client import AsyncWebClient

            self._client = AsyncWebClient(
                token=self._token,
                base_url=self._base_url,
                timeout=self._timeout,
                retry_handlers=[],
            )
        return self._client

    async def send(self, row: OutboxRow) -> None:
        import aiohttp
        from slack_sdk.errors import SlackApiError, SlackClientError

        client = self._get_client()
        try:
            await asyncio.wait_for(
                client.chat_postMessage(channel=row.channel, text=row.text, **row.payload),
                timeout=self._timeout + 5,
            )
        except SlackApiError as exc:
            raise _slack_api_error(exc.response) from None
        except AttributeError as exc:
            # slack-sdk's validate() calls .get() on whatever the body parsed to: a text/plain
            # "OK" or a JSON list from a proxy ends here, not in SlackApiError.
            raise SinkError("bad_response", detail=f"not a Slack JSON answer ({exc})") from None
        except (TimeoutError, aiohttp.ClientError, SlackClientError, ValueError) as exc:
            # ValueError: a binary body slack-sdk refuses to read.
            raise SinkError("connection", detail=type(exc).__name__) from None

    async def close(self) -> None:
        self._client = None


def _slack_api_error(response: Any) -> SinkError:
    """Classify a failed Web API call. ``response`` is an AsyncSlackResponse whose data may be
    a dict, a str (text/plain) or a list, or the raw aiohttp response when the body claimed to
    be JSON and was not (a proxy's error page): never assume a dict."""
    raw_status = getattr(response, "status_code", None)
    if raw_status is None:
        raw_status = getattr(response, "status", None)
    status = raw_status if isinstance(raw_status, int) else 0
    data = getattr(response, "data", None)
    error = str(data.get("error", "") or "") if isinstance(data, dict) else ""
    if status == 429:
        headers = getattr(response, "headers", None) or {}
        return SinkError("rate_limited", retry_after_s=_retry_after(headers))
    if status >= 500:
        return SinkError("server_error", detail=f"HTTP {status}")
    if error in SLACK_PERMANENT_ERRORS:
        return SinkError("rejected", permanent=True, detail=error)
    if error in {"invalid_auth", "not_authed", "token_revoked", "account_inactive"}:
        return SinkError("auth", detail=error)
    if not isinstance(data, dict) or not data:
        return SinkError("bad_response", detail=f"HTTP {status}, not a Slack JSON answer")
    return SinkError("api_error", detail=error or f"HTTP {status}")


def _retry_after(headers: Any) -> float | None:
    try:
        for key in ("Retry-After", "retry-after"):
            if key in headers:
                value = headers[key]
                if isinstance(value, list):
                    value = value[0]
                return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
    return None


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "fleet_notifications_pending", "Outbox rows waiting to be delivered", registry=registry
        )
        self.sent = Counter(
            "fleet_notifications_sent", "Messages delivered by sink", ["sink"], registry=registry
        )
        self.failed = Counter(
            "fleet_notifications_failed",
            "Failed delivery attempts by sink and reason",
            ["sink", "reason"],
            registry=registry,
        )
        self.collapsed = Counter(
            "fleet_notifications_collapsed",
            "Summaries made from collapsed alerts",
            ["sink"],
            registry=registry,
        )
        self.sent.labels("slack")
        self.collapsed.labels("slack")


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


MIGRATIONS = [_migration_1]

_ROW_COLUMNS = "id, dedup_key, sink, channel, kind, text, payload, daemon, created_at, attempts"


def _to_row(r: Sequence[Any]) -> OutboxRow:
    return OutboxRow(
        id=int(r[0]),
        dedup_key=r[1],
        sink=r[2],
        channel=r[3],
        kind=r[4],
        text=r[5],
        payload=json.loads(r[6] or "{}"),
        daemon=r[7],
        created_at=float(r[8]),
        attempts=int(r[9]),
    )


def summary_text(rows: Sequence[OutboxRow], why: str, max_lines: int = 10) -> str:
    """One message standing for many alerts: count, span, and the first few lines."""
    first = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(min(r.created_at for r in rows)))
    last = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(max(r.created_at for r in rows)))
    lines = [f"[summary] {len(rows)} alerts {why} ({first} .. {last}):"]
    for row in rows[:max_lines]:
        text = row.text.splitlines()[0] if row.text else ""
        lines.append(f"• {text[:200]}")
    if len(rows) > max_lines:
        lines.append(f"…and {len(rows) - max_lines} more")
    return "\n".join(lines)


class Outbox(AsyncDatabase):
    """The host's outbox database (``[notify] outbox_db``): enqueue, silence, and the row
    operations senders use. Open with ``await open()``; ``close()`` is idempotent."""

    label = "outbox"

    def __init__(self, path: str | Path, *, clock: Clock = time.time) -> None:
        super().__init__(path)
        self._clock = clock

    async def open(self) -> Outbox:
        def _migrate() -> None:
            conn = connect_sync(self.path)
            try:
                apply_migrations(conn, COMPONENT, MIGRATIONS)
            finally:
                conn.close()

        await asyncio.to_thread(_migrate)
        await self._connect()
        return self

    def now(self) -> float:
        return self._clock()

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
        rows = await self._fetchall("SELECT until, reason, set_at FROM silence WHERE id = 1")
        if not rows:
            return None
        until, reason, set_at = rows[0]
        return Silence(float(until), str(reason), float(set_at))

    async def set_silence(self, duration_s: float, reason: str = "") -> Silence:
        now = self.now()
        silence = Silence(now + duration_s, reason, now)
        await self._execute(
            "INSERT INTO silence(id, until, reason, set_at) VALUES (1, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET until = excluded.until, reason = excluded.reason,"
            " set_at = excluded.set_at",
            (silence.until, reason, now),
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
        """Fold held, stale or bursting pending alerts into one summary per (sink, channel).

        A summary still waiting to be delivered (Slack down, rate limited) absorbs the
        channel's new pending alerts: an outage ends with one summary per channel, not one per
        burst plus stragglers. The merged summary keeps the earlier one's backoff.
        Runs as one IMMEDIATE transaction, so two senders never both summarize a row.
        Returns the ids of the summary rows created.
        """
        now = self.now()

        async def _do() -> list[int]:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                async with db.execute(
                    f"SELECT {_ROW_COLUMNS}, held FROM outbox"
                    " WHERE status = 'pending' AND kind = 'alert' ORDER BY id"
                ) as cur:
                    raw = list(await cur.fetchall())
                groups: dict[tuple[str, str], list[tuple[OutboxRow, bool]]] = {}
                for r in raw:
                    row = _to_row(r)
                    groups.setdefault((row.sink, row.channel), []).append((row, bool(r[10])))
                async with db.execute(
                    "SELECT sink, channel, id, attempts, next_attempt_at FROM outbox"
                    " WHERE status = 'pending' AND kind = 'summary' ORDER BY id"
                ) as cur:
                    waiting: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
                    for s_sink, s_channel, s_id, s_attempts, s_next in await cur.fetchall():
                        waiting.setdefault((s_sink, s_channel), []).append(
                            (int(s_id), int(s_attempts), float(s_next))
                        )
                created: list[int] = []
                for (sink, channel), members in groups.items():
                    rows = [row for row, _held in members]
                    held = [row for row, is_held in members if is_held]
                    stale = [row for row in rows if row.created_at < now - stale_alert_s]
                    earlier = waiting.get((sink, channel), [])
                    earlier_ids = [s_id for s_id, _attempts, _next in earlier]
                    attempts, next_attempt_at = 0, 0.0
                    if earlier:
                        marks = ", ".join("?" * len(earlier_ids))
                        async with db.execute(
                            f"SELECT {_ROW_COLUMNS} FROM outbox"
                            f" WHERE kind = 'alert' AND summary_id IN ({marks})",
                            earlier_ids,
                        ) as cur:
                            folded_before = [_to_row(r) for r in await cur.fetchall()]
                        fold = sorted(folded_before + rows, key=lambda row: row.id)
                        why = "delayed by an outage"
                        attempts = max(a for _id, a, _next in earlier)
                        next_attempt_at = max(n for _id, _a, n in earlier)
                    elif len(rows) > burst:
                        fold, why = rows, "arrived at once"
                    elif len(held) >= 2:
                        fold, why = held, "held during a silence"
                    elif len(stale) >= 2:
                        fold, why = stale, "delayed by an outage"
                    else:
                        if held:
                            await db.execute(
                                "UPDATE outbox SET held = 0 WHERE id = ?", (held[0].id,)
                            )
                        continue
                    ids = [row.id for row in fold]
                    # Each earlier summary is absorbed once, so its id keeps the key unique.
                    key = f"summary:{sink}:{channel}:{ids[0]}-{ids[-1]}:{len(ids)}"
                    if earlier_ids:
                        key += f":after{earlier_ids[-1]}"
                    cur2 = await db.execute(
                        "INSERT INTO outbox(dedup_key, sink, channel, kind, text, payload,"
                        " daemon, created_at, attempts, next_attempt_at)"
                        " VALUES (?, ?, ?, 'summary', ?, '{}', 'outbox', ?, ?, ?)",
                        (
                            key,
                            sink,
                            channel,
                            summary_text(fold, why),
                            now,
                            attempts,
                            next_attempt_at,
                        ),
                    )
                    summary_id = int(cur2.lastrowid or 0)
                    await db.executemany(
                        "UPDATE outbox SET status = 'collapsed', summary_id = ?, held = 0"
                        " WHERE id = ? AND status = 'pending'",
                        [(summary_id, i) for i in ids],
                    )
                    if earlier_ids:
                        marks = ", ".join("?" * len(earlier_ids))
                        await db.execute(
                            "UPDATE outbox SET summary_id = ?"
                            f" WHERE kind = 'alert' AND summary_id IN ({marks})",
                            (summary_id, *earlier_ids),
                        )
                        await db.execute(
                            "UPDATE outbox SET status = 'collapsed', summary_id = ?"
                            f" WHERE id IN ({marks}) AND status = 'pending'",
                            (summary_id, *earlier_ids),
                        )
                    created.append(summary_id)
                await db.execute("COMMIT")
                return created
            except BaseException:
                await db.execute("ROLLBACK")
                raise

        return await retry_busy_async(_do)

    async def ready(
        self, *, include_alerts: bool, limit: int, per_channel: int | None = None
    ) -> list[OutboxRow]:
        """Rows due now, oldest first; at most ``per_channel`` per (sink, channel), so one
        rate-limited channel's backlog cannot starve the others out of the batch."""
        kinds = "('alert', 'push', 'summary')" if include_alerts else "('push')"
        cap = per_channel if per_channel is not None else limit
        rows = await self._fetchall(
            f"SELECT {_ROW_COLUMNS} FROM ("
            f" SELECT {_ROW_COLUMNS}, ROW_NUMBER() OVER"
            " (PARTITION BY sink, channel ORDER BY id) AS rn FROM outbox"
            f" WHERE status = 'pending' AND kind IN {kinds} AND next_attempt_at <= ?"
            ") WHERE rn <= ? ORDER BY id LIMIT ?",
            (self.now(), cap, limit),
        )
        return [_to_row(r) for r in rows]

    async def claim(self, row_id: int, owner: str, lease_s: float) -> bool:
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
            "UPDATE outbox SET status = 'sent', sent_at = ?, last_error = NULL"
            " WHERE id = ? AND claimed_by = ?",
            (self.now(), row_id, owner),
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
        rows = await self._fetchall(
            "SELECT count(*) FROM outbox WHERE channel = ? AND sink = ? AND sent_at > ?",
            (channel, sink, self.now() - window_s),
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


def retry_delay_s(attempts: int, cap_s: float, retry_after_s: float | None = None) -> float:
    """Delay before the next try of a row that failed ``attempts`` times."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), cap_s)
    return float(min(cap_s, 2.0 ** min(attempts, 16)))


class OutboxSender:
    """Delivers outbox rows through the sinks, one ``step()`` at a time."""

    def __init__(
        self,
        outbox: Outbox,
        sinks: dict[str, Sink],
        settings: NotifySection,
        *,
        log: Any,
        metrics: NotifyMetrics | None = None,
        owner: str | None = None,
        batch: int = 50,
    ) -> None:
        self.outbox = outbox
        self.sinks = sinks
        self.settings = settings
        self.log = log
        self.metrics = metrics
        self.owner = owner or f"{os.getpid()}:{id(self):x}"
        self.batch = batch
        self._last_prune = 0.0
        self._held_notice: set[str] = set()
        self._was_silenced = False

    async def step(self) -> int:
        """Deliver what is ready now; return how many rows were attempted (0: idle)."""
        ob = self.outbox
        now = ob.now()
        await ob.requeue_abandoned()
        silence = await ob.silence()
        silenced = silence is not None and silence.active(now)
        if silenced:
            await ob.hold_alerts()
        else:
            if self._was_silenced:
                self.log.info("silence ended; summarizing held alerts")
            summaries = await ob.collapse(self.settings.stale_alert_s, self.settings.burst)
            if summaries and self.metrics:
                self.metrics.collapsed.labels("slack").inc(len(summaries))
        self._was_silenced = silenced
        attempted = 0
        sent_in_step: dict[tuple[str, str], int] = {}
        for row in await ob.ready(
            include_alerts=not silenced,
            limit=self.batch,
            per_channel=self.settings.rate_per_minute,
        ):
            sink = self.sinks.get(row.sink)
            if sink is None or not sink.available:
                if row.sink not in self._held_notice:
                    self._held_notice.add(row.sink)
                    self.log.warning("sink not configured; holding messages", sink=row.sink)
                continue
            key = (row.sink, row.channel)
            if key not in sent_in_step:
                sent_in_step[key] = await ob.sent_recently(row.sink, row.channel)
            if sent_in_step[key] >= self.settings.rate_per_minute:
                continue
            if not await ob.claim(row.id, self.owner, self.settings.send_lease_s):
                continue  # another sender took it
            attempted += 1
            try:
                await sink.send(row)
            except SinkError as exc:
                failure: SinkError | None = exc
            except Exception as exc:
                # A sink bug or an answer nobody anticipated: push the row back to be retried
                # instead of leaving it claimed and crash-looping the daemon on it.
                failure = SinkError("unexpected", detail=f"{type(exc).__name__}: {exc}")
            else:
                failure = None
            if failure is not None:
                self._record_failure(row, failure)
                if failure.permanent:
                    await ob.mark_dead(row.id, self.owner, str(failure))
                else:
                    delay = retry_delay_s(
                        row.attempts + 1, self.settings.max_backoff_s, failure.retry_after_s
                    )
                    await ob.mark_retry(row.id, self.owner, delay, str(failure))
                continue
            await ob.mark_sent(row.id, self.owner)
            sent_in_step[key] += 1
            if self.metrics:
                self.metrics.sent.labels(row.sink).inc()
            self.log.info(
                "notification sent",
                sink=row.sink,
                channel=row.channel,
                kind=row.kind,
                outbox_id=row.id,
                source=row.daemon,
            )
        if now - self._last_prune > 3600:
            self._last_prune = now
            pruned = await ob.prune(self.settings.prune_after_s)
            if pruned:
                self.log.info("outbox pruned", rows=pruned)
        if self.metrics:
            self.metrics.pending.set(await ob.pending_count())
        return attempted

    def _record_failure(self, row: OutboxRow, exc: SinkError) -> None:
        if self.metrics:
            self.metrics.failed.labels(row.sink, exc.reason).inc()
        level = self.log.error if exc.permanent else self.log.warning
        level(
            "notification failed",
            sink=row.sink,
            channel=row.channel,
            outbox_id=row.id,
            reason=exc.reason,
            permanent=exc.permanent,
            attempts=row.attempts + 1,
            error=str(exc),
        )

    async def run(self, stop: asyncio.Event, idle_s: float = 2.0) -> None:
        """Step until ``stop`` is set; sleep ``idle_s`` only when a step found nothing to do."""
        failures = 0
        while not stop.is_set():
            try:
                attempted = await self.step()
                if failures:
                    self.log.info("outbox sender recovered", failures=failures)
                failures = 0
            except (sqlite3.Error, OSError) as exc:
                failures += 1
                attempted = 0
                if failures == 1:
                    self.log.error("outbox sender failing", error=str(exc))
            delay = 0.0 if attempted else min(idle_s * (2 ** min(failures, 6)), 60.0)
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                await asyncio.sleep(0)

    async def drain(self, timeout_s: float) -> None:
        """Step until nothing is deliverable now, for at most ``timeout_s`` (``--once``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await self.step():
                return

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.close()

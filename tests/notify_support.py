"""Helpers shared by the notify tests, unit and system (this module holds no tests): an
injected clock, readers for the outbox table, message builders, and the sender rig (a real
SlackSink pointed at a base URL, its own registry and a recording log).

Kept free of sockets and processes so the unit tests can use it too.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from shared.notify import (
    Message,
    NotifyMetrics,
    OutboxRow,
    OutboxSender,
    OutboxStore,
    SlackSink,
)
from shared.sections import NotifySection, SlackSection
from tests.fakes.slack import DEFAULT_TOKEN
from tests.pg_support import PgDatabase
from tests.recording_log import RecordingLog

__all__ = [
    "T0",
    "Clock",
    "RecordingSink",
    "Rig",
    "alert",
    "drain",
    "make_rig",
    "push",
    "recording_sender",
    "row_by_key",
    "rows",
]

T0 = 1_750_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Rig:
    sender: OutboxSender
    registry: CollectorRegistry
    log: RecordingLog

    async def step(self) -> int:
        return await self.sender.step()

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    @property
    def sent(self) -> float:
        return self.sample("fleet_notifications_sent_total", sink="slack")

    @property
    def pending(self) -> float:
        return self.sample("fleet_notifications_pending")

    def failed(self, reason: str) -> float:
        return self.sample("fleet_notifications_failed_total", sink="slack", reason=reason)


def make_rig(
    outbox: OutboxStore,
    base_url: str,
    *,
    token: str = DEFAULT_TOKEN,
    owner: str = "sender-a",
    timeout_s: float = 5.0,
    **notify: Any,
) -> Rig:
    registry = CollectorRegistry()
    log = RecordingLog()
    slack = SlackSection(token=SecretStr(token), base_url=base_url, timeout_s=timeout_s)
    sender = OutboxSender(
        outbox,
        {"slack": SlackSink(slack)},
        NotifySection(**notify),
        log=log,
        metrics=NotifyMetrics(registry),
        owner=owner,
    )
    return Rig(sender, registry, log)


async def drain(rig: Rig | OutboxSender, max_steps: int = 50) -> int:
    """Step until a step attempts nothing; return how many rows were attempted."""
    total = 0
    for _ in range(max_steps):
        attempted = await rig.step()
        if attempted == 0:
            return total
        total += attempted
    raise AssertionError(f"sender still busy after {max_steps} steps")


def rows(db: Path | PgDatabase) -> list[dict[str, Any]]:
    """Every outbox row, oldest first, from a SQLite file or a Postgres database."""
    if isinstance(db, PgDatabase):
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(db.dsn, row_factory=dict_row) as pg:
            return [dict(r) for r in pg.execute("SELECT * FROM outbox ORDER BY id")]
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        conn.close()


def row_by_key(db: Path | PgDatabase, dedup_key: str) -> dict[str, Any]:
    [row] = [r for r in rows(db) if r["dedup_key"] == dedup_key]
    return row


def alert(channel: str, text: str, key: str | None = None) -> Message:
    return Message(channel=channel, text=text, dedup_key=key or f"{channel}:{text}")


def push(channel: str, text: str, key: str | None = None) -> Message:
    return Message(channel=channel, text=text, dedup_key=key or f"{channel}:{text}", kind="push")


class RecordingSink:
    """An in-memory sink: records what it is given; ``fail`` queues errors to raise first."""

    name = "slack"
    available = True

    def __init__(self, *fail: Exception) -> None:
        self.sent: list[OutboxRow] = []
        self.fail: list[Exception] = list(fail)

    async def send(self, row: OutboxRow) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append(row)

    async def close(self) -> None:
        pass

    def texts(self, channel: str | None = None) -> list[str]:
        return [r.text for r in self.sent if channel is None or r.channel == channel]


def recording_sender(
    outbox: OutboxStore, sink: RecordingSink | None = None, **notify: Any
) -> tuple[OutboxSender, RecordingSink, CollectorRegistry]:
    """A sender over ``outbox`` delivering to an in-memory sink, without jitter."""
    sink = sink if sink is not None else RecordingSink()
    registry = CollectorRegistry()
    sender = OutboxSender(
        outbox,
        {"slack": sink},
        NotifySection(**notify),
        log=RecordingLog(),
        metrics=NotifyMetrics(registry),
        owner="sender-a",
        rand=None,
    )
    return sender, sink, registry

"""The outbox as a store, against a real SQLite file in tmp_path (tests/system/
test_notify_postgres.py runs these again on a real Postgres server), and no network: how it applies
a collapse plan (rows, links and keys), the dedup key, and what pruning keeps.

What to collapse is decided in shared.notify.collapse (tests/unit/test_notify_collapse.py);
these tests check that the rows end up saying what the plan said, and that two outboxes on one
file never both apply a plan to the same rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shared.notify import OutboxStore, SinkError
from shared.notify.collapse import PendingAlert, plan_collapse
from shared.notify.message import OutboxRow
from tests.notify_support import (
    T0,
    Clock,
    RecordingSink,
    alert,
    drain,
    push,
    recording_sender,
    row_by_key,
    rows,
)
from tests.outbox_backends import OutboxBackend, StoreRef
from tests.outbox_backends import sqlite_outbox_backend as sqlite_outbox_backend


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(outbox_backend: OutboxBackend) -> StoreRef:
    """What rows() reads: the SQLite file or the Postgres database ."""
    return outbox_backend.ref


@pytest.fixture
async def outbox(outbox_backend: OutboxBackend, clock: Clock) -> AsyncIterator[OutboxStore]:
    ob = await outbox_backend.open(clock)
    yield ob
    await ob.close()


def as_row(r: dict[str, object]) -> OutboxRow:
    return OutboxRow(
        id=int(str(r["id"])),
        dedup_key=str(r["dedup_key"]),
        sink=str(r["sink"]),
        channel=str(r["channel"]),
        kind=str(r["kind"]),
        text=str(r["text"]),
        payload={},
        daemon=str(r["daemon"]),
        created_at=float(str(r["created_at"])),
        attempts=int(str(r["attempts"])),
    )


async def test_burst_summary_row_is_what_the_plan_says(
    outbox: OutboxStore, db_path: StoreRef
) -> None:
    for i in range(4):
        await outbox.enqueue(alert("#ops", f"ops {i}"))
    await outbox.enqueue(alert("#dev", "lone dev"))
    await outbox.enqueue(push("#ops", "a push is never folded"))
    alerts = [PendingAlert(as_row(r)) for r in rows(db_path) if r["kind"] == "alert"]
    [planned] = plan_collapse(alerts, [], T0, stale_alert_s=3600, burst=3).summaries

    [summary_id] = await outbox.collapse(stale_alert_s=3600, burst=3)

    summary = row_by_key(db_path, planned.dedup_key)
    assert summary["id"] == summary_id
    assert (summary["kind"], summary["status"], summary["daemon"]) == (
        "summary",
        "pending",
        "outbox",
    )
    assert (summary["text"], summary["created_at"], summary["attempts"]) == (planned.text, T0, 0)
    by_status = {(r["text"], r["status"], r["summary_id"]) for r in rows(db_path)}
    assert {(f"ops {i}", "collapsed", summary_id) for i in range(4)} <= by_status
    assert ("lone dev", "pending", None) in by_status
    assert ("a push is never folded", "pending", None) in by_status
    assert await outbox.collapse(stale_alert_s=3600, burst=3) == []  # nothing left to fold


async def test_waiting_summary_absorbs_new_alerts_and_keeps_its_backoff(
    outbox: OutboxStore, db_path: StoreRef, clock: Clock
) -> None:
    sink = RecordingSink(SinkError("connection"), SinkError("connection"))
    sender, _, _ = recording_sender(outbox, sink, burst=2)
    for i in range(3):
        await outbox.enqueue(alert("#ops", f"early {i}"))
    assert await sender.step() == 1  # the burst summary fails once: backoff 2 s
    [first] = [r for r in rows(db_path) if r["kind"] == "summary"]
    clock.t = first["next_attempt_at"]
    assert await sender.step() == 1  # fails again: attempts 2, backoff 4 s
    first = row_by_key(db_path, first["dedup_key"])
    assert (first["attempts"], first["next_attempt_at"]) == (2, clock.t + 4)

    clock.advance(1)
    await outbox.enqueue(alert("#ops", "late"))
    [second_id] = await outbox.collapse(stale_alert_s=3600, burst=2)

    second = next(r for r in rows(db_path) if r["id"] == second_id)
    assert (second["attempts"], second["next_attempt_at"]) == (2, first["next_attempt_at"])
    assert second["dedup_key"].endswith(f":4:after{first['id']}")
    assert second["text"].startswith("[summary] 4 alerts delayed by an outage")
    assert row_by_key(db_path, first["dedup_key"])["status"] == "collapsed"
    assert row_by_key(db_path, first["dedup_key"])["summary_id"] == second_id
    alerts = [r for r in rows(db_path) if r["kind"] == "alert"]
    assert {(r["status"], r["summary_id"]) for r in alerts} == {("collapsed", second_id)}

    clock.t = second["next_attempt_at"]
    assert await drain(sender) == 1
    [delivered] = sink.texts("#ops")
    assert all(f"early {i}" in delivered for i in range(3)) and "late" in delivered


async def test_a_lone_held_alert_is_released_not_summarized(
    outbox: OutboxStore, db_path: StoreRef
) -> None:
    await outbox.set_silence(600)
    await outbox.enqueue(alert("#ops", "alone in the silence"))
    assert await outbox.hold_alerts() == 1
    assert rows(db_path)[0]["held"] == 1

    assert await outbox.collapse(stale_alert_s=3600, burst=5) == []
    [row] = rows(db_path)
    assert (row["status"], row["held"]) == ("pending", 0)


async def test_two_outboxes_collapsing_at_once_make_one_summary(
    outbox_backend: OutboxBackend, db_path: StoreRef, clock: Clock
) -> None:
    outboxes = [await outbox_backend.open(clock) for _ in range(4)]
    try:
        for i in range(50):
            await outboxes[0].enqueue(alert("#ops", f"alert {i}"))
        created = await asyncio.gather(
            *(ob.collapse(stale_alert_s=3600, burst=5) for ob in outboxes)
        )
    finally:
        for ob in outboxes:
            await ob.close()
    assert sorted(len(ids) for ids in created) == [0, 0, 0, 1]
    [summary] = [r for r in rows(db_path) if r["kind"] == "summary"]
    assert summary["text"].startswith("[summary] 50 alerts arrived at once")
    alerts = [r for r in rows(db_path) if r["kind"] == "alert"]
    assert {(r["status"], r["summary_id"]) for r in alerts} == {("collapsed", summary["id"])}


async def test_collapsed_alerts_outlive_prune_while_their_summary_is_undelivered(
    outbox: OutboxStore, db_path: StoreRef, clock: Clock
) -> None:
    sink = RecordingSink(*(SinkError("connection") for _ in range(100)))
    sender, _, _ = recording_sender(outbox, sink, burst=2, prune_after_s=60)
    for i in range(3):
        await outbox.enqueue(alert("#ops", f"alert {i}"))
    await sender.step()
    clock.advance(3600)

    assert await outbox.prune(older_than_s=60) == 0
    assert {r["status"] for r in rows(db_path)} == {"collapsed", "pending"}

    sink.fail.clear()
    await drain(sender)
    clock.advance(3600)
    assert await outbox.prune(older_than_s=60) == 4
    assert rows(db_path) == []


async def test_enqueue_is_idempotent_per_dedup_key(outbox: OutboxStore, db_path: StoreRef) -> None:
    assert await outbox.enqueue(alert("#ops", "first", key="k")) is True
    assert await outbox.enqueue(push("#ceo", "second", key="k")) is False
    [row] = rows(db_path)
    assert (row["channel"], row["text"], row["kind"]) == ("#ops", "first", "alert")

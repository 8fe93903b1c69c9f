"""A write cancelled at any await point, or whose rollback fails, never leaves its database
locked or its connection inside a transaction: the next write succeeds. Real SQLite files,
the real stores (the inbox's ``record``, the outbox's collapse), faults injected at each
round trip to the database in turn (``tests/store_faults.py``)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemons.email_reactor.actions import EmailAction
from daemons.email_reactor.records import Decision
from daemons.email_reactor.rules import Email
from daemons.email_reactor.store import InboxStore
from shared.notify import Outbox
from shared.sqlite import StoreError
from tests.email_fixtures import FOREIGN_SCHEMA
from tests.notify_support import Clock, alert, rows
from tests.store_faults import CancelAt, FailStatement, Submitted, is_write_locked

SINCE = "2026-01-01 00:00:00"
DECISION = Decision(
    EmailAction.LINKED,
    "strategic_partner",
    "override",
    creates_task=True,
    push_channel="#ceo",
    push_text="partner mail",
    partner_tier=1,
)


def make_inbox(path: Path, count: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(FOREIGN_SCHEMA)
        for i in range(count):
            conn.execute(
                "INSERT INTO emails(account, from_addr, from_name, subject, body_text,"
                " classification, status, created_at) VALUES ('ceo@example.com', ?, 'P',"
                " 'Hi', 'Body', 'ACTION', 'new', '2026-11-23 10:00:00')",
                (f"p{i}@example.com",),
            )
    conn.close()


async def record(store: InboxStore, email: Email, task_id: int) -> bool:
    got = await store.record(
        email,
        DECISION,
        mc_task_id=task_id,
        decided_at="2026-11-23 10:01:00",
        sender_hash="h",
        push_key=f"email:{email.id}",
    )
    return got.inserted


def decided(path: Path) -> dict[int, int | None]:
    """email id -> the task id written back to ``emails``, for every decided email; a decision
    without its write-back (a torn transaction) fails the assertion."""
    with sqlite3.connect(path) as conn:
        got = dict(
            conn.execute(
                "SELECT d.email_id, e.mc_task_id FROM reactor_decisions d"
                " JOIN emails e ON e.id = d.email_id"
            ).fetchall()
        )
    conn.close()
    assert all(task is not None for task in got.values()), got
    return got


@pytest.mark.parametrize("queued", [True, False], ids=["while-queued", "before-queued"])
async def test_record_cancelled_at_each_await_point(tmp_path: Path, queued: bool) -> None:
    """Why-bullet "wedges the inbox": cancel ``record`` at its 1st, 2nd, ... round trip until
    it completes untouched; after each, the database is unlocked and the next record lands."""
    path = tmp_path / "email-inbox.db"
    make_inbox(path, 40)
    store = await InboxStore(path).open()
    try:
        emails = (await store.new_emails(SINCE, 40)).emails
        seen: list[str] = []
        n = 0
        while True:
            n += 1
            victim, probe = emails[2 * n], emails[2 * n + 1]
            fault = CancelAt(store.db, n, queued=queued)
            try:
                task = asyncio.create_task(record(store, victim, n))
                done = await asyncio.wait({task})
                assert done
            finally:
                fault.remove()
            if not fault.fired:
                assert task.result() is True
                break
            seen.append(fault.statement)
            assert task.cancelled(), f"round trip {n} ({fault.statement}): {task!r}"
            assert not store.db.in_transaction, f"left inside a transaction at {fault.statement}"
            assert not is_write_locked(path), f"database left locked at {fault.statement}"
            assert await record(store, probe, 1000 + n), f"next record failed after {seen}"
            got = decided(path)
            assert probe.id in got
            if victim.id in got:  # cancelled after its COMMIT was queued: wholly there
                assert got[victim.id] == n
        assert seen[0].startswith("BEGIN") and any(s.startswith("COMMIT") for s in seen), seen
    finally:
        await store.close()


async def test_record_cancelled_while_waiting_for_a_busy_database(tmp_path: Path) -> None:
    """The incident: record waits in BEGIN IMMEDIATE while another program holds the write
    lock; the cycle times out; the lock is released; BEGIN then succeeds on the connection's
    thread. The transaction it opened must not outlive the cancelled write."""
    path = tmp_path / "email-inbox.db"
    make_inbox(path, 2)
    store = await InboxStore(path, busy_timeout_ms=10_000).open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        first, second = (await store.new_emails(SINCE, 2)).emails
        holder.execute("BEGIN IMMEDIATE")
        begin = Submitted(store.db, "BEGIN")
        try:
            task = asyncio.create_task(record(store, first, 1))
            await asyncio.wait_for(begin.event.wait(), timeout=30)
            task.cancel()  # the cycle's timeout, while BEGIN waits for the lock
            holder.execute("ROLLBACK")  # the other program lets go; BEGIN gets the lock
            await asyncio.wait({task})
        finally:
            begin.remove()
        assert task.cancelled()
        assert not is_write_locked(path)
        assert await record(store, second, 2)
        assert decided(path) == {second.id: 2}
    finally:
        holder.close()
        await store.close()


async def test_failed_rollback_reopens_the_connection(tmp_path: Path) -> None:
    """A ROLLBACK that fails leaves the connection inside its transaction (and the database
    locked): the store closes that connection and carries on with a fresh one."""
    path = tmp_path / "email-inbox.db"
    make_inbox(path, 2)
    store = await InboxStore(path).open()
    try:
        first, second = (await store.new_emails(SINCE, 2)).emails
        old = store.db
        breaks = FailStatement(old, "DELETE", sqlite3.OperationalError("disk I/O error"))
        no_rollback = FailStatement(old, "ROLLBACK", sqlite3.OperationalError("disk I/O error"))
        try:
            with pytest.raises((StoreError, sqlite3.Error)):
                await record(store, first, 1)
        finally:
            no_rollback.remove()
            breaks.remove()
        assert breaks.hits >= 1 and no_rollback.hits >= 1
        assert not is_write_locked(path)
        assert await record(store, second, 2)
        assert store.db is not old
        # ``fleet_ts`` (a function registered on the connection) works on the new one too.
        assert [e.id for e in (await store.new_emails(SINCE, 5)).emails] == [first.id]
        assert decided(path) == {second.id: 2}
    finally:
        await store.close()


async def stale_alerts(outbox: Outbox, clock: Clock, first: int, count: int) -> None:
    for i in range(first, first + count):
        await outbox.enqueue(alert("#ops", f"disk {i} full"))
    clock.advance(7200)  # older than stale_alert_s: the next collapse folds them


@pytest.mark.parametrize("queued", [True, False], ids=["while-queued", "before-queued"])
async def test_collapse_cancelled_at_each_await_point(tmp_path: Path, queued: bool) -> None:
    clock = Clock()
    path = tmp_path / "outbox.db"
    outbox = await Outbox(path, clock=clock).open()
    try:
        n = 0
        while True:
            n += 1
            await stale_alerts(outbox, clock, 10 * n, 3)
            fault = CancelAt(outbox.db, n, queued=queued)
            try:
                task = asyncio.create_task(outbox.collapse(3600.0, 100))
                await asyncio.wait({task})
            finally:
                fault.remove()
            if not fault.fired:
                assert len(task.result()) == 1
                break
            assert task.cancelled(), f"round trip {n} ({fault.statement}): {task!r}"
            assert not outbox.db.in_transaction, fault.statement
            assert not is_write_locked(path), f"outbox left locked at {fault.statement}"
            # Whatever the cancelled collapse did is whole; the next one folds the rest.
            await outbox.collapse(3600.0, 100)
            assert await outbox.enqueue(alert("#ops", f"after {n}"))
            states = [r["status"] for r in rows(path) if r["kind"] == "alert"]
            assert states.count("pending") == 1, (fault.statement, states)
            await outbox.collapse(3600.0, 100)
    finally:
        await outbox.close()


async def test_collapse_on_a_locked_outbox_reports_the_lock(tmp_path: Path) -> None:
    """Why-bullet "crashes every daemon on an outbox lock": a busy BEGIN in collapse used to
    be followed by a ROLLBACK with no transaction, whose error hid the lock (and skipped the
    busy retries)."""
    clock = Clock()
    path = tmp_path / "outbox.db"
    outbox = await Outbox(path, clock=clock, busy_timeout_ms=20).open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await stale_alerts(outbox, clock, 0, 2)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked") as caught:
            await outbox.collapse(3600.0, 100)
        assert "attempt(s)" in str(caught.value) and "1 attempt" not in str(caught.value)
        holder.execute("ROLLBACK")
        assert len(await outbox.collapse(3600.0, 100)) == 1
    finally:
        holder.close()
        await outbox.close()

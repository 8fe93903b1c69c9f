"""A database the fleet cannot use is a failed step, never a dead task: the outbox sender lives
through a locked outbox (backs off, reports each failure, logs once per incident) and delivers
after the lock; store errors are found inside exception groups; WATCHDOG=1 stops only when a
loop or sender task itself has ended. Real SQLite files, no processes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import shared.runtime
from shared.notify import Outbox
from shared.sqlite import StoreError, store_errors_in
from tests.notify_support import push, recording_sender
from tests.recording_log import RecordingLog


async def until(predicate: Any, *, timeout_s: float = 60.0) -> bool:
    """Yield to the loop until ``predicate()`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_sender_lives_through_a_locked_outbox_and_delivers_after(tmp_path: Path) -> None:
    """Why-bullet "crashes every daemon on an outbox lock": ``run()`` caught sqlite3.Error
    and OSError but not the StoreError the outbox raises after its busy retries, so the sender
    task ended and took the daemon with it (exit 1)."""
    path = tmp_path / "outbox.db"
    outbox = await Outbox(path, busy_timeout_ms=20).open()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        await outbox.enqueue(push("#ceo", "partner mail"))
        sender, sink, _registry = recording_sender(outbox)
        reported: list[BaseException] = []
        sender.on_store_error = reported.append
        stop = asyncio.Event()
        holder.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(sender.run(stop, idle_s=0.01))
        assert await until(lambda: len(reported) >= 3 or task.done())
        assert not task.done(), task
        assert all(isinstance(e, StoreError) and e.db == "outbox.db" for e in reported), reported
        assert sink.sent == []
        holder.execute("ROLLBACK")
        assert await until(lambda: len(sink.sent) == 1 or task.done())
        stop.set()
        await task
        log = sender.log
        assert isinstance(log, RecordingLog)
        assert len(log.events("outbox sender failing")) == 1  # once per incident
        assert log.events("outbox sender recovered")[0]["failures"] == len(reported)
    finally:
        holder.close()
        await outbox.close()


async def test_sender_step_that_hits_a_bug_still_ends_the_task(tmp_path: Path) -> None:
    """Only the store's errors are retried: a bug must still end the process (restarted)."""
    outbox = await Outbox(tmp_path / "outbox.db").open()
    try:
        sender, _sink, _registry = recording_sender(outbox)

        async def broken() -> int:
            raise KeyError("bug")

        sender.step = broken  # type: ignore[method-assign]
        with pytest.raises(KeyError):
            await sender.run(asyncio.Event(), idle_s=0.01)
    finally:
        await outbox.close()


async def test_an_outbox_that_cannot_open_is_retried_on_use(tmp_path: Path) -> None:
    """Start-up during a lock on a never-migrated outbox: ``open()`` fails, the outbox stays
    wanted, each use raises StoreError while the lock lasts, then it opens and works."""
    path = tmp_path / "outbox.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    outbox = Outbox(path, busy_timeout_ms=20)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await outbox.open()
        with pytest.raises(StoreError, match="locked") as caught:
            await outbox.enqueue(push("#ceo", "early"))
        assert caught.value.db == "outbox.db"
        holder.execute("ROLLBACK")
        assert await outbox.enqueue(push("#ceo", "early"))
        assert await outbox.pending_count() == 1
    finally:
        holder.close()
        await outbox.close()


def test_store_errors_are_found_inside_exception_groups() -> None:
    group = ExceptionGroup(
        "cycle",
        [
            StoreError("locked", db="email-inbox.db"),
            ExceptionGroup("inner", [sqlite3.OperationalError("disk I/O error")]),
            KeyError("not a store error"),
        ],
    )
    assert store_errors_in(group) == ["email-inbox.db", ""]
    assert store_errors_in(ValueError("x")) == []


class _Runner:
    def __init__(self, wedged: bool = False) -> None:
        self._wedged = wedged

    def wedged(self) -> bool:
        return self._wedged


class _Pings:
    def __init__(self) -> None:
        self.count = 0

    def watchdog(self) -> None:
        self.count += 1


@pytest.mark.parametrize(
    ("loop_state", "wedged", "pings"),
    [("running", False, 5), ("ended", False, 0), ("running", True, 0)],
)
async def test_watchdog_pings_only_while_the_loops_live(
    monkeypatch: pytest.MonkeyPatch, loop_state: str, wedged: bool, pings: int
) -> None:
    stop = asyncio.Event()
    rounds = 0

    async def one_interval(stop_: asyncio.Event, other: object = None, timeout: float = 0) -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 5:
            stop_.set()
        await asyncio.sleep(0)

    monkeypatch.setattr(shared.runtime, "wait_any", one_interval)
    sender = asyncio.create_task(stop.wait())
    loop = asyncio.create_task(stop.wait() if loop_state == "running" else asyncio.sleep(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    notifier = _Pings()
    await shared.runtime._watchdog(
        lambda: [_Runner(wedged)],  # type: ignore[list-item,return-value]
        lambda: [loop, sender],
        notifier,  # type: ignore[arg-type]
        0.01,
        stop,
    )
    assert notifier.count == pings
    for task in (loop, sender):
        task.cancel()

"""The sender without a network: what it does with a sink that misbehaves, how long it waits
before a retry or an idle step (``retry_delay_s``, ``idle_delay_s``), and its run loop.

A real SQLite outbox in tmp_path (tests/system/test_notify_postgres.py runs these on Postgres),
in-memory sinks, an injected clock, no jitter unless a test injects one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from shared.notify import NotifyMetrics, OutboxRow, OutboxSender, OutboxStore, SinkError
from shared.notify.sender import IDLE_MAX_S, idle_delay_s, retry_delay_s
from shared.sections import NotifySection
from shared.sqlite import StoreError
from tests.notify_support import Clock, RecordingSink, push, recording_sender, rows
from tests.outbox_backends import OutboxBackend, StoreRef
from tests.outbox_backends import sqlite_outbox_backend as sqlite_outbox_backend
from tests.recording_log import RecordingLog


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


# delays ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attempts", "cap_s", "retry_after_s", "expected"),
    [
        pytest.param(1, 600, None, 2.0, id="first-failure-2s"),
        pytest.param(2, 600, None, 4.0, id="doubles"),
        pytest.param(5, 600, None, 32.0, id="fifth-32s"),
        pytest.param(9, 600, None, 512.0, id="below-cap"),
        pytest.param(10, 600, None, 600.0, id="capped"),
        pytest.param(40, 600, None, 600.0, id="huge-attempts-capped"),
        pytest.param(3, 600, 30.0, 30.0, id="retry-after-wins"),
        pytest.param(3, 600, 0.0, 0.0, id="retry-after-zero"),
        pytest.param(3, 600, -5.0, 0.0, id="negative-retry-after-is-zero"),
        pytest.param(3, 600, 3600.0, 600.0, id="retry-after-capped"),
    ],
)
def test_retry_delay(
    attempts: int, cap_s: float, retry_after_s: float | None, expected: float
) -> None:
    assert retry_delay_s(attempts, cap_s, retry_after_s) == pytest.approx(expected)


@pytest.mark.parametrize("draw", [0.0, 0.5, 1.0])
def test_retry_delay_jitter_stays_within_a_fifth_and_under_the_cap(draw: float) -> None:
    factor = 0.8 + 0.4 * draw  # backoff_delay's 1 ± 20 %
    assert retry_delay_s(1, 600, rand=lambda: draw) == pytest.approx(2.0 * factor)
    assert retry_delay_s(30, 600, rand=lambda: draw) <= 600
    assert retry_delay_s(3, 600, 30.0, rand=lambda: draw) == 30.0  # Retry-After is exact


@pytest.mark.parametrize(
    ("failures", "idle_s", "expected"),
    [
        pytest.param(0, 2.0, 2.0, id="healthy-idle"),
        pytest.param(1, 2.0, 4.0, id="one-failure-doubles"),
        pytest.param(4, 2.0, 32.0, id="four-failures"),
        pytest.param(5, 2.0, IDLE_MAX_S, id="capped"),
        pytest.param(100, 2.0, IDLE_MAX_S, id="long-outage-capped"),
        pytest.param(0, 90.0, IDLE_MAX_S, id="idle-above-cap"),
    ],
)
def test_idle_delay(failures: int, idle_s: float, expected: float) -> None:
    assert idle_delay_s(failures, idle_s) == pytest.approx(expected)


# a misbehaving sink ------------------------------------------------------------------------
class BrokenOnceSink:
    """A sink with a bug: the first send raises something that is not a SinkError."""

    name = "slack"
    available = True

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.calls = 0

    async def send(self, row: OutboxRow) -> None:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("a bug in the sink")
        self.sent.append(row.text)

    async def close(self) -> None:
        pass


async def test_unexpected_sink_exception_pushes_the_row_back_instead_of_crashing(
    outbox: OutboxStore, db_path: StoreRef, clock: Clock
) -> None:
    registry = CollectorRegistry()
    sink = BrokenOnceSink()
    sender = OutboxSender(
        outbox,
        {"slack": sink},
        NotifySection(),
        log=RecordingLog(),
        metrics=NotifyMetrics(registry),
        owner="sender-a",
    )
    await outbox.enqueue(push("#ceo", "poison?"))

    assert await sender.step() == 1  # does not raise
    row = rows(db_path)[0]
    assert row["status"] == "pending"  # not left claimed
    assert "KeyError" in row["last_error"]
    labels = {"sink": "slack", "reason": "unexpected"}
    assert registry.get_sample_value("fleet_notifications_failed_total", labels) == 1

    clock.t = row["next_attempt_at"]
    assert await sender.step() == 1
    assert sink.sent == ["poison?"]
    assert rows(db_path)[0]["status"] == "sent"


async def test_failed_send_is_retried_after_the_backoff_and_a_permanent_one_goes_dead(
    outbox: OutboxStore, db_path: StoreRef, clock: Clock
) -> None:
    sink = RecordingSink(SinkError("server_error"), SinkError("rejected", permanent=True))
    sender, _, registry = recording_sender(outbox, sink, max_backoff_s=600)
    await outbox.enqueue(push("#ceo", "first"))
    await outbox.enqueue(push("#ceo", "second"))

    assert await sender.step() == 2
    first, second = rows(db_path)
    assert (first["status"], first["next_attempt_at"]) == ("pending", clock.t + 2.0)
    assert (second["status"], second["last_error"]) == ("dead", "rejected")
    assert await sender.step() == 0

    clock.advance(2)
    assert await sender.step() == 1
    assert sink.texts() == ["first"]
    labels = {"sink": "slack", "reason": "rejected"}
    assert registry.get_sample_value("fleet_notifications_failed_total", labels) == 1


# the run loop ------------------------------------------------------------------------------
async def test_run_drains_a_backlog_without_idling_then_stops(
    outbox: OutboxStore, db_path: StoreRef
) -> None:
    sender, sink, _ = recording_sender(outbox, rate_per_minute=1000)
    sender.batch = 3  # ten rows need four steps: run must not sleep between them
    for i in range(10):
        await outbox.enqueue(push("#ceo", f"m{i}"))
    stop = asyncio.Event()

    task = asyncio.create_task(sender.run(stop, idle_s=IDLE_MAX_S))
    for _ in range(1000):
        if len(sink.sent) == 10:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=10)  # an idle wait ends as soon as stop is set
    assert sink.texts() == [f"m{i}" for i in range(10)]
    assert {r["status"] for r in rows(db_path)} == {"sent"}


async def test_a_delivery_the_store_failed_to_mark_is_marked_next_step_not_resent(
    outbox: OutboxStore, db_path: StoreRef
) -> None:
    """Slack took the message, then the outbox failed (a Postgres restart, a locked file):
    the next step records it as sent instead of sending it again when the lease lapses."""
    sender, sink, _ = recording_sender(outbox)
    await outbox.enqueue(push("#ceo", "board meeting moved"))
    real_mark_sent = outbox.mark_sent

    async def failing_mark_sent(row_id: int, owner: str) -> None:
        raise StoreError("outbox: connection lost", db="outbox")

    outbox.mark_sent = failing_mark_sent  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        await sender.step()
    assert rows(db_path)[0]["status"] == "sending"
    outbox.mark_sent = real_mark_sent  # type: ignore[method-assign]

    assert await sender.step() == 0
    assert rows(db_path)[0]["status"] == "sent"
    assert sink.texts() == ["board meeting moved"]

"""The outbox measures intervals on the monotonic clock, so a wall-clock step does not hold
messages: after a 1 h backward step #ceo pushes go out at once (the per-channel rate limit
counts sends on the monotonic clock), a retry is not pushed an hour out, and a silence ends
after its duration, not after its wall-clock end plus the step. A silence is at most 30 days.
Real SQLite outbox (tests/system/test_notify_postgres.py runs these on Postgres), injected wall
and monotonic clocks, an in-memory sink."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.notify import MAX_SILENCE_S, OutboxStore, SinkError
from tests.notify_support import Clock, RecordingSink, alert, push, recording_sender
from tests.outbox_backends import OutboxBackend
from tests.outbox_backends import sqlite_outbox_backend as sqlite_outbox_backend

HOUR = 3600.0


@pytest.fixture
def wall() -> Clock:
    return Clock()


@pytest.fixture
def mono() -> Clock:
    return Clock(5_000.0)


@pytest.fixture
async def outbox(
    outbox_backend: OutboxBackend, wall: Clock, mono: Clock
) -> AsyncIterator[OutboxStore]:
    ob = await outbox_backend.open(wall, mono, "boot-1")
    yield ob
    await ob.close()


def _tick(wall: Clock, mono: Clock, seconds: float) -> None:
    wall.advance(seconds)
    mono.advance(seconds)


async def test_a_backward_clock_step_does_not_hold_ceo_pushes(
    outbox: OutboxStore, wall: Clock, mono: Clock
) -> None:
    sender, sink, _ = recording_sender(outbox, rate_per_minute=2)
    for i in range(2):
        await outbox.enqueue(push("#ceo", f"partner mail {i}"))
    assert await sender.step() == 2
    # The limit holds inside the minute...
    await outbox.enqueue(push("#ceo", "partner mail 2"))
    _tick(wall, mono, 30)
    assert await sender.step() == 0
    # ...and the minute is over 31 s later, even though NTP set the wall clock back 1 h.
    _tick(wall, mono, 31)
    wall.advance(-HOUR)
    await outbox.enqueue(push("#ceo", "partner mail 3"))
    assert await sender.step() == 2
    assert sink.texts("#ceo") == [f"partner mail {i}" for i in range(4)]
    # The limit still counts on the monotonic clock after the step.
    await outbox.enqueue(push("#ceo", "partner mail 4"))
    _tick(wall, mono, 59)
    assert await sender.step() == 0
    _tick(wall, mono, 2)
    assert await sender.step() == 1


async def test_a_retry_is_not_pushed_an_hour_out_by_a_backward_step(
    outbox: OutboxStore, wall: Clock, mono: Clock
) -> None:
    sink = RecordingSink(SinkError("server_error", detail="503"))
    sender, _, _ = recording_sender(outbox, sink, max_backoff_s=600)
    await outbox.enqueue(push("#ceo", "partner mail"))
    assert await sender.step() == 1 and sink.sent == []
    _tick(wall, mono, 5)
    wall.advance(-HOUR)
    assert await sender.step() == 1
    assert sink.texts("#ceo") == ["partner mail"]


async def test_a_silence_lasts_its_duration_whatever_the_wall_clock_does(
    outbox: OutboxStore, wall: Clock, mono: Clock
) -> None:
    sender, sink, _ = recording_sender(outbox)
    await outbox.set_silence(2 * HOUR, "drill")
    await outbox.enqueue(alert("#ops", "disk 91%"))
    assert await sender.step() == 0
    wall.advance(-HOUR)  # the wall clock would stretch the silence to 3 h
    _tick(wall, mono, 2 * HOUR + 1)
    assert await sender.step() == 1
    assert sink.texts("#ops") == ["disk 91%"]


async def test_a_silence_after_a_reboot_ends_at_its_wall_clock_end(
    outbox_backend: OutboxBackend, wall: Clock, mono: Clock
) -> None:
    """The monotonic clock restarts at boot: another boot's silence falls back to ``until``."""
    first = await outbox_backend.open(wall, mono, "boot-1")
    await first.set_silence(HOUR, "maintenance")
    await first.close()
    after_reboot = Clock(20.0)
    ob = await outbox_backend.open(wall, after_reboot, "boot-2")
    try:
        silence = await ob.silence()
        assert silence is not None and ob.silenced(silence)
        wall.advance(HOUR + 1)
        after_reboot.advance(HOUR + 1)
        assert not ob.silenced(silence)
    finally:
        await ob.close()


async def test_a_silence_is_at_most_30_days(outbox: OutboxStore) -> None:
    assert MAX_SILENCE_S == 30 * 86400
    await outbox.set_silence(MAX_SILENCE_S, "long maintenance")
    with pytest.raises(ValueError, match="30d"):
        await outbox.set_silence(100_000_000 * 86400, "forever")
    with pytest.raises(ValueError):
        await outbox.set_silence(float("inf"))

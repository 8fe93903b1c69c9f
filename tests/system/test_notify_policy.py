"""The outbox's policy end to end, against a real SQLite file and a fake Slack on 127.0.0.1:
concurrent senders and crashed ones, outage backlogs, bursts, silences, rate limits, pruning
and the metrics. The collapse decisions themselves are unit-tested in
tests/unit/test_notify_collapse.py.

Time is an injected clock, never a sleep. Each test builds its own registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from shared.notify import Message, Outbox
from tests.fakes import FakeSlack
from tests.notify_support import (
    T0,
    Clock,
    alert,
    drain,
    make_rig,
    push,
    row_by_key,
    rows,
)

pytestmark = pytest.mark.system


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake
    assert fake.errors == []


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.db"


@pytest.fixture
async def outbox(db_path: Path, clock: Clock) -> AsyncIterator[Outbox]:
    ob = await Outbox(db_path, clock=clock, mono=clock).open()
    yield ob
    await ob.close()


# concurrency and crashes -------------------------------------------------------------------
async def test_two_senders_never_send_the_same_row_twice(
    db_path: Path, slack: FakeSlack, clock: Clock
) -> None:
    ob_a = await Outbox(db_path, clock=clock, mono=clock).open()
    ob_b = await Outbox(db_path, clock=clock, mono=clock).open()
    try:
        channels = ["#ceo", "#ops", "#dev", "#alerts"]
        for i in range(200):
            await ob_a.enqueue(push(channels[i % 4], f"msg {i:03d}", key=f"k{i}"))
        a = make_rig(ob_a, slack.base_url, owner="host:a", rate_per_minute=1000)
        b = make_rig(ob_b, slack.base_url, owner="host:b", rate_per_minute=1000)

        await asyncio.wait_for(asyncio.gather(drain(a, 100), drain(b, 100)), timeout=120)

        texts = slack.texts()
        assert len(texts) == 200
        assert sorted(texts) == [f"msg {i:03d}" for i in range(200)]
        assert {r["status"] for r in rows(db_path)} == {"sent"}
        assert a.sent + b.sent == 200
        assert a.sent > 0 and b.sent > 0  # both really took part
        owners = {r["claimed_by"] for r in rows(db_path)}
        assert owners == {"host:a", "host:b"}
    finally:
        await ob_a.close()
        await ob_b.close()


async def test_two_senders_collapse_a_burst_into_one_summary(
    db_path: Path, slack: FakeSlack, clock: Clock
) -> None:
    ob_a = await Outbox(db_path, clock=clock, mono=clock).open()
    ob_b = await Outbox(db_path, clock=clock, mono=clock).open()
    try:
        for i in range(200):
            await ob_a.enqueue(alert("#ops", f"alert {i}", key=f"k{i}"))
        a = make_rig(ob_a, slack.base_url, owner="host:a")
        b = make_rig(ob_b, slack.base_url, owner="host:b")
        await asyncio.wait_for(asyncio.gather(drain(a), drain(b)), timeout=60)

        [summary] = slack.texts("#ops")
        assert summary.startswith("[summary] 200 alerts")
        statuses = [r["status"] for r in rows(db_path) if r["kind"] == "alert"]
        assert statuses == ["collapsed"] * 200
    finally:
        await ob_a.close()
        await ob_b.close()


async def test_row_claimed_by_a_dead_sender_is_requeued_after_the_lease(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url, send_lease_s=60)
    await outbox.enqueue(push("#ceo", "survives a crash"))
    row_id = rows(db_path)[0]["id"]
    # Another sender claims the row, then dies before sending or marking it.
    ghost = await Outbox(db_path, clock=clock, mono=clock).open()
    try:
        assert await ghost.claim(row_id, "ghost:1", 60) is True
    finally:
        await ghost.close()

    assert await rig.step() == 0
    clock.advance(59)
    assert await rig.step() == 0
    assert slack.requests == []
    assert rows(db_path)[0]["status"] == "sending"

    clock.advance(2)
    assert await rig.step() == 1
    assert slack.texts() == ["survives a crash"]
    row = rows(db_path)[0]
    assert row["status"] == "sent"
    assert row["claimed_by"] == "sender-a"
    clock.advance(3600)
    assert await drain(rig) == 0
    assert len(slack.messages) == 1


# policy: outage backlog, bursts, silence, rate limits ----------------------------------------
async def test_two_hour_outage_backlog_goes_out_as_one_summary_per_channel(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url)
    clock.t = T0 - 7200
    slack.stop()  # Slack unreachable for the next two hours; the sender keeps trying
    for i in range(30):
        channel = "#ops" if i % 2 == 0 else "#alerts"
        await outbox.enqueue(alert(channel, f"alert {i:02d} on {channel}", key=f"a{i}"))
        if i % 10 == 0:
            await outbox.enqueue(push("#ceo", f"ceo push {i:02d}", key=f"p{i}"))
        await rig.step()
        clock.advance(240)
    assert clock.t == T0
    assert slack.messages == []

    slack.start()
    for _ in range(40):  # bounded: backoffs are capped at max_backoff_s (600 s)
        await drain(rig)
        if await outbox.pending_count() == 0:
            break
        clock.advance(60)
    assert await outbox.pending_count() == 0

    for channel in ("#ops", "#alerts"):
        [summary] = slack.texts(channel)
        assert summary.startswith("[summary] 15 alerts"), summary
        assert f"alert 00 on {channel}" in summary or f"alert 01 on {channel}" in summary
    assert sorted(slack.texts("#ceo")) == ["ceo push 00", "ceo push 10", "ceo push 20"]
    assert len(slack.messages) == 5
    alerts = [r for r in rows(db_path) if r["kind"] == "alert"]
    assert {r["status"] for r in alerts} == {"collapsed"}
    sent_summaries = {
        r["id"] for r in rows(db_path) if r["kind"] == "summary" and r["status"] == "sent"
    }
    assert {r["summary_id"] for r in alerts} == sent_summaries
    assert rig.sent == 5
    assert rig.pending == 0


async def test_stale_alerts_collapse_even_below_the_burst_threshold(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url, burst=100, stale_alert_s=3600)
    clock.t = T0 - 7200  # enqueued while no sender ran
    for i in range(4):
        await outbox.enqueue(alert("#ops", f"stale ops {i}"))
        await outbox.enqueue(alert("#dev", f"stale dev {i}"))
    await outbox.enqueue(push("#ceo", "stale push 1"))
    await outbox.enqueue(push("#ceo", "stale push 2"))
    clock.t = T0
    await outbox.enqueue(alert("#ops", "fresh ops"))

    await drain(rig)
    summaries = [t for t in slack.texts("#ops") if t.startswith("[summary]")]
    assert len(summaries) == 1
    assert summaries[0].startswith("[summary] 4 alerts delayed by an outage")
    # current news is not folded into the backlog summary
    assert sorted(slack.texts("#ops")) == sorted([*summaries, "fresh ops"])
    [dev] = slack.texts("#dev")
    assert dev.startswith("[summary] 4 alerts delayed by an outage")
    assert slack.texts("#ceo") == ["stale push 1", "stale push 2"]


async def test_burst_of_alerts_on_one_channel_collapses_pushes_never_do(
    outbox: Outbox, slack: FakeSlack, db_path: Path
) -> None:
    rig = make_rig(outbox, slack.base_url, burst=5)
    for i in range(7):
        await outbox.enqueue(alert("#ops", f"ops burst {i}"))
        await outbox.enqueue(push("#ceo", f"ceo {i}"))
    for i in range(5):
        await outbox.enqueue(alert("#edge", f"edge {i}"))  # exactly `burst`: not a burst
    await outbox.enqueue(alert("#dev", "lone dev alert"))

    await drain(rig)
    [summary] = slack.texts("#ops")
    assert summary.startswith("[summary] 7 alerts arrived at once")
    assert all(f"ops burst {i}" in summary for i in range(7))
    assert slack.texts("#ceo") == [f"ceo {i}" for i in range(7)]
    assert slack.texts("#edge") == [f"edge {i}" for i in range(5)]
    assert slack.texts("#dev") == ["lone dev alert"]
    assert rig.sample("fleet_notifications_collapsed_total", sink="slack") >= 1


@pytest.mark.parametrize("ending", ["cleared", "expired"])
async def test_silence_holds_alerts_not_pushes_then_summarizes_them(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock, ending: str
) -> None:
    rig = make_rig(outbox, slack.base_url)
    await outbox.set_silence(3600, "drill")
    for i in range(3):
        await outbox.enqueue(alert("#ops", f"drill ops {i}"))
    for i in range(2):
        await outbox.enqueue(alert("#dev", f"drill dev {i}"))
    await outbox.enqueue(alert("#lonely", "single held alert"))
    await outbox.enqueue(push("#ceo", "pushes are never silenced"))

    await drain(rig)
    assert [(m.channel, m.text) for m in slack.messages] == [("#ceo", "pushes are never silenced")]
    alerts = [r for r in rows(db_path) if r["kind"] == "alert"]
    assert {(r["status"], r["held"]) for r in alerts} == {("pending", 1)}

    clock.advance(600)
    await outbox.enqueue(alert("#ops", "drill ops 3"))
    assert await drain(rig) == 0
    assert len(slack.messages) == 1

    if ending == "cleared":
        assert await outbox.clear_silence() is True
    else:
        clock.advance(3000 + 1)
    await drain(rig)
    [ops] = slack.texts("#ops")
    assert ops.startswith("[summary] 4 alerts held during a silence")
    [dev] = slack.texts("#dev")
    assert dev.startswith("[summary] 2 alerts held during a silence")
    assert slack.texts("#lonely") == ["single held alert"]
    assert len(slack.messages) == 4
    assert rig.sent == 4
    assert rig.pending == 0


async def test_rate_limit_per_channel(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url, rate_per_minute=3, burst=100)
    for i in range(5):
        await outbox.enqueue(alert("#ops", f"ops {i}"))
    await outbox.enqueue(alert("#dev", "dev 0"))

    assert await rig.step() == 4
    assert slack.texts("#ops") == ["ops 0", "ops 1", "ops 2"]
    assert slack.texts("#dev") == ["dev 0"]
    assert await rig.step() == 0
    clock.advance(30)
    assert await rig.step() == 0
    assert len(slack.messages) == 4
    assert rig.pending == 2

    clock.advance(31)
    assert await drain(rig) == 2
    assert slack.texts("#ops") == [f"ops {i}" for i in range(5)]
    assert rig.pending == 0


async def test_prune_removes_only_old_finished_rows(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url, prune_after_s=86400)
    await outbox.enqueue(push("#ceo", "old and sent", key="old"))
    await outbox.enqueue(Message("#x", "no such sink", "orphan", sink="pager"))
    await drain(rig)
    assert row_by_key(db_path, "old")["status"] == "sent"

    clock.advance(86400 + 3601)
    await outbox.enqueue(push("#ceo", "new", key="new"))
    await drain(rig)
    keys = {r["dedup_key"]: r["status"] for r in rows(db_path)}
    assert keys == {"orphan": "pending", "new": "sent"}


async def test_metrics_reflect_what_happened(
    outbox: Outbox, slack: FakeSlack, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url)
    slack.reject_channel("#gone")
    slack.fail(500, path="/api/chat.postMessage")
    await outbox.enqueue(alert("#ops", "fails once"))  # takes the 500, stays pending
    await outbox.enqueue(push("#ceo", "one"))
    await outbox.enqueue(push("#ceo", "two"))
    await outbox.enqueue(alert("#gone", "dead"))

    await drain(rig)
    assert rig.sent == 2
    assert rig.failed("server_error") == 1
    assert rig.failed("rejected") == 1
    assert rig.pending == 1

    clock.advance(600)
    await drain(rig)
    assert rig.sent == 3
    assert rig.pending == 0
    exposition = generate_latest(rig.registry).decode()
    assert 'fleet_notifications_failed_total{reason="rejected",sink="slack"} 1.0' in exposition

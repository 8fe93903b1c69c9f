"""The outbox and its sender against a real SQLite file and a fake Slack on 127.0.0.1.

Time is an injected clock: retry delays, leases, staleness, silences and rate windows are
stepped through by advancing it, never by sleeping. Each test builds its own registry.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from shared.notify import Message, NotifyMetrics, Outbox, OutboxRow, OutboxSender, SlackSink
from shared.sections import NotifySection, SlackSection
from tests.fakes import FakeHTTPServer, FakeSlack
from tests.fakes.slack import DEFAULT_TOKEN
from tests.recording_log import RecordingLog

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
    outbox: Outbox,
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
        NotifySection(outbox_db=outbox.path, **notify),
        log=log,
        metrics=NotifyMetrics(registry),
        owner=owner,
    )
    return Rig(sender, registry, log)


async def drain(rig: Rig, max_steps: int = 50) -> int:
    """Step until a step attempts nothing; return how many rows were attempted."""
    total = 0
    for _ in range(max_steps):
        attempted = await rig.step()
        if attempted == 0:
            return total
        total += attempted
    raise AssertionError(f"sender still busy after {max_steps} steps")


def rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        conn.close()


def row_by_key(db: Path, dedup_key: str) -> dict[str, Any]:
    [row] = [r for r in rows(db) if r["dedup_key"] == dedup_key]
    return row


def alert(channel: str, text: str, key: str | None = None) -> Message:
    return Message(channel=channel, text=text, dedup_key=key or f"{channel}:{text}")


def push(channel: str, text: str, key: str | None = None) -> Message:
    return Message(channel=channel, text=text, dedup_key=key or f"{channel}:{text}", kind="push")


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
    ob = await Outbox(db_path, clock=clock).open()
    yield ob
    await ob.close()


# delivery ----------------------------------------------------------------------------------
async def test_message_is_delivered_once_and_counted(
    outbox: Outbox, slack: FakeSlack, db_path: Path
) -> None:
    rig = make_rig(outbox, slack.base_url)
    assert await outbox.enqueue(push("#ceo", "quarterly numbers are in"))

    assert await rig.step() == 1
    assert [(m.channel, m.text) for m in slack.messages] == [("#ceo", "quarterly numbers are in")]
    assert slack.requests[0].headers["authorization"] == f"Bearer {DEFAULT_TOKEN}"
    [row] = rows(db_path)
    assert row["status"] == "sent"
    assert row["sent_at"] == T0
    assert await drain(rig) == 0
    assert len(slack.messages) == 1
    assert rig.sent == 1
    assert rig.pending == 0
    exposition = generate_latest(rig.registry).decode()
    assert 'fleet_notifications_sent_total{sink="slack"} 1.0' in exposition
    assert "fleet_notifications_pending 0.0" in exposition


async def test_429_retry_after_is_waited_out_and_delivered_once(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url)
    slack.fail(429, headers={"Retry-After": "30"}, body={"ok": False, "error": "ratelimited"})
    await outbox.enqueue(alert("#ops", "backup late"))

    assert await rig.step() == 1
    assert slack.messages == []
    assert len(slack.requests) == 1  # no hidden retry inside slack-sdk
    row = rows(db_path)[0]
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["next_attempt_at"] == T0 + 30
    assert rig.failed("rate_limited") == 1

    clock.advance(29)
    assert await rig.step() == 0
    assert len(slack.requests) == 1

    clock.advance(1)
    assert await rig.step() == 1
    assert slack.texts("#ops") == ["backup late"]
    clock.advance(3600)
    assert await drain(rig) == 0
    assert len(slack.messages) == 1
    assert rows(db_path)[0]["status"] == "sent"
    assert rig.sent == 1


async def test_server_error_is_retried_with_backoff_then_delivered(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url)
    slack.fail(500, body="Internal Server Error", times=2)
    await outbox.enqueue(alert("#ops", "disk 91%"))

    assert await rig.step() == 1
    first_retry = rows(db_path)[0]["next_attempt_at"]
    assert first_retry > T0
    assert await rig.step() == 0  # not before the backoff

    clock.t = first_retry
    assert await rig.step() == 1
    second_retry = rows(db_path)[0]["next_attempt_at"]
    assert second_retry - clock.t > first_retry - T0  # the delay grows
    assert slack.messages == []

    clock.t = second_retry
    assert await rig.step() == 1
    assert slack.texts() == ["disk 91%"]
    assert rig.failed("server_error") == 2
    assert rig.sent == 1
    assert rows(db_path)[0]["attempts"] == 3


GARBAGE = [
    pytest.param("text/html", 200, b"<html><body>502 Bad Gateway</body></html>", id="html-200"),
    pytest.param("text/plain", 200, b"OK", id="plain-200"),
    pytest.param("application/json", 200, b'{"ok": tru', id="truncated-json-200"),
    pytest.param("application/json", 200, b"[1, 2]", id="json-array-200"),
    pytest.param("text/plain", 502, b"Bad Gateway", id="plain-502"),
    pytest.param("application/json", 502, b"<html>proxy</html>", id="mislabelled-502"),
]


@pytest.mark.parametrize(("content_type", "status", "body"), GARBAGE)
async def test_garbage_body_is_transient_and_nothing_is_lost(
    outbox: Outbox,
    slack: FakeSlack,
    db_path: Path,
    clock: Clock,
    content_type: str,
    status: int,
    body: bytes,
) -> None:
    rig = make_rig(outbox, slack.base_url)
    slack.garbage(status=status, content_type=content_type, body=body)
    await outbox.enqueue(alert("#ops", "cert expires in 5 days"))

    assert await rig.step() == 1
    assert slack.messages == []
    row = rows(db_path)[0]
    assert row["status"] == "pending"
    assert row["last_error"]
    [failure] = rig.log.events("notification failed")
    assert failure["permanent"] is False
    assert failure["reason"] in {"bad_response", "server_error"}

    clock.t = row["next_attempt_at"]
    assert await rig.step() == 1
    assert slack.texts() == ["cert expires in 5 days"]
    assert rig.sent == 1


@pytest.mark.parametrize("fault", ["reset", "close", "hang", "refused"])
async def test_connection_failures_are_transient_and_nothing_is_lost(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock, fault: str
) -> None:
    # timeout_s=1 bounds the "hang" case: the server never answers, the client gives up.
    rig = make_rig(outbox, slack.base_url, timeout_s=1)
    if fault == "refused":
        slack.stop()  # the port is closed: connection refused
    else:
        getattr(slack, fault)()
    await outbox.enqueue(push("#ceo", "board meeting moved"))

    assert await asyncio.wait_for(rig.step(), timeout=30) == 1
    assert slack.messages == []
    row = rows(db_path)[0]
    assert row["status"] == "pending"
    assert rig.failed("connection") == 1
    assert rig.pending == 1

    if fault == "refused":
        slack.start()
    clock.t = row["next_attempt_at"]
    assert await rig.step() == 1
    assert slack.texts("#ceo") == ["board meeting moved"]
    assert rig.sent == 1
    assert rig.pending == 0


async def test_slow_answer_within_timeout_is_delivered(outbox: Outbox, slack: FakeSlack) -> None:
    rig = make_rig(outbox, slack.base_url, timeout_s=5)
    slack.slow(0.3)
    await outbox.enqueue(alert("#ops", "slow but fine"))
    assert await rig.step() == 1
    assert slack.texts() == ["slow but fine"]
    assert rig.failed("connection") == 0


async def test_permanent_slack_error_marks_row_dead_and_counts_it(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    rig = make_rig(outbox, slack.base_url)
    slack.reject_channel("#gone", "channel_not_found")
    await outbox.enqueue(alert("#gone", "nobody hears this", key="k-gone"))
    await outbox.enqueue(alert("#ops", "everyone hears this", key="k-ops"))

    assert await drain(rig) == 2
    dead = row_by_key(db_path, "k-gone")
    assert dead["status"] == "dead"
    assert "channel_not_found" in dead["last_error"]
    assert row_by_key(db_path, "k-ops")["status"] == "sent"
    assert slack.texts() == ["everyone hears this"]
    assert rig.failed("rejected") == 1
    [failure] = rig.log.events("notification failed")
    assert failure["permanent"] is True
    assert any(level == "error" for level, ev, _ in rig.log.records if ev == "notification failed")

    requests_before = len(slack.requests)
    clock.advance(86400)
    assert await drain(rig) == 0
    assert len(slack.requests) == requests_before  # a dead row is never retried
    assert rig.pending == 0


async def test_invalid_auth_holds_the_message_instead_of_killing_it(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    wrong = make_rig(outbox, slack.base_url, token="xoxb-rotated-away")
    await outbox.enqueue(push("#ceo", "do not lose me"))

    assert await wrong.step() == 1
    row = rows(db_path)[0]
    assert row["status"] == "pending"
    assert "invalid_auth" in row["last_error"]
    assert wrong.failed("auth") == 1
    assert slack.messages == []

    fixed = make_rig(outbox, slack.base_url, owner="sender-restarted")
    clock.t = row["next_attempt_at"]
    assert await fixed.step() == 1
    assert slack.texts() == ["do not lose me"]


async def test_empty_token_holds_messages_until_a_token_is_configured(
    outbox: Outbox, slack: FakeSlack, db_path: Path, clock: Clock
) -> None:
    tokenless = make_rig(outbox, slack.base_url, token="")
    await outbox.enqueue(push("#ceo", "held push"))
    await outbox.enqueue(alert("#ops", "held alert"))

    for _ in range(3):
        assert await tokenless.step() == 0
        clock.advance(60)
    assert slack.requests == []
    assert {r["status"] for r in rows(db_path)} == {"pending"}
    assert all(r["attempts"] == 0 for r in rows(db_path))
    assert tokenless.pending == 2
    assert len(tokenless.log.events("sink not configured; holding messages")) == 1

    configured = make_rig(outbox, slack.base_url, owner="sender-with-token")
    assert await drain(configured) == 2
    assert sorted(slack.texts()) == ["held alert", "held push"]
    assert configured.pending == 0
    assert await drain(configured) == 0
    assert len(slack.messages) == 2


async def test_same_dedup_key_is_stored_and_delivered_once(
    outbox: Outbox, slack: FakeSlack, db_path: Path
) -> None:
    rig = make_rig(outbox, slack.base_url)
    assert await outbox.enqueue(alert("#ops", "lease expired", key="lease:42")) is True
    assert await outbox.enqueue(alert("#ops", "lease expired (again)", key="lease:42")) is False
    assert len(rows(db_path)) == 1

    assert await drain(rig) == 1
    assert await outbox.enqueue(alert("#ops", "lease expired", key="lease:42")) is False
    assert await drain(rig) == 0
    assert slack.texts() == ["lease expired"]


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
    outbox: Outbox, db_path: Path, clock: Clock
) -> None:
    registry = CollectorRegistry()
    sink = BrokenOnceSink()
    sender = OutboxSender(
        outbox,
        {"slack": sink},
        NotifySection(outbox_db=db_path),
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


# concurrency and crashes -------------------------------------------------------------------
async def test_two_senders_never_send_the_same_row_twice(
    db_path: Path, slack: FakeSlack, clock: Clock
) -> None:
    ob_a = await Outbox(db_path, clock=clock).open()
    ob_b = await Outbox(db_path, clock=clock).open()
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
    ob_a = await Outbox(db_path, clock=clock).open()
    ob_b = await Outbox(db_path, clock=clock).open()
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
    ghost = await Outbox(db_path, clock=clock).open()
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


# the fake itself ---------------------------------------------------------------------------
def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_fake_http_server_applies_faults_in_order_and_records_requests() -> None:
    def handler(method: str, path: str, headers: Any, body: bytes) -> Any:
        return 200, {"X-Fake": "1"}, {"path": path}

    with FakeHTTPServer(handler) as server:
        server.fail(503, body="busy", path="/only-here")
        server.fail(429, headers={"Retry-After": "7"})
        server.reset()
        assert _get(server.base_url + "/elsewhere") == (429, b"")
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            _get(server.base_url + "/elsewhere")
        assert _get(server.base_url + "/only-here?x=1") == (503, b"busy")
        assert _get(server.base_url + "/ok") == (200, b'{"path": "/ok"}')
        seen = server.requests
        assert [(r.path, r.fault) for r in seen] == [
            ("/elsewhere", "status:429"),
            ("/elsewhere", "reset"),
            ("/only-here", "status:503"),
            ("/ok", None),
        ]
        assert seen[2].query == {"x": ["1"]}
        server.hang()
        with pytest.raises((TimeoutError, urllib.error.URLError)):
            urllib.request.urlopen(server.base_url + "/hang", timeout=0.5)
        assert server.wait_for_requests(5, timeout=5)
    assert not server.running
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        _get(server.base_url + "/after-stop")

"""The outbox and its sender against a real SQLite file and a fake Slack on 127.0.0.1: what
is delivered, retried, held or killed, and what the fake itself does.

Time is an injected clock: retry delays, leases, staleness, silences and rate windows are
stepped through by advancing it, never by sleeping. Each test builds its own registry.
Collapse, silence, rate limits and concurrency are in test_notify_policy.py.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from shared.notify import Outbox
from shared.notify.message import OutboxRow
from shared.notify.sink import SinkError
from shared.notify.slack import SlackSink
from shared.sections import SlackSection
from tests.fakes import FakeHTTPServer, FakeSlack
from tests.fakes.slack import DEFAULT_TOKEN
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


async def test_an_undecodable_answer_is_not_quoted_in_any_log(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    # slack-sdk's sync client logs such a body at ERROR by default; the sink mutes it.
    sink = SlackSink(SlackSection(token=DEFAULT_TOKEN, base_url=slack.base_url, timeout_s=5))
    slack.garbage(body=b"<html>proxy page naming internal-host-42</html>")
    row = OutboxRow(1, "k", "slack", "#ops", "alert", "hello", {}, "test", T0, 0)
    with caplog.at_level("DEBUG"), pytest.raises(SinkError) as exc:
        await sink.send(row)
    assert exc.value.reason == "bad_response" and not exc.value.permanent
    assert "internal-host-42" not in caplog.text
    assert "internal-host-42" not in str(exc.value)
    assert slack.messages == []


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

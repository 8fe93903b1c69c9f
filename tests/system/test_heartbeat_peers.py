"""Peer watch through real `fleet run heartbeat` processes against a scripted fake peer and the
Slack fake: a dying peer alerts #ops after exactly 2 failed probes and escalates after 5, one
recovery; a flapping peer never re-alerts, not even across a restart; two primaries alert once
per incident."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.fakes.peer import FakePeer
from tests.fakes.slack import FakeSlack
from tests.heartbeat_support import (
    HeartbeatProcess,
    metric_value,
    only_enabled,
    outbox_rows,
    rows_of,
    write_config,
)

pytestmark = pytest.mark.system

ESCALATE_TO = "U0ESCALATE"


def peer_env(fleet_env: dict[str, str], slack: FakeSlack | None) -> dict[str, str]:
    env = only_enabled(fleet_env, "heartbeat")
    if slack is not None:
        env.update(FLEET_SLACK__BASE_URL=slack.base_url, FLEET_SLACK__TOKEN=slack.token)
    return env


def peer_config(tmp_path: Path, peer: FakePeer, **overrides: object) -> Path:
    settings = {
        "name": "forge",
        "url": peer.health_url,
        "interval_s": 0.05,
        "timeout_s": 30,
        "alert_after": 2,
        "escalate_after": 5,
        "recovery_after": 2,
        **overrides,
    }
    return write_config(
        tmp_path / "fleet.toml",
        heartbeat={"interval_s": 0.05, "escalation_channel": ESCALATE_TO},
        peers=[settings],
    )


def test_dead_peer_alerts_after_2_escalates_after_5_and_recovers_once(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    with FakeSlack() as slack, FakePeer(hold=True) as peer:
        hb = HeartbeatProcess(peer_env(fleet_env, slack), tmp_path, peer_config(tmp_path, peer))
        with hb:
            probes = 0

            def step(*outcomes: str) -> None:
                """Answer the held probe(s); wait until the next probe arrives, which the daemon
                launches only after handling (and enqueueing the alerts of) the previous one."""
                nonlocal probes
                for outcome in outcomes:
                    peer.script(outcome)  # type: ignore[arg-type]
                    probes += 1
                    assert peer.wait_for_requests(probes + 1, timeout=15), (
                        f"probe {probes + 1} never came",
                        hb.stop(),
                    )

            assert peer.wait_for_requests(1, timeout=15), hb.stop()
            step("ok")
            step("fail")
            assert outbox_rows(fleet_root) == [], "one failed probe must not alert"
            step("fail")
            down = rows_of(fleet_root, "down")
            assert len(down) == 1, outbox_rows(fleet_root)
            assert down[0]["channel"] == "#ops"
            assert "forge" in down[0]["text"] and "2 failed probes" in down[0]["text"]
            assert rows_of(fleet_root, "escalated") == []
            step("fail", "fail")
            assert rows_of(fleet_root, "escalated") == [], "4 failures: not escalated yet"
            assert len(rows_of(fleet_root, "down")) == 1
            step("fail")
            escalated = rows_of(fleet_root, "escalated")
            assert len(escalated) == 1, outbox_rows(fleet_root)
            assert escalated[0]["channel"] == ESCALATE_TO
            assert "5 failed probes" in escalated[0]["text"]
            assert (
                metric_value(
                    hb.metrics(), "fleet_heartbeat_peer_consecutive_failures", peer="forge"
                )
                == 5
            )
            assert metric_value(hb.metrics(), "fleet_heartbeat_peer_up", peer="forge") == 0
            step("fail", "fail", "fail")  # still down: nothing new
            assert len(outbox_rows(fleet_root)) == 2
            step("ok")
            assert rows_of(fleet_root, "recovered") == [], "recovery must hold 2 probes"
            step("ok")
            recovered = rows_of(fleet_root, "recovered")
            assert [r["channel"] for r in recovered] == ["#ops"]
            assert "answering again after" in recovered[0]["text"]
            # The escalation target that was woken up hears the all-clear too.
            assert len([r for r in outbox_rows(fleet_root) if r["channel"] == ESCALATE_TO]) == 2
            assert metric_value(hb.metrics(), "fleet_heartbeat_peer_up", peer="forge") == 1
            step("ok", "ok", "ok")
            assert len(outbox_rows(fleet_root)) == 4, "nothing more while the peer is up"
            # Delivered for real: #ops got one down and one recovery, the DM target two.
            assert wait_until(lambda: len(slack.messages) >= 4, timeout=15), slack.messages
        out = hb.stop()
    ops = slack.texts("#ops")
    assert len(ops) == 2 and "not answering" in ops[0] and "answering again" in ops[1]
    dm = slack.texts(ESCALATE_TO)
    assert len(dm) == 2 and "ESCALATION" in dm[0] and "answering again" in dm[1]
    assert '"peer down"' in out and '"peer recovered"' in out


def test_flapping_peer_alerts_once_even_across_a_restart(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    with FakePeer(hold=True) as peer:
        config = peer_config(tmp_path, peer)
        env = peer_env(fleet_env, None)  # no Slack token: alerts wait in the outbox
        hb = HeartbeatProcess(env, tmp_path, config).start()
        try:
            assert peer.wait_for_requests(1, timeout=15), hb.stop()
            pattern = ["fail", "fail", "ok", "fail", "fail", "ok", "fail", "ok", "fail", "fail"]
            for n, outcome in enumerate(pattern, start=2):
                peer.script(outcome)  # type: ignore[arg-type]
                assert peer.wait_for_requests(n, timeout=15), hb.stop()
            assert len(rows_of(fleet_root, "down")) == 1, outbox_rows(fleet_root)
            assert rows_of(fleet_root, "recovered") == [], "single good probes do not recover"
            assert rows_of(fleet_root, "escalated") == [], "never 5 failures in a row"
        finally:
            peer.default = "fail"  # the peer stays down from here on
            peer.set_hold(False)  # release the held probe so the daemon can stop
            hb.stop()
        state = json.loads((fleet_root / "state/heartbeat-peers.json").read_text())
        assert state["peers"]["forge"]["level"] == "down"
        assert (fleet_root / "state/heartbeat-peers.json").stat().st_mode & 0o777 == 0o600
        # Restart mid-incident with the peer still failing: no second "down" alert, and the
        # escalation belongs to the same incident.
        hb2 = HeartbeatProcess(env, tmp_path, config).start()
        try:
            assert wait_until(lambda: rows_of(fleet_root, "escalated") != [], timeout=15), (
                hb2.stop()
            )
        finally:
            hb2.stop()
    down, escalated = rows_of(fleet_root, "down"), rows_of(fleet_root, "escalated")
    assert len(down) == 1 and len(escalated) == 1
    incident = down[0]["key"].rsplit(":", 1)[0]
    assert escalated[0]["key"].startswith(incident + ":")
    assert escalated[0]["channel"] == ESCALATE_TO


def test_two_primaries_alert_once_per_incident(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    with FakePeer(role="primary") as peer:
        config = peer_config(tmp_path, peer)
        with HeartbeatProcess(peer_env(fleet_env, None), tmp_path, config) as hb:
            assert wait_until(lambda: len(peer.requests) >= 10, timeout=15), hb.stop()
            two = rows_of(fleet_root, "two_primaries")
            assert len(two) == 1, outbox_rows(fleet_root)
            assert two[0]["channel"] == "#ops" and "TWO PRIMARIES" in two[0]["text"]
            assert metric_value(hb.metrics(), "fleet_heartbeat_two_primaries", peer="forge") == 1
            # The peer is demoted: resolved once; promoted again: a new incident, one alert.
            peer.role = "standby"
            assert wait_until(
                lambda: len(rows_of(fleet_root, "two_primaries_resolved")) == 1, timeout=15
            )
            seen = len(peer.requests)
            assert wait_until(lambda: len(peer.requests) >= seen + 5, timeout=15)
            peer.role = "primary"
            assert wait_until(lambda: len(rows_of(fleet_root, "two_primaries")) == 2, timeout=15)
            # This host is demoted instead (`fleet role set standby` writes the role file,
            # read on every probe): resolved, and no new alert while it stays standby.
            (fleet_root / "state/role").write_text("standby\n")
            assert wait_until(
                lambda: len(rows_of(fleet_root, "two_primaries_resolved")) == 2, timeout=15
            )
            seen = len(peer.requests)
            assert wait_until(lambda: len(peer.requests) >= seen + 10, timeout=15)
            assert len(rows_of(fleet_root, "two_primaries")) == 2
            status, body = hb.health()
            assert status == 200 and body is not None and body["role"] == "standby"
    assert [r["key"].rsplit(":", 1)[1] for r in outbox_rows(fleet_root)] == [
        "two_primaries",
        "two_primaries_resolved",
        "two_primaries",
        "two_primaries_resolved",
    ]

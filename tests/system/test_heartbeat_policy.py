"""The heartbeat daemon's pure core, table-driven: the peer incident state machine, two
primaries, the fleet verdict, ping targets, alert texts and dedup keys; plus its config
validation, state file and the HTTP adapters against fakes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from daemons.heartbeat.config import HeartbeatSection, PeerConfig, PingConfig
from daemons.heartbeat.daemon import resolve_pings
from daemons.heartbeat.policy import (
    PeerState,
    Thresholds,
    describe_duration,
    event_message,
    fleet_report,
    observe,
    ping_target,
    url_hash,
)
from daemons.heartbeat.probe import MAX_BODY, parse_health, probe_peer, send_ping
from daemons.heartbeat.store import PeerStateFile
from fleet.config import load_config
from shared.config import ConfigError
from shared.heartbeats import HeartbeatStatus
from shared.notify import Message
from shared.roles import Role
from shared.runtime import RefusedToStart
from tests.fakes.http import FakeHTTPServer
from tests.fakes.peer import FakePeer

T = Thresholds(alert_after=2, escalate_after=5, recovery_after=2)


def run(
    outcomes: str,
    *,
    thresholds: Thresholds = T,
    peer_role: str | None = None,
    local_role: str = "standby",
) -> tuple[PeerState, list[tuple[int, str]]]:
    """Feed probe outcomes ('x' failed, '.' ok), one per 60 s; return the final state and
    (probe number, event kind) for every event."""
    state = PeerState("forge")
    events: list[tuple[int, str]] = []
    for i, ch in enumerate(outcomes, start=1):
        state, evs = observe(
            state,
            ok=ch == ".",
            now=1000.0 + 60 * i,
            thresholds=thresholds,
            local_role=Role(local_role),
            peer_role=Role(peer_role) if peer_role is not None and ch == "." else None,
            error="" if ch == "." else "connection failed",
        )
        events += [(i, e.kind) for e in evs]
    return state, events


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ("....", []),
        ("x", []),
        ("x.x.x.x.", []),  # never 2 in a row
        ("xx", [(2, "down")]),
        ("xxxx", [(2, "down")]),
        ("xxxxx", [(2, "down"), (5, "escalated")]),
        ("xxxxxxxxxx", [(2, "down"), (5, "escalated")]),
        ("xx.", [(2, "down")]),  # one good probe does not recover
        ("xx..", [(2, "down"), (4, "recovered")]),
        ("xx.x.x.xx.x", [(2, "down")]),  # flapping: no repeat alert, no recovery
        ("xx.xxxxx", [(2, "down"), (8, "escalated")]),  # escalation needs 5 in a row
        ("xx..xx..", [(2, "down"), (4, "recovered"), (6, "down"), (8, "recovered")]),
        ("xxxxx..", [(2, "down"), (5, "escalated"), (7, "recovered")]),
    ],
)
def test_peer_incidents(outcomes: str, expected: list[tuple[int, str]]) -> None:
    assert run(outcomes)[1] == expected


def test_recovery_reports_outage_from_first_failure_to_first_good_probe() -> None:
    state = PeerState("forge")
    kinds = []
    for now, ok in [
        (100, True),
        (160, False),
        (220, False),
        (280, False),
        (340, True),
        (400, True),
    ]:
        state, evs = observe(state, ok=ok, now=now, thresholds=T, local_role="primary")
        kinds += evs
    assert [e.kind for e in kinds] == ["down", "recovered"]
    down, recovered = kinds
    assert down.incident_at == recovered.incident_at == 160
    assert recovered.outage_s == 180  # 160 -> 340
    assert state.level == "ok" and state.incident_at is None


def test_levels_when_alert_equals_escalate() -> None:
    same = Thresholds(alert_after=3, escalate_after=3, recovery_after=1)
    assert run("xxx.", thresholds=same)[1] == [(3, "down"), (3, "escalated"), (4, "recovered")]


def test_counters_and_state() -> None:
    state, _ = run("xxx")
    assert (state.level, state.consecutive_failures, state.probes) == ("down", 3, 3)
    assert state.last_ok is False and state.last_error == "connection failed"
    state, _ = run("xx.")
    assert (state.level, state.consecutive_failures, state.consecutive_successes) == ("down", 0, 1)


@pytest.mark.parametrize(
    ("local", "peer_role", "outcomes", "expected"),
    [
        ("primary", "primary", "....", [(1, "two_primaries")]),
        ("primary", "standby", "....", []),
        ("standby", "primary", "....", []),
        ("primary", "primary", ".xx.", [(1, "two_primaries"), (3, "down")]),
    ],
)
def test_two_primaries_once_per_incident(
    local: str, peer_role: str, outcomes: str, expected: list[tuple[int, str]]
) -> None:
    assert run(outcomes, peer_role=peer_role, local_role=local)[1] == expected


def test_two_primaries_resolves_then_new_incident() -> None:
    state = PeerState("forge")
    seen = []
    for now, role in [
        (1, "primary"),
        (2, "primary"),
        (3, "standby"),
        (4, "standby"),
        (5, "primary"),
        (6, "primary"),
    ]:
        state, evs = observe(
            state, ok=True, now=now, thresholds=T, local_role="primary", peer_role=role
        )
        seen += [(e.kind, e.incident_at) for e in evs]
    assert seen == [("two_primaries", 1), ("two_primaries_resolved", 1), ("two_primaries", 5)]


def test_unknown_peer_role_does_not_resolve_two_primaries() -> None:
    state, _ = observe(
        PeerState("p"), ok=True, now=1, thresholds=T, local_role="primary", peer_role="primary"
    )
    state, evs = observe(state, ok=True, now=2, thresholds=T, local_role="primary", peer_role=None)
    assert evs == [] and state.two_primaries_at == 1


def messages(outcomes: str, escalation: str = "U0ESC") -> list[Message]:
    state = PeerState("forge")
    out: list[Message] = []
    for i, ch in enumerate(outcomes, start=1):
        previous = state
        state, evs = observe(
            state,
            ok=ch == ".",
            now=1_700_000_000.0 + 60 * i,
            thresholds=T,
            local_role="standby",
            error="HTTP 503",
        )
        for ev in evs:
            out += event_message(
                ev,
                host="anvil",
                ops_channel="#ops",
                escalation_channel=escalation,
                escalated=previous.level == "escalated",
            )
    return out


def test_messages_channels_and_dedup_keys() -> None:
    msgs = messages("xxxxx..")
    assert [m.channel for m in msgs] == ["#ops", "U0ESC", "#ops", "U0ESC"]
    keys = [m.dedup_key for m in msgs]
    assert len(set(keys)) == 4
    incident = "heartbeat:peer:forge:1700000060000"
    assert keys[:3] == [f"{incident}:down", f"{incident}:escalated", f"{incident}:recovered"]
    assert "2 failed probes" in msgs[0].text and "HTTP 503" in msgs[0].text
    assert "5 failed probes" in msgs[1].text and "4m00s" in msgs[1].text
    assert "after 5m00s down" in msgs[2].text  # first failure -> first good probe
    assert all(m.kind == "alert" and m.daemon == "heartbeat" for m in msgs)
    # Not escalated: the recovery goes to #ops only. No escalation target: #ops gets it.
    assert [m.channel for m in messages("xx..")] == ["#ops", "#ops"]
    no_target = messages("xxxxx..", escalation="")
    assert [m.channel for m in no_target] == ["#ops", "#ops", "#ops"]
    assert "no [heartbeat] escalation_channel configured" in no_target[1].text
    # A second incident gets new keys; the same incident replayed gets the same ones.
    again = messages("xxxxx..xx")
    assert again[-1].dedup_key != msgs[0].dedup_key
    assert [m.dedup_key for m in messages("xxxxx..")] == keys


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.6, "1m00s"), (125, "2m05s"), (3600, "1h00m"), (7500, "2h05m"), (90000, "1d1h")],
)
def test_describe_duration(seconds: float, text: str) -> None:
    assert describe_duration(seconds) == text


def status(name: str, ok: bool, age: float | None = 5.0) -> HeartbeatStatus:
    return HeartbeatStatus(
        name,
        ok,
        1_700_000_000.0 if age is not None else None,
        age,
        60.0,
        3,
        "ok" if ok else "no heartbeat file",
    )


def test_fleet_report() -> None:
    report = fleet_report(
        host="anvil",
        role="primary",
        version="0.1.0",
        now=1_700_000_100.0,
        statuses={
            "heartbeat": status("heartbeat", True),
            "claim-sweeper": status("claim-sweeper", False, None),
        },
    )
    assert not report.ok and report.stale == ["claim-sweeper"]
    body = report.body
    assert body["status"] == "degraded" and body["role"] == "primary"
    assert body["ts"] == "2023-11-14T22:15:00Z"
    assert body["daemons"]["heartbeat"] == {
        "ok": True,
        "last_ok_at": "2023-11-14T22:13:20Z",
        "age_s": 5.0,
        "expected_interval_s": 60.0,
        "reason": "ok",
    }
    assert body["daemons"]["claim-sweeper"]["last_ok_at"] is None
    ok = fleet_report(
        host="a",
        role="standby",
        version="v",
        now=0,
        statuses={"heartbeat": status("heartbeat", True)},
    )
    assert ok.ok and ok.body["status"] == "ok" and ok.body["stale"] == []


@pytest.mark.parametrize("ts", [1_735_689_600_000.0, 1e20, float("inf"), float("nan"), -1e20])
def test_fleet_report_survives_an_unrenderable_timestamp(ts: float) -> None:
    bad = HeartbeatStatus("claim-sweeper", True, ts, 5.0, 60.0, 3, "ok")
    report = fleet_report(
        host="a",
        role="primary",
        version="v",
        now=1_700_000_100.0,
        statuses={"claim-sweeper": bad, "heartbeat": status("heartbeat", True)},
    )
    assert not report.ok and report.stale == ["claim-sweeper"]
    assert report.body["daemons"]["claim-sweeper"] == {
        "ok": False,
        "last_ok_at": None,
        "age_s": None,
        "expected_interval_s": 60.0,
        "reason": "unreadable heartbeat file",
    }
    json.dumps(report.body, allow_nan=False)  # the /health body stays valid JSON


@pytest.mark.parametrize(
    ("url", "fail"),
    [
        ("https://hc-ping.example.com/abc", "https://hc-ping.example.com/abc/fail"),
        ("https://hc-ping.example.com/abc/", "https://hc-ping.example.com/abc/fail"),
        (
            "http://127.0.0.1:8000/ping/k/slug?create=1",
            "http://127.0.0.1:8000/ping/k/slug/fail?create=1",
        ),
    ],
)
def test_ping_target(url: str, fail: str) -> None:
    assert ping_target(url, degraded=False) == url
    assert ping_target(url, degraded=True) == fail
    assert len(url_hash(url)) == 8 and url_hash(url) != url_hash(fail)


# config ------------------------------------------------------------------------------------
def load(tmp_path: Path, text: str) -> HeartbeatSection:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    path.chmod(0o600)  # an inline ping URL is a secret: the config must be private
    section = load_config(path).heartbeat
    assert isinstance(section, HeartbeatSection)
    return section


def test_defaults_and_peers_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_FLEET__ROOT", str(tmp_path / "root"))
    section = load(
        tmp_path,
        """
[heartbeat]
escalation_channel = "U0123ABCD"
[[heartbeat.peers]]
name = "forge"
url = "http://forge.example.org:8099/health"
[[heartbeat.pings]]
url = "https://hc-ping.example.com/5b0c7f6e"
""",
    )
    assert section.enabled and section.health_bind == "127.0.0.1" and section.health_port == 8099
    assert section.metrics_port == 9804 and section.interval_s == 5.0
    peer = section.peers[0]
    assert (peer.interval_s, peer.alert_after, peer.escalate_after, peer.recovery_after) == (
        60.0,
        2,
        5,
        2,
    )
    ping = section.pings[0]
    assert (ping.interval_s, ping.retries) == (60.0, 2)
    assert "5b0c7f6e" not in repr(ping) and "5b0c7f6e" not in str(section)
    assert section.state_file == tmp_path / "root/state/heartbeat-peers.json"
    assert HeartbeatSection().peers == [] and HeartbeatSection().pings == []


@pytest.mark.parametrize(
    ("toml", "path", "message"),
    [
        (
            '[[heartbeat.peers]]\nname = "forge"\nurl = "ftp://x"\n',
            "heartbeat.peers[0].url",
            "http",
        ),
        (
            '[[heartbeat.peers]]\nname = "Forge!"\nurl = "http://x.example.org"\n',
            "heartbeat.peers[0].name",
            "a-z",
        ),
        (
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://x.example.org/${{ secrets.X }}"\n',
            "heartbeat.peers[0].url",
            "${{",
        ),
        (
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://x.example.org"\nalert_after = 5\n'
            "escalate_after = 2\n",
            "heartbeat.peers[0]",
            "escalate_after (2) must be >=",
        ),
        (
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://a.example.org"\n'
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://b.example.org"\n',
            "heartbeat",
            "duplicate name(s) f",
        ),
        ("[[heartbeat.pings]]\ninterval_s = 60\n", "heartbeat.pings[0]", "url or url_file"),
        ("[heartbeat]\nhealth_port = 9804\n", "heartbeat", "also metrics_port"),
        (
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://127.0.0.1:80990/health"\n',
            "heartbeat.peers[0].url",
            "port between 1 and 65535",
        ),
        (
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://127.0.0.1:x/health"\n',
            "heartbeat.peers[0].url",
            "port between 1 and 65535",
        ),
        (
            '[[heartbeat.peers]]\nname = "f"\nurl = "http://a.example.org"\ninterval_s = 0\n',
            "heartbeat.peers[0].interval_s",
            "greater than or equal",
        ),
    ],
)
def test_config_errors_name_their_path(tmp_path: Path, toml: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    assert any(p.startswith(path) and message in m for p, m in info.value.errors), info.value.errors


def test_bad_ping_url_error_does_not_echo_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[[heartbeat.pings]]\nurl = "hc-ping.example.com/very-secret-uuid"\n')
    assert "very-secret-uuid" not in info.value.render()
    assert "heartbeat.pings[0]" in info.value.render()


def test_ping_url_file(tmp_path: Path) -> None:
    secret = tmp_path / "ping-url"
    secret.write_text("https://hc-ping.example.com/file-uuid\n")
    targets = resolve_pings([PingConfig(url_file=secret, name="hc")])
    assert targets[0].url == "https://hc-ping.example.com/file-uuid"
    assert targets[0].label == "hc" and targets[0].key == url_hash(targets[0].url)
    with pytest.raises(RefusedToStart, match=r"pings\[0\] \(hc\).url_file: cannot read"):
        resolve_pings([PingConfig(url_file=tmp_path / "missing", name="hc")])
    secret.write_text("not a url with-secret-part\n")
    with pytest.raises(RefusedToStart) as info:
        resolve_pings([PingConfig(url_file=secret)])
    assert "with-secret-part" not in str(info.value)
    secret.write_text("https://hc-ping.example.com:99999/port-secret\n")
    with pytest.raises(RefusedToStart, match="port between") as info:
        resolve_pings([PingConfig(url_file=secret)])
    assert "port-secret" not in str(info.value)
    url = "https://hc-ping.example.com/x"
    with pytest.raises(RefusedToStart, match="configured twice"):
        resolve_pings([PingConfig(url=url), PingConfig(url=url)])  # type: ignore[arg-type]


# state file --------------------------------------------------------------------------------
def test_state_file_round_trip_and_hostile_content(tmp_path: Path) -> None:
    store = PeerStateFile(tmp_path / "state/peers.json")
    assert store.load(["forge"]).peers == {}
    state, _ = run("xxx")
    pending = [Message("#ops", "forge down", "heartbeat:peer:forge:1:down")]
    store.save({"forge": state}, pending)
    assert (tmp_path / "state/peers.json").stat().st_mode & 0o777 == 0o600
    loaded = store.load(["forge", "anvil"])
    assert loaded.peers == {"forge": state} and loaded.problem is None
    assert [(m.channel, m.dedup_key) for m in loaded.pending] == [
        ("#ops", "heartbeat:peer:forge:1:down")
    ]
    assert store.load([]).peers == {}, "peers no longer configured are dropped"
    for garbage in ["{", "[]", '{"version": 99}', "\x00\x01"]:
        (tmp_path / "state/peers.json").write_text(garbage)
        bad = store.load(["forge"])
        assert bad.peers == {} and bad.problem
    (tmp_path / "state/peers.json").write_text(
        json.dumps(
            {
                "version": 1,
                "peers": {
                    "forge": {
                        "level": "exploded",
                        "consecutive_failures": "many",
                        "incident_at": True,
                        "probes": -3,
                        "last_error": 7,
                    }
                },
                "pending": [{"channel": "#ops"}, "x", None],
            }
        )
    )
    odd = store.load(["forge"])
    assert odd.peers["forge"] == PeerState("forge") and odd.pending == []
    (tmp_path / "state/peers.json").write_text(
        json.dumps({"version": 1, "peers": {"forge": {"level": "down", "incident_at": None}}})
    )
    assert store.load(["forge"]).peers["forge"].level == "ok", "an incident needs its start"


def test_state_file_keeps_the_peer_role_as_a_role(tmp_path: Path) -> None:
    path = tmp_path / "state/peers.json"
    store = PeerStateFile(path)
    state, _ = run("..", peer_role="primary")
    store.save({"forge": state}, [])
    raw = json.loads(path.read_text())
    assert raw["peers"]["forge"]["peer_role"] == "primary"  # stored as the plain string
    loaded = store.load(["forge"]).peers["forge"]
    assert loaded == state and loaded.peer_role is Role.PRIMARY
    raw["peers"]["forge"]["peer_role"] = "leader"  # not a role: read as unknown
    path.write_text(json.dumps(raw))
    assert store.load(["forge"]).peers["forge"].peer_role is None


# adapters ----------------------------------------------------------------------------------
@pytest.mark.system
async def test_probe_peer_outcomes() -> None:
    with FakePeer(role="primary") as peer, FakeHTTPServer() as other:
        async with httpx.AsyncClient() as client:
            ok = await probe_peer(client, peer.health_url, 5)
            assert ok.ok and ok.role == "primary" and ok.fleet_status == "ok"
            peer.script("fail", "garbage")
            fail = await probe_peer(client, peer.health_url, 5)
            assert not fail.ok and fail.error == "HTTP 503, not a health answer"
            garbage = await probe_peer(client, peer.health_url, 5)
            assert not garbage.ok and "not a health answer" in garbage.error
            peer.hang()
            hung = await probe_peer(client, peer.health_url, 0.3)
            assert not hung.ok and hung.error == "timeout"
            peer.reset()
            reset = await probe_peer(client, peer.health_url, 5)
            assert not reset.ok and reset.error in ("connection dropped", "ReadError")
            other.fail(200, body=b'{"status": "ok", "role": "' + b"x" * (2 * MAX_BODY) + b'"}')
            huge = await probe_peer(client, other.base_url + "/health", 5)
            assert not huge.ok, "an oversized answer is cut, and then not a health answer"
            other.fail(200, body=b'{"status": "ok", "role": ' + b"[" * (MAX_BODY - 40) + b"}")
            deep = await probe_peer(client, other.base_url + "/health", 5)
            assert not deep.ok and deep.error == "HTTP 200, not a health answer"
            peer.stop()
            refused = await probe_peer(client, peer.health_url, 5)
            assert not refused.ok and refused.error == "connection failed"
            assert peer.health_url not in refused.error


@pytest.mark.system
async def test_send_ping_retries_then_gives_up() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        await asyncio.sleep(0)

    with FakeHTTPServer(handler=lambda *a: (200, {}, "OK")) as hc:
        url = hc.base_url + "/ping/secret-uuid"
        async with httpx.AsyncClient() as client:
            hc.fail(500, times=2)
            ok = await send_ping(client, url, timeout_s=5, retries=2, sleep=sleep)
            assert ok.ok and ok.attempts == 3 and slept == [1.0, 2.0]
            hc.fail(500, times=3)
            bad = await send_ping(client, url, timeout_s=5, retries=2, sleep=sleep)
            assert not bad.ok and bad.attempts == 3 and bad.error == "HTTP 500"
            assert "secret-uuid" not in bad.error
        assert [r.path for r in hc.requests] == ["/ping/secret-uuid"] * 6


def test_parse_health_rejects_deep_nesting() -> None:
    assert parse_health(b"[" * 100_000) is None
    assert parse_health(b'{"status": "ok", "x": ' + b"{" * 100_000) is None
    assert parse_health(b'{"status": "ok", "role": "primary"}') == ("ok", Role.PRIMARY, None)
    assert parse_health(b'{"status": "ok", "role": "Primary"}') == ("ok", None, None)
    assert parse_health(b'{"status": "ok", "role": ["primary"]}') == ("ok", None, None)
    # A fenced host is alive; its epoch is read, a malformed one is ignored.
    fenced = (
        b'{"status": "fenced", "role": "primary", "epoch": {"number": 3, "host": "a", "at": 1}}'
    )
    parsed = parse_health(fenced)
    assert parsed is not None and parsed[0] == "fenced" and parsed[2] is not None
    assert parsed[2].number == 3
    bad = b'{"status": "ok", "role": "primary", "epoch": {"number": -1, "host": "a", "at": 1}}'
    assert parse_health(bad) == ("ok", Role.PRIMARY, None)


def test_peer_config_direct() -> None:
    peer = PeerConfig(name="anvil", url="https://anvil.example.org/health")
    assert peer.timeout_s == 10.0

"""The Heartbeat daemon driven in-process cycle by cycle (a test calls ``cycle()`` directly):
alerts survive an outbox that cannot take them, --dry-run sends and writes nothing, a corrupt
heartbeat file is reported stale instead of breaking /health; plus `--once` and a bad
``url_file`` through the real CLI."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from daemons.heartbeat.config import HeartbeatSection, PeerConfig, PingConfig
from daemons.heartbeat.daemon import Heartbeat, HeartbeatUnhealthy, PingTarget
from daemons.heartbeat.policy import PeerState, url_hash
from fleet.config import RootConfig as FleetConfig
from fleet.config import load_config
from fleet.registry import by_name, manifests
from shared import __version__
from shared.heartbeats import Heartbeat as Beat
from shared.heartbeats import HeartbeatStatus, write_heartbeat
from shared.logging import get_logger
from shared.manifest import DaemonManifest
from shared.metrics import DaemonMetrics
from shared.notify import Message
from shared.roles import Role
from shared.runtime import DaemonContext
from shared.sections import DaemonSection
from shared.sqlite import StoreError
from tests.conftest import free_port, run_fleet
from tests.fakes.peer import FakePeer
from tests.fakes.pings import FakePingReceiver
from tests.heartbeat_support import only_enabled, write_config


@dataclass
class RecordingContext(DaemonContext):
    """A DaemonContext whose outbox is a list, and can be made to fail like a locked DB
    (``broken``: the error the outbox raises)."""

    sent: list[Message] = field(default_factory=list)
    broken: Exception | None = None

    async def notify(self, msg: Message) -> bool:
        if self.broken is not None:
            raise self.broken
        if self.dry_run:
            return False
        self.sent.append(msg)
        return True


def make_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, *enabled: str
) -> FleetConfig:
    """Config from ``toml`` with only heartbeat and ``enabled`` daemons on."""
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FLEET_FLEET__ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("FLEET_FLEET__HOST", "testhost")
    for spec in by_name().values():
        on = spec.name == "heartbeat" or spec.name in enabled
        monkeypatch.setenv(f"FLEET_{spec.section_name.upper()}__ENABLED", "true" if on else "false")
    path = tmp_path / "fleet.toml"
    path.write_text(toml)
    path.chmod(0o600)  # ping URLs are secrets: a config holding one must be private
    return load_config(path)


class ManualClock:
    """Wall time that moves only when told: one probe interval per cycle."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 60.0) -> None:
        self.now += seconds


def context(
    config: FleetConfig, *, dry_run: bool = False, clock: ManualClock | None = None
) -> RecordingContext:
    section = config.section(HeartbeatSection)
    return RecordingContext(
        config=config,
        section=section,
        role="primary",
        log=get_logger(daemon="heartbeat"),
        metrics=DaemonMetrics("heartbeat", __version__),
        outbox=None,
        dry_run=dry_run,
        fleet=manifests(),
        clock=clock or ManualClock(),
    )


@pytest.fixture
async def dead_peer() -> AsyncIterator[FakePeer]:
    with FakePeer(default="fail") as peer:
        yield peer


@pytest.mark.parametrize(
    "error",
    [
        # what the outbox raises once its busy retries are spent (it used to end the cycle)
        StoreError("outbox.db: database unavailable after 5 attempt(s): locked", db="outbox.db"),
        sqlite3.OperationalError("database is locked"),
    ],
    ids=["store-error", "sqlite-error"],
)
async def test_alerts_survive_an_outbox_that_cannot_take_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_peer: FakePeer, error: Exception
) -> None:
    config = make_config(
        tmp_path,
        monkeypatch,
        f"""
[heartbeat]
health_port = {free_port()}
metrics_port = 0
[[heartbeat.peers]]
name = "forge"
url = "{dead_peer.health_url}"
""",
    )
    clock = ManualClock()
    ctx = context(config, clock=clock)
    daemon = Heartbeat(ctx)
    await daemon.open()
    try:
        ctx.broken = error
        failures = 0
        for _ in range(5):
            clock.advance()
            try:
                await daemon.cycle()
            except HeartbeatUnhealthy as exc:
                failures += 1
                assert "waiting for the outbox" in str(exc)
                break
        assert failures == 1, "the cycle reports the stuck alert"
        assert len(dead_peer.requests) == 2, "it fails at the probe that alerts"
        state = json.loads((tmp_path / "root/state/heartbeat-peers.json").read_text())
        assert [p["dedup_key"].rsplit(":", 1)[1] for p in state["pending"]] == ["down"]
        counted = ctx.metrics.registry.get_sample_value(
            "fleet_store_errors_total", {"daemon": "heartbeat", "db": "outbox.db"}
        )
        assert counted == 1
    finally:
        await daemon.close()
    # A restart (new process) with a working outbox delivers it: nothing lost.
    ctx2 = context(config)
    daemon2 = Heartbeat(ctx2)
    await daemon2.open()
    try:
        await daemon2.cycle()
    finally:
        await daemon2.close()
    assert [m.dedup_key.rsplit(":", 1)[1] for m in ctx2.sent][:1] == ["down"]
    state = json.loads((tmp_path / "root/state/heartbeat-peers.json").read_text())
    assert state["pending"] == []


async def test_dry_run_sends_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_peer: FakePeer
) -> None:
    with FakePingReceiver() as pings:
        config = make_config(
            tmp_path,
            monkeypatch,
            f"""
[heartbeat]
health_port = {free_port()}
[[heartbeat.peers]]
name = "forge"
url = "{dead_peer.health_url}"
[[heartbeat.pings]]
url = "{pings.check_url("dry")}"
""",
        )
        clock = ManualClock()
        ctx = context(config, dry_run=True, clock=clock)
        daemon = Heartbeat(ctx)
        await daemon.open()
        try:
            for _ in range(6):
                clock.advance()
                await daemon.cycle()
        finally:
            await daemon.close()
        assert pings.requests == [], "--dry-run must not ping"
    assert len(dead_peer.requests) >= 2, "probes are reads: they run"
    assert ctx.sent == [] and daemon.states["forge"].level == "escalated"
    assert not (tmp_path / "root/state/heartbeat-peers.json").exists()


async def test_corrupt_heartbeat_file_is_stale_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = f"[heartbeat]\nhealth_port = {free_port()}\n"
    config = make_config(tmp_path, monkeypatch, toml, "claim-sweeper")
    write_heartbeat(
        config.heartbeat_dir,
        Beat("heartbeat", "testhost", 1, "v", "primary", None, None, 0, 5.0, 1_800_000_000.0),
    )
    beats = config.heartbeat_dir
    (beats / "claim-sweeper.json").write_text(
        json.dumps(
            {
                "daemon": "claim-sweeper",
                "host": "h",
                "pid": 1,
                "version": "v",
                "role": "primary",
                "last_ok_at": "yesterday",
                "last_duration_s": None,
                "cycles": 1,
                "expected_interval_s": 60,
                "started_at": 0,
            }
        )
    )
    daemon = Heartbeat(context(config))
    await daemon.open()
    try:
        report, body = await daemon.view.current(max_age_s=0)
    finally:
        await daemon.close()
    assert not report.ok and report.stale == ["claim-sweeper"]
    assert json.loads(body)["daemons"]["claim-sweeper"]["reason"] == "unreadable heartbeat file"


async def test_unrenderable_timestamp_keeps_health_and_peer_watch_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_peer: FakePeer
) -> None:
    config = make_config(
        tmp_path,
        monkeypatch,
        f"""
[heartbeat]
health_port = {free_port()}
[[heartbeat.peers]]
name = "forge"
url = "{dead_peer.health_url}"
""",
    )
    clock = ManualClock()
    ctx = context(config, clock=clock)
    daemon = Heartbeat(ctx)
    # A status whose last success is in milliseconds (or 1e20, inf, NaN) cannot be rendered.
    monkeypatch.setattr(
        daemon.view,
        "_status",
        lambda name, now: HeartbeatStatus(name, True, 1_735_689_600_000.0, 1.0, 60.0, 1, "ok"),
    )
    await daemon.open()
    try:
        for _ in range(2):
            clock.advance()
            await daemon.cycle()
        assert daemon.server is not None
        async with httpx.AsyncClient(trust_env=False) as client:
            resp = await client.get(f"http://127.0.0.1:{daemon.server.port}/health")
    finally:
        await daemon.close()
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "degraded" and body["stale"] == ["heartbeat"]
    assert body["daemons"]["heartbeat"]["reason"] == "unreadable heartbeat file"
    assert daemon.states["forge"].level == "down" and len(dead_peer.requests) == 2
    assert [m.dedup_key.rsplit(":", 1)[1] for m in ctx.sent] == ["down"]


async def test_cycle_watches_peers_and_pings_when_the_health_view_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_peer: FakePeer
) -> None:
    with FakePingReceiver() as pings:
        config = make_config(
            tmp_path,
            monkeypatch,
            f"""
[heartbeat]
health_port = {free_port()}
[[heartbeat.peers]]
name = "forge"
url = "{dead_peer.health_url}"
[[heartbeat.pings]]
url = "{pings.check_url("hv")}"
""",
        )
        clock = ManualClock()
        ctx = context(config, clock=clock)
        daemon = Heartbeat(ctx)

        def broken_read() -> None:
            raise RuntimeError("a bug while reading the heartbeat files")

        monkeypatch.setattr(daemon.view, "read", broken_read)
        await daemon.open()
        try:
            for _ in range(2):
                clock.advance()
                await daemon.cycle()
        finally:
            await daemon.close()
        assert pings.kinds("hv") == ["fail", "fail"], "degraded: the switch hears /fail"
    registry = ctx.metrics.registry
    assert registry.get_sample_value("fleet_heartbeat_fleet_degraded") == 1
    assert daemon.states["forge"].level == "down" and len(dead_peer.requests) == 2
    assert [m.dedup_key.rsplit(":", 1)[1] for m in ctx.sent] == ["down"]


async def test_crashing_probes_count_as_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 80990 slips past urlsplit; the config now refuses it, so build the peer raw to
    # get a probe that raises (ExceptionGroup[OverflowError]) instead of returning a result.
    bad = "http://127.0.0.1:80990/health"
    config = make_config(tmp_path, monkeypatch, f"[heartbeat]\nhealth_port = {free_port()}\n")
    clock = ManualClock()
    ctx = context(config, clock=clock)
    daemon = Heartbeat(ctx)
    peer = PeerConfig.model_construct(
        **{**PeerConfig(name="forge", url="http://x.org").model_dump(), "url": bad}
    )
    daemon.peers = {"forge": peer}
    daemon.states = {"forge": PeerState("forge")}
    await daemon.open()
    key = url_hash(bad + "/ping")
    daemon.pings = {
        key: PingTarget(PingConfig(url=SecretStr("http://x.org/p"), retries=0), bad, key)
    }
    try:
        for _ in range(2):
            clock.advance()
            await daemon.cycle()
    finally:
        await daemon.close()
    state = daemon.states["forge"]
    assert state.level == "down" and state.consecutive_failures == 2
    assert [m.dedup_key.rsplit(":", 1)[1] for m in ctx.sent] == ["down"]
    registry = ctx.metrics.registry
    errors = registry.get_sample_value(
        "fleet_heartbeat_pings_total", {"url_hash": key, "outcome": "error"}
    )
    assert errors == 2


async def test_a_promotion_in_the_role_file_counts_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local role comes from the role file, read (off the loop) for each batch of probe
    results: promoted while the peer still reports primary, the host sees two primaries."""
    with FakePeer(role="primary") as peer:
        config = make_config(
            tmp_path,
            monkeypatch,
            f"""
[heartbeat]
health_port = {free_port()}
[[heartbeat.peers]]
name = "forge"
url = "{peer.health_url}"
""",
        )
        config.role_file.parent.mkdir(parents=True, exist_ok=True)
        config.role_file.write_text("standby\n")
        clock = ManualClock()
        ctx = context(config, clock=clock)
        daemon = Heartbeat(ctx)
        await daemon.open()

        async def next_probe_result() -> None:
            seen = daemon.states["forge"].probes
            for _ in range(20):  # waits for the probe's result, not for a wall-clock delay
                clock.advance()
                await daemon.cycle()
                if daemon.states["forge"].probes > seen:
                    return
            raise AssertionError("no probe result came in")

        try:
            await next_probe_result()
            assert ctx.sent == [] and daemon.states["forge"].peer_role is Role.PRIMARY
            config.role_file.write_text("primary\n")
            await next_probe_result()
        finally:
            await daemon.close()
    assert [m.dedup_key.rsplit(":", 1)[1] for m in ctx.sent] == ["two_primaries"]
    assert daemon.states["forge"].two_primaries_at is not None


async def test_a_garbled_role_file_mid_run_keeps_the_last_role_and_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role file garbled while the daemon runs: the peer checks go on with the last role
    read (a "two primaries" incident is not resolved by garbage), the problem is logged once,
    and a good file again resolves it."""
    from tests.recording_log import RecordingLog

    with FakePeer(role="primary") as peer:
        config = make_config(
            tmp_path,
            monkeypatch,
            f"""
[heartbeat]
health_port = {free_port()}
[[heartbeat.peers]]
name = "forge"
url = "{peer.health_url}"
""",
        )
        config.role_file.parent.mkdir(parents=True, exist_ok=True)
        config.role_file.write_text("primary\n")
        clock = ManualClock()
        ctx = context(config, clock=clock)
        log = RecordingLog()
        ctx.log = log
        daemon = Heartbeat(ctx)
        await daemon.open()

        async def next_probe_result() -> None:
            seen = daemon.states["forge"].probes
            for _ in range(20):  # waits for the probe's result, not for a wall-clock delay
                clock.advance()
                await daemon.cycle()
                if daemon.states["forge"].probes > seen:
                    return
            raise AssertionError("no probe result came in")

        try:
            await next_probe_result()
            config.role_file.write_bytes(b"\xef\xbb\xbfstanby\x00")
            await next_probe_result()
            await next_probe_result()
            keys = [m.dedup_key.rsplit(":", 1)[1] for m in ctx.sent]
            assert keys == ["two_primaries"], "garbage never resolves (or raises) an incident"
            problems = log.events("role file unreadable; using the last role read")
            assert len(problems) == 1 and "stanby" in problems[0]["error"]
            config.role_file.write_text("standby\n")
            await next_probe_result()
        finally:
            await daemon.close()
    assert [m.dedup_key.rsplit(":", 1)[1] for m in ctx.sent] == [
        "two_primaries",
        "two_primaries_resolved",
    ]


@pytest.mark.system
def test_once_and_bad_url_file(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> None:
    env = {
        **only_enabled(fleet_env, "heartbeat"),
        "FLEET_HEARTBEAT__HEALTH_PORT": str(free_port()),
        "FLEET_HEARTBEAT__METRICS_PORT": str(free_port()),
    }
    with FakePeer(default="fail") as peer:
        config = write_config(
            tmp_path / "fleet.toml",
            heartbeat={},
            peers=[{"name": "forge", "url": peer.health_url}],
        )
        res = run_fleet(["run", "heartbeat", "--once", "--config", str(config)], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(peer.requests) == 1
    state = json.loads((fleet_root / "state/heartbeat-peers.json").read_text())
    assert state["peers"]["forge"]["consecutive_failures"] == 1
    config = write_config(
        tmp_path / "bad.toml",
        heartbeat={},
        pings=[{"name": "hc", "url_file": str(tmp_path / "missing-secret")}],
    )
    res = run_fleet(["run", "heartbeat", "--config", str(config)], env, tmp_path, timeout=30)
    assert res.returncode == 78
    assert "heartbeat.pings[0] (hc).url_file: cannot read" in res.stdout + res.stderr


def _manifest(name: str, refuse: Callable[[object, Role], str | None]) -> DaemonManifest:
    return DaemonManifest(name=name, section=DaemonSection, daemon="x:Y", refuse=refuse)


ONLY_STANDBY = _manifest("only-standby", lambda _s, role: None if role == "standby" else "no")
BAD_CONFIG = _manifest("bad-config", lambda _s, _role: "schedule is not usable")


def test_role_fencing_decides_which_daemons_are_expected() -> None:
    section = DaemonSection()
    assert ONLY_STANDBY.fenced(section, "primary")
    assert not ONLY_STANDBY.fenced(section, "standby")
    assert not BAD_CONFIG.fenced(section, "primary"), "a config refusal must stay visible"
    assert not BAD_CONFIG.fenced(section, "standby")


async def test_health_expects_only_daemons_that_run_with_this_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = f"[heartbeat]\nhealth_port = {free_port()}\n"
    config = make_config(tmp_path, monkeypatch, toml, "restore-loop", "email-reactor")
    view = Heartbeat(context(config)).view
    primary = view.read()
    assert "restore-loop" not in primary.body["daemons"]  # runs only on a standby
    assert {"email-reactor", "heartbeat"} <= set(primary.body["daemons"])
    config.role_file.parent.mkdir(parents=True, exist_ok=True)
    config.role_file.write_text("standby\n")
    standby = view.read()
    assert standby.body["role"] == "standby"
    assert "restore-loop" in standby.body["daemons"]
    assert "email-reactor" not in standby.body["daemons"]  # primary only

"""The ollama-health cycle in-process, step by step with an injected clock: fake Ollama servers
on 127.0.0.1, a real outbox SQLite file, a real status file. Thresholds, one alert per
transition, the override file, both hosts down, the tier-routing file (malformed: last good
kept), restart memory, and a reader that never sees a half-written status file."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from daemons.ollama_health import route
from daemons.ollama_health.config import OllamaHealthSection
from daemons.ollama_health.daemon import (
    OllamaHealth,
    StatusWriteFailed,
    TierRoutingUnusable,
)
from daemons.ollama_health.manifest import MANIFEST
from daemons.ollama_health.policy import format_iso
from daemons.ollama_health.status_file import read_status, write_status
from fleet.config import RootConfig as FleetConfig
from shared.files import under_shared_tmp
from shared.metrics import DaemonMetrics
from shared.notify import Message, Outbox
from shared.runtime import DaemonContext
from tests.conftest import free_port
from tests.fakes.ollama import FakeOllama
from tests.recording_log import RecordingLog

T0 = 1_795_000_000.0
TIMEOUT_MS = 400


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float = 15.0) -> None:
        self.t += seconds


def tier_doc(anvil: FakeOllama | str, forge: FakeOllama | str, **extra: Any) -> dict[str, Any]:
    def url(x: FakeOllama | str) -> str:
        return x.base_url if isinstance(x, FakeOllama) else x

    return {
        "tiers": {"1": {"model": "llama3.1:8b"}},  # the routers' own block: ignored
        "ollamaHosts": {
            "anvil": {"url": url(anvil), "health_timeout_ms": TIMEOUT_MS, "role": "infra"},
            "forge": {"url": url(forge), "health_timeout_ms": TIMEOUT_MS, "role": "compute"},
        },
        "failoverRules": {
            "anvil-down": {
                "redirect_anvil_tiers": ["1", "2"],
                "to_forge_models": {"qwen2.5-coder:32b": "qwen2.5-coder:32b-instruct-q8_0"},
            },
            "forge-down": {"redirect_forge_tiers": ["2c", "3"], "to_claude": True},
        },
        **extra,
    }


@dataclass
class Rig:
    daemon: OllamaHealth
    clock: Clock
    log: RecordingLog
    outbox: Outbox
    registry: CollectorRegistry
    status_path: Path
    override_path: Path
    tier_file: Path
    outbox_path: Path

    async def cycle(self, advance: float = 15.0) -> dict[str, Any]:
        self.clock.advance(advance)
        await self.daemon.cycle()
        status = read_status(self.status_path)
        assert status is not None
        return status

    def alerts(self) -> list[str]:
        with sqlite3.connect(self.outbox_path) as conn:
            rows = conn.execute("SELECT text FROM outbox ORDER BY id").fetchall()
        return [r[0] for r in rows]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def anvil() -> Iterator[FakeOllama]:
    with FakeOllama(["llama3.1:8b", "qwen2.5-coder:32b"]) as f:
        yield f


@pytest.fixture
def forge() -> Iterator[FakeOllama]:
    with FakeOllama(["qwen2.5-coder:32b-instruct-q8_0", "llama3.1:8b"]) as f:
        yield f


RigFactory = Callable[..., "AsyncIterator[Rig]"]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Rig] = []

    async def factory(doc: dict[str, Any] | None = None, **section: Any) -> Rig:
        root = tmp_path / "root"
        tier_file = tmp_path / "tier-routing.json"
        if doc is not None:
            tier_file.write_text(json.dumps(doc))
        settings: dict[str, Any] = {
            "status_file": str(tmp_path / "tmp" / "ollama-health.json"),
            "override_file": str(tmp_path / "tmp" / "ollama-health-override.json"),
            **section,
        }
        if doc is not None:
            settings["tier_routing_file"] = str(tier_file)
        config = FleetConfig(fleet={"root": str(root), "host": "testhost"}, ollama_health=settings)
        clock = Clock()
        log = RecordingLog()
        outbox = await Outbox(config.notify.outbox_db, clock=clock).open()
        registry = CollectorRegistry()
        ctx = DaemonContext(
            config=config,
            section=config.ollama_health,
            role="primary",
            log=log,
            metrics=DaemonMetrics("ollama-health", "testhost", "0", registry=registry),
            outbox=outbox,
            clock=clock,
        )
        daemon = OllamaHealth(ctx)
        await daemon.open()
        rig = Rig(
            daemon,
            clock,
            log,
            outbox,
            registry,
            config.ollama_health.status_file,
            config.ollama_health.override_file,
            tier_file,
            config.notify.outbox_db,
        )
        opened.append(rig)
        return rig

    yield factory
    for rig in opened:
        await rig.daemon.close()
        await rig.outbox.close()


async def test_healthy_hosts_status_file_in_seed_shape(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    status = await rig.cycle()
    host_keys = {
        "healthy",
        "last_check",
        "latency_ms",
        "models",
        "consecutive_failures",
        "via",
        "error",
        "override",
    }
    assert sorted(k for k in status if not k.startswith("_")) == ["anvil", "forge"]
    for name, fake in (("anvil", anvil), ("forge", forge)):
        entry = status[name]
        assert host_keys <= set(entry)
        assert entry["healthy"] is True and entry["via"] == "url" and entry["error"] is None
        assert entry["models"] == fake.models and entry["consecutive_failures"] == 0
        assert entry["override"] is False and entry["last_check"] == format_iso(rig.clock.t)
        assert isinstance(entry["latency_ms"], float)
    assert status["_generated_at"] == format_iso(rig.clock.t)
    assert status["_routing"] == {
        "active_rules": [],
        "redirects": {},
        "to_claude": [],
        "unavailable": [],
    }
    assert rig.status_path.stat().st_mode & 0o777 == 0o600
    assert rig.alerts() == []
    assert rig.metric("fleet_ollama_up", host="anvil") == 1
    assert rig.metric("fleet_ollama_models", host="forge") == 2
    assert rig.metric("fleet_ollama_probe_duration_seconds_count", host="anvil") == 1
    assert rig.metric("fleet_ollama_failover_active", rule="forge-down") == 0
    assert rig.metric("fleet_ollama_override_active") == 0
    # The file alone is enough for a router (it embeds the table).
    chosen = route("2c", "qwen2.5-coder:32b", status, now=rig.clock.t)
    assert (chosen.host, chosen.url) == ("forge", forge.base_url)


async def test_thresholds_one_alert_per_transition(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    await rig.cycle()
    # One lost probe does not flip anything.
    forge.fail(500)
    status = await rig.cycle()
    assert status["forge"]["healthy"] is True
    assert status["forge"]["consecutive_failures"] == 1 and status["forge"]["error"] == "HTTP 500"
    assert status["_routing"]["active_rules"] == [] and rig.alerts() == []
    assert len(rig.log.events("probe failed; host still counted healthy")) == 1
    await rig.cycle()
    # Two in a row do; one alert for the host, one for the rule it fires.
    forge.stop()
    down_at = rig.clock.t + 15
    await rig.cycle()
    status = await rig.cycle()
    assert status["forge"]["healthy"] is False
    assert status["forge"]["error"] == "connection refused"
    assert status["_routing"]["active_rules"] == ["forge-down"]
    assert status["_routing"]["to_claude"] == ["2c", "3"]
    alerts = rig.alerts()
    assert len(alerts) == 2
    assert "forge (compute) is DOWN: connection refused (2 failed probe(s)" in alerts[0]
    assert "failover rule forge-down ACTIVATED" in alerts[1] and "2c->claude" in alerts[1]
    assert rig.metric("fleet_ollama_up", host="forge") == 0
    assert rig.metric("fleet_ollama_transitions_total", host="forge", to="down") == 1
    assert rig.metric("fleet_ollama_failover_active", rule="forge-down") == 1
    # Staying down: no more alerts, however many cycles.
    for _ in range(3):
        await rig.cycle()
    assert len(rig.alerts()) == 2
    # Coming back: one good probe is not enough, two are.
    forge.start()
    status = await rig.cycle(advance=60)
    assert status["forge"]["healthy"] is False and len(rig.alerts()) == 2
    status = await rig.cycle()
    assert status["forge"]["healthy"] is True and status["_routing"]["active_rules"] == []
    alerts = rig.alerts()
    assert len(alerts) == 4
    outage = rig.clock.t - (down_at + 15)
    assert f"recovered after {int(outage) // 60}m{int(outage) % 60:02d}s down" in alerts[2]
    assert "last error: connection refused" in alerts[2]
    assert "failover rule forge-down cleared" in alerts[3]
    assert rig.metric("fleet_ollama_transitions_total", host="forge", to="up") == 1


async def test_tailscale_fallback_routes_to_the_address_that_answers(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    doc = tier_doc(f"http://127.0.0.1:{free_port()}", forge)
    doc["ollamaHosts"]["anvil"]["tailscale_url"] = anvil.base_url
    rig = await make_rig(doc)
    status = await rig.cycle()
    assert status["anvil"]["healthy"] is True and status["anvil"]["via"] == "tailscale"
    chosen = route("1", "llama3.1:8b", status, now=rig.clock.t)
    assert (chosen.host, chosen.url) == ("anvil", anvil.base_url)


async def test_override_forces_forge_down_and_clears(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    await rig.cycle()
    rig.override_path.write_text(
        '{"anvil":{"healthy":true},"forge":{"healthy":false,"override":true}}'
    )
    status = await rig.cycle()
    assert status["forge"] == status["forge"] | {"healthy": False, "override": True}
    assert status["anvil"]["override"] is True and status["anvil"]["healthy"] is True
    # The probe still ran and says what it saw.
    assert status["forge"]["error"] is None and status["forge"]["models"] == forge.models
    assert status["_routing"]["active_rules"] == ["forge-down"]
    assert status["_override"]["active"] is True
    assert status["_override"]["hosts"] == {"anvil": True, "forge": False}
    assert rig.metric("fleet_ollama_override_active") == 2
    assert rig.metric("fleet_ollama_up", host="forge") == 1  # probes alone
    assert rig.metric("fleet_ollama_failover_active", rule="forge-down") == 1
    assert route("3", None, status, now=rig.clock.t).host == "claude"
    alerts = rig.alerts()
    assert len(alerts) == 1 and "forge-down ACTIVATED (forced by the override file)" in alerts[0]
    await rig.cycle()
    assert len(rig.log.events("override active")) == 2, "logged every cycle while active"
    rig.override_path.unlink()
    status = await rig.cycle()
    assert status["forge"]["healthy"] is True and status["forge"]["override"] is False
    assert status["_routing"]["active_rules"] == []
    assert rig.metric("fleet_ollama_override_active") == 0
    assert len(rig.alerts()) == 2 and "forge-down cleared" in rig.alerts()[1]


async def test_override_expires(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    rig.override_path.parent.mkdir(parents=True, exist_ok=True)
    rig.override_path.write_text(
        json.dumps({"forge": {"healthy": False}, "expires_at": format_iso(T0 + 20)})
    )
    status = await rig.cycle()  # T0 + 15
    assert status["forge"]["healthy"] is False and status["_override"]["expires_at"]
    status = await rig.cycle()  # T0 + 30: expired
    assert status["forge"]["healthy"] is True and status["_override"]["expired"] == ["forge"]
    assert len(rig.log.events("override entry expired")) == 1


async def test_malformed_override_is_reported_once_and_ignored(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    rig.override_path.parent.mkdir(parents=True, exist_ok=True)
    rig.override_path.write_text('{"forge": {"healthy": fals')
    for _ in range(3):
        status = await rig.cycle()
        assert status["forge"]["healthy"] is True and status["forge"]["override"] is False
        assert "not valid JSON" in status["_override"]["error"]
    assert len(rig.log.events("override file ignored")) == 1
    alerts = rig.alerts()
    assert len(alerts) == 1 and "override file" in alerts[0] and "ignored" in alerts[0]
    rig.override_path.write_text('{"forge": {"healthy": false}}')
    status = await rig.cycle()
    assert status["forge"]["healthy"] is False and status["_override"]["error"] is None


async def test_both_hosts_down(make_rig: Callable[..., Any]) -> None:
    dead_a, dead_f = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    with FakeOllama() as hanging:
        hanging.hang(times=10)
        rig = await make_rig(tier_doc(dead_a, hanging))
        status = await rig.cycle()
        # No history: routed as down at once, alerted only at the threshold.
        assert status["_routing"]["active_rules"] == ["anvil-down", "forge-down"]
        assert rig.alerts() == []
        status = await rig.cycle()
    assert status["anvil"]["healthy"] is False and status["forge"]["healthy"] is False
    assert status["forge"]["error"] == f"no answer within {TIMEOUT_MS} ms"
    routing = status["_routing"]
    assert routing["active_rules"] == ["anvil-down", "forge-down"]
    assert routing["to_claude"] == ["2c", "3"] and routing["unavailable"] == ["1", "2"]
    assert routing["redirects"] == {}
    alerts = rig.alerts()
    assert sum("is DOWN" in a for a in alerts) == 2
    assert any("anvil-down ACTIVATED" in a and "1->unavailable" in a for a in alerts)
    del dead_f


async def test_tier_routing_file_malformed_keeps_last_good(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    await rig.cycle()
    rig.tier_file.write_text('{"ollamaHosts": {"anvil": ')
    for _ in range(2):
        status = await rig.cycle()
        assert status["anvil"]["healthy"] is True and "forge" in status
        assert "not valid JSON" in status["_config_error"]
    assert len(rig.log.events("tier routing file unusable; keeping the last good version")) == 1
    assert sum("tier routing file" in a for a in rig.alerts()) == 1
    # Fixed (here: forge dropped): the new table applies and the error clears.
    doc = tier_doc(anvil, forge)
    del doc["ollamaHosts"]["forge"]
    doc["failoverRules"] = {}
    rig.tier_file.write_text(json.dumps(doc))
    status = await rig.cycle()
    assert status["_config_error"] is None and "forge" not in status
    assert rig.metric("fleet_ollama_up", host="forge") is None


async def test_tier_routing_file_unusable_at_start_fails_the_cycle(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    doc = tier_doc(anvil, forge)
    doc["failoverRules"]["forge-down"]["to_claude"] = "sometimes"
    rig = await make_rig(doc)
    with pytest.raises(TierRoutingUnusable, match=r"forge-down\.to_claude"):
        await rig.daemon.cycle()
    assert not rig.status_path.exists()
    assert len(rig.alerts()) == 1  # reported even though nothing else could run
    rig.tier_file.write_text(json.dumps(tier_doc(anvil, forge)))
    status = await rig.cycle()
    assert status["_config_error"] is None and status["anvil"]["healthy"] is True


async def test_tier_routing_timeout_must_fit_the_cycle(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    doc = tier_doc(anvil, forge)
    doc["ollamaHosts"]["forge"]["health_timeout_ms"] = 45_000
    rig = await make_rig(doc)
    with pytest.raises(TierRoutingUnusable, match=r"forge\.health_timeout_ms: 45000"):
        await rig.daemon.cycle()


async def test_restart_keeps_thresholds_and_does_not_realert(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    forge.stop()
    await rig.cycle()
    await rig.cycle()
    assert len(rig.alerts()) == 2
    await rig.daemon.close()
    again = await make_rig(tier_doc(anvil, forge))
    again.clock.t = rig.clock.t
    status = await again.cycle()
    assert status["forge"]["healthy"] is False and status["forge"]["consecutive_failures"] == 3
    assert len(again.alerts()) == 2
    forge.start()
    await again.cycle()
    status = await again.cycle()
    assert status["forge"]["healthy"] is True
    assert "recovered after 45s down" in again.alerts()[2]


async def test_alerts_survive_an_unwritable_outbox(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    forge.stop()
    await rig.cycle()
    real_notify = rig.daemon.ctx.notify
    calls: list[str] = []

    async def locked(msg: Message) -> bool:
        calls.append(msg.dedup_key)
        raise sqlite3.OperationalError("database is locked")

    rig.daemon.ctx.notify = locked  # type: ignore[method-assign]
    status = await rig.cycle()
    assert len(calls) == 2 and rig.alerts() == []
    assert len(status["_monitor"]["pending_alerts"]) == 2  # on disk, for a restart
    rig.daemon.ctx.notify = real_notify  # type: ignore[method-assign]
    status = await rig.cycle()
    assert len(rig.alerts()) == 2 and status["_monitor"]["pending_alerts"] == []


async def test_status_write_failure_fails_the_cycle_but_alerts(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the status directory should be")
    rig = await make_rig(tier_doc(anvil, forge), status_file=str(blocker / "status.json"))
    forge.stop()
    for _ in range(2):
        with pytest.raises(StatusWriteFailed, match="cannot write"):
            await rig.daemon.cycle()
        rig.clock.advance()
    assert len(rig.alerts()) == 2


async def test_default_single_host_dead_is_a_reported_state(
    make_rig: Callable[..., Any],
) -> None:
    port = free_port()
    rig = await make_rig(None, hosts={"anvil": {"url": f"http://127.0.0.1:{port}"}})
    status = await rig.cycle()
    assert status["anvil"]["healthy"] is False and rig.alerts() == []
    status = await rig.cycle()
    assert status["anvil"]["healthy"] is False
    assert status["anvil"]["error"] == "connection refused"
    assert status["_routing"]["active_rules"] == []
    assert len(rig.alerts()) == 1 and "anvil is DOWN: connection refused" in rig.alerts()[0]
    body = generate_latest(rig.registry).decode()
    assert 'fleet_ollama_up{host="anvil"} 0.0' in body


def test_unit_profile_keeps_tmp_shared(tmp_path: Path) -> None:
    assert under_shared_tmp(Path("/tmp/ollama-health.json"))
    assert under_shared_tmp(Path("/private/tmp/ollama-health-override.json"))
    assert not under_shared_tmp(Path("/home/x/system/state/ollama-health.json"))
    assert not under_shared_tmp(Path("/tmpfoo/x.json"))
    hosts = FleetConfig(
        fleet={"root": str(tmp_path)},
        ollama_health={
            "status_file": "/tmp/ollama-health.json",
            "override_file": "/tmp/ollama-health-override.json",
        },
    )
    profile = MANIFEST.unit_profile(hosts, hosts.section(OllamaHealthSection))
    assert profile.shared_tmp and Path("/tmp") in profile.write_paths
    # The embedded defaults keep both files under [fleet] root (never created here).
    defaults = FleetConfig(fleet={"root": "/srv/alai-fleet-test"})
    local = MANIFEST.unit_profile(defaults, defaults.section(OllamaHealthSection))
    assert not local.shared_tmp
    assert local.write_paths == (Path("/srv/alai-fleet-test/state"),)


def test_reader_never_sees_a_half_written_status_file(tmp_path: Path) -> None:
    """A reader polling in a tight loop during 500 writes only ever parses whole files."""
    path = tmp_path / "tmp" / "ollama-health.json"
    big_models = [f"model-{i}:{'q' * 40}" for i in range(200)]
    docs = [
        {f"host{h}": {"healthy": (n + h) % 3 != 0, "models": big_models, "n": n} for h in range(20)}
        | {"_generated_at": format_iso(T0 + n), "_n": n}
        for n in range(500)
    ]
    write_status(path, docs[0])
    stop = threading.Event()
    reads: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                bad.append("file missing between writes")
                continue
            try:
                reads.append(json.loads(text)["_n"])
            except (ValueError, KeyError) as exc:
                bad.append(f"{type(exc).__name__} at {len(text)} bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for doc in docs:
            write_status(path, doc)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert bad == []
    assert len(reads) > 50, "the reader must have raced the writer"
    assert len(set(reads)) > 10, "the reader must have seen many versions"
    assert reads == sorted(reads), "a reader never sees an older version after a newer one"
    assert json.loads(path.read_text())["_n"] == 499


# review fixes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "expires_at", ["1795000900000", "1e400", "1" + "0" * 400, '"9999-12-31T23:59:59-05:00"']
)
async def test_unrepresentable_expires_at_is_reported_not_fatal(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama, expires_at: str
) -> None:
    """Milliseconds (or inf) in expires_at: the override is ignored and reported; the cycle
    still writes the status file."""
    rig = await make_rig(tier_doc(anvil, forge))
    rig.override_path.parent.mkdir(parents=True, exist_ok=True)
    rig.override_path.write_text(f'{{"forge": {{"healthy": false}}, "expires_at": {expires_at}}}')
    for _ in range(2):
        status = await rig.cycle()
        assert status["_generated_at"] == format_iso(rig.clock.t)
        assert status["forge"]["healthy"] is True and status["forge"]["override"] is False
        assert "expires_at" in status["_override"]["error"]
    alerts = rig.alerts()
    assert len(alerts) == 1 and "override file" in alerts[0] and "expires_at" in alerts[0]


async def test_one_bad_host_does_not_fail_the_cycle_for_the_others(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    forge.garbage(content_type="application/json", body=b"[" * 200_000)
    status = await rig.cycle()
    assert status["anvil"]["healthy"] is True
    assert status["forge"]["consecutive_failures"] == 1
    assert "invalid JSON" in status["forge"]["error"]
    # A port out of range is a table error naming the key; the last good table keeps working.
    doc = tier_doc(anvil, forge)
    doc["ollamaHosts"]["forge"]["url"] = "http://127.0.0.1:114340"
    rig.tier_file.write_text(json.dumps(doc))
    status = await rig.cycle()
    assert "ollamaHosts.forge.url" in status["_config_error"]
    assert status["anvil"]["healthy"] is True and status["forge"]["healthy"] is True


async def test_reboot_clearing_tmp_keeps_the_incident(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    """The status file lives in /tmp on the hosts; a reboot mid-outage deletes it. The memory
    file under the state dir keeps the outage: no second DOWN alert, and the recovery comes."""
    rig = await make_rig(tier_doc(anvil, forge))
    forge.stop()
    await rig.cycle()
    await rig.cycle()
    assert len(rig.alerts()) == 2
    memory_path = rig.daemon.memory_path
    assert memory_path.parent == rig.daemon.ctx.config.state_dir
    assert memory_path.stat().st_mode & 0o777 == 0o600
    await rig.daemon.close()
    rig.status_path.unlink()  # reboot: /tmp cleared
    again = await make_rig(tier_doc(anvil, forge))
    again.clock.t = rig.clock.t
    status = await again.cycle()
    assert status["forge"]["healthy"] is False and status["forge"]["consecutive_failures"] == 3
    assert len(again.alerts()) == 2
    forge.start()
    await again.cycle()
    await again.cycle()
    alerts = again.alerts()
    assert len(alerts) == 4
    assert "forge (compute) recovered" in alerts[2] and "forge-down cleared" in alerts[3]


async def test_memory_falls_back_to_the_status_file(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    """First start after the upgrade: no memory file yet, the status file's _monitor is used."""
    rig = await make_rig(tier_doc(anvil, forge))
    forge.stop()
    await rig.cycle()
    await rig.cycle()
    await rig.daemon.close()
    rig.daemon.memory_path.unlink()
    again = await make_rig(tier_doc(anvil, forge))
    again.clock.t = rig.clock.t
    status = await again.cycle()
    assert status["forge"]["consecutive_failures"] == 3 and len(again.alerts()) == 2
    assert again.daemon.memory_path.exists()


async def test_file_error_alerts_once_per_episode(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama
) -> None:
    """The same error coming back after a fix is a new incident (the outbox would otherwise
    drop it as a duplicate for days); a restart mid-episode does not repeat it."""
    rig = await make_rig(tier_doc(anvil, forge))
    rig.override_path.parent.mkdir(parents=True, exist_ok=True)
    good_table = rig.tier_file.read_text()
    await rig.cycle()  # a good table first (without one a broken file fails the cycle)
    for _ in range(2):
        rig.override_path.write_text('{"forge": {"healthy": fals')
        rig.tier_file.write_text('{"ollamaHosts": {"anvil": ')
        await rig.cycle()
        await rig.cycle()
        rig.override_path.unlink()
        rig.tier_file.write_text(good_table)
        status = await rig.cycle()
        assert status["_config_error"] is None and status["_override"]["error"] is None
    alerts = rig.alerts()
    assert sum("override file" in a for a in alerts) == 2
    assert sum("tier routing file" in a for a in alerts) == 2
    rig.override_path.write_text('{"forge": {"healthy": fals')
    await rig.cycle()
    await rig.daemon.close()
    again = await make_rig(tier_doc(anvil, forge))
    again.clock.t = rig.clock.t
    await again.cycle()
    assert sum("override file" in a for a in again.alerts()) == 3


async def test_override_others_could_write_is_ignored(
    make_rig: Callable[..., Any],
    anvil: FakeOllama,
    forge: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    rig.override_path.parent.mkdir(parents=True, exist_ok=True)
    rig.override_path.write_text('{"forge": {"healthy": false}}')
    rig.override_path.chmod(0o666)
    status = await rig.cycle()
    assert status["forge"]["healthy"] is True and status["forge"]["override"] is False
    assert "writable by group or others" in status["_override"]["error"]
    rig.override_path.chmod(0o644)
    status = await rig.cycle()
    assert status["forge"]["healthy"] is False and status["_override"]["error"] is None
    monkeypatch.setattr("daemons.ollama_health.daemon.os.geteuid", lambda: 4242)
    status = await rig.cycle()
    assert status["forge"]["healthy"] is True
    assert "not this daemon's uid 4242" in status["_override"]["error"]
    monkeypatch.delattr("daemons.ollama_health.daemon.os.geteuid")
    status = await rig.cycle()
    assert status["forge"]["healthy"] is False and status["_override"]["error"] is None

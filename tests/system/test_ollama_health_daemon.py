"""The ollama-health cycle in-process, step by step with an injected clock: fake Ollama servers
on 127.0.0.1, a real outbox SQLite file, a real status file. Host state: the status file's
shape, thresholds and one alert per transition, the Tailscale fallback, dead and misbehaving
hosts, an unwritable outbox or status file, and what a restart (or a reboot clearing /tmp)
keeps: its own memory file, never the status file. The override and tier-routing files:
test_ollama_health_files.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from daemons.ollama_health import route
from daemons.ollama_health.daemon import StatusWriteFailed
from daemons.ollama_health.policy import format_iso
from shared.notify import Message
from shared.sqlite import StoreError
from tests.conftest import free_port
from tests.fakes.ollama import FakeOllama
from tests.ollama_health_support import (
    ANVIL_MODELS,
    FORGE_MODELS,
    TIMEOUT_MS,
    RigFactory,
    tier_doc,
)


@pytest.fixture
def anvil() -> Iterator[FakeOllama]:
    with FakeOllama(ANVIL_MODELS) as f:
        yield f


@pytest.fixture
def forge() -> Iterator[FakeOllama]:
    with FakeOllama(FORGE_MODELS) as f:
        yield f


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    factory = RigFactory(tmp_path)
    yield factory
    await factory.close()


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
    assert rig.metric("fleet_ollama_up", llm_host="anvil") == 1
    assert rig.metric("fleet_ollama_models", llm_host="forge") == 2
    assert rig.metric("fleet_ollama_probe_duration_seconds_count", llm_host="anvil") == 1
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
    assert rig.metric("fleet_ollama_up", llm_host="forge") == 0
    assert rig.metric("fleet_ollama_transitions_total", llm_host="forge", to="down") == 1
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
    assert rig.metric("fleet_ollama_transitions_total", llm_host="forge", to="up") == 1


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
    assert 'fleet_ollama_up{llm_host="anvil"} 0.0' in body


@pytest.mark.parametrize(
    "error",
    [
        # what the outbox raises once its busy retries are spent (it used to end the cycle)
        StoreError("outbox.db: database unavailable after 5 attempt(s): locked", db="outbox.db"),
        sqlite3.OperationalError("database is locked"),
    ],
    ids=["store-error", "sqlite-error"],
)
async def test_alerts_survive_an_unwritable_outbox(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama, error: Exception
) -> None:
    rig = await make_rig(tier_doc(anvil, forge))
    forge.stop()
    await rig.cycle()
    real_notify = rig.daemon.ctx.notify
    calls: list[str] = []

    async def locked(msg: Message) -> bool:
        calls.append(msg.dedup_key)
        raise error

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


async def test_memory_is_read_only_from_its_own_file(
    make_rig: Callable[..., Any], anvil: FakeOllama, forge: FakeOllama, tmp_path: Path
) -> None:
    """The memory is never restored from the status file (the hosts publish it in /tmp, where
    anyone can plant one), nor through a symlink: without its own file the daemon starts fresh,
    so an open outage is alerted again once it crosses the threshold, never before."""
    rig = await make_rig(tier_doc(anvil, forge))
    forge.stop()
    await rig.cycle()
    await rig.cycle()
    assert len(rig.alerts()) == 2
    await rig.daemon.close()
    memory_path = rig.daemon.memory_path
    memory_path.unlink()
    status = json.loads(rig.status_path.read_text())
    status["_monitor"]["pending_alerts"] = [
        {"channel": "#ops", "text": "from the status file", "dedup_key": "planted-1"}
    ]
    rig.status_path.write_text(json.dumps(status))
    again = await make_rig(tier_doc(anvil, forge))
    again.clock.t = rig.clock.t
    status = await again.cycle()
    assert status["forge"]["consecutive_failures"] == 1 and len(again.alerts()) == 2
    assert again.log.events("restored host states") == []
    assert memory_path.exists()
    # A symlink in its place (here to a copy with a pending alert) is not followed.
    await again.daemon.close()
    elsewhere = tmp_path / "elsewhere.json"
    memory = json.loads(memory_path.read_text())
    memory["pending_alerts"] = [
        {"channel": "#ops", "text": "through a link", "dedup_key": "planted-2"}
    ]
    elsewhere.write_text(json.dumps(memory))
    memory_path.unlink()
    memory_path.symlink_to(elsewhere)
    third = await make_rig(tier_doc(anvil, forge))
    third.clock.t = again.clock.t
    await third.cycle()
    (warning,) = third.log.events("memory file not used; starting fresh")
    assert "symbolic link" in warning["error"]
    assert all("planted" not in a and "through a link" not in a for a in third.alerts())
    assert not memory_path.is_symlink()  # replaced by the daemon's own file

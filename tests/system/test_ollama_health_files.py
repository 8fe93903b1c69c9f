"""The files that steer ollama-health, in-process with an injected clock (fake Ollama servers on
127.0.0.1, a real outbox, a real status file): the manual override file (forcing, expiry,
malformed, unrepresentable expiry, writable by others or owned by a stranger) and the
tier-routing file (malformed: last good kept; unusable at start; timeouts that do not fit the
cycle), each error alerted once per episode. Host state and restarts:
test_ollama_health_daemon.py. Files planted by another uid: test_ollama_health_shared_tmp.py."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemons.ollama_health import route
from daemons.ollama_health.daemon import TierRoutingUnusable
from daemons.ollama_health.policy import format_iso
from tests.fakes.ollama import FakeOllama
from tests.ollama_health_support import (
    ANVIL_MODELS,
    FORGE_MODELS,
    T0,
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
    assert rig.metric("fleet_ollama_up", llm_host="forge") == 1  # probes alone
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


async def test_override_others_could_write_is_ignored(
    make_rig: Callable[..., Any],
    anvil: FakeOllama,
    forge: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loose mode or a stranger's file: ignored. Root's file is trusted whoever the daemon
    runs as (an admin may write it). Another uid planting it: test_ollama_health_shared_tmp."""
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
    if rig.override_path.stat().st_uid != 0:
        pytest.skip("the rest needs files owned by root (run as root)")
    monkeypatch.setattr("daemons.ollama_health.file_trust.os.geteuid", lambda: 4242)
    status = await rig.cycle()
    assert status["forge"]["healthy"] is False and status["_override"]["error"] is None
    os.chown(rig.override_path, 4243, 4243)
    status = await rig.cycle()
    assert status["forge"]["healthy"] is True
    assert "owned by uid 4243, not this daemon's uid 4242 or root" in status["_override"]["error"]


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
    assert rig.metric("fleet_ollama_up", llm_host="forge") is None


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

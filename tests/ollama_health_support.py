"""Helpers the in-process ollama-health tests share (no tests here): a settable clock, the
tier-routing document for two fake hosts, and ``Rig``/``RigFactory``: an ``OllamaHealth``
daemon over a real outbox and a real status file in ``tmp_path``, stepped cycle by cycle."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from daemons.ollama_health.daemon import OllamaHealth
from daemons.ollama_health.status_file import read_status
from fleet.config import RootConfig as FleetConfig
from shared.metrics import DaemonMetrics
from shared.notify import Outbox
from shared.roles import Role
from shared.runtime import DaemonContext
from tests.fakes.ollama import FakeOllama
from tests.recording_log import RecordingLog

T0 = 1_795_000_000.0
TIMEOUT_MS = 400
ANVIL_MODELS = ["llama3.1:8b", "qwen2.5-coder:32b"]
FORGE_MODELS = ["qwen2.5-coder:32b-instruct-q8_0", "llama3.1:8b"]


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


class RigFactory:
    """``await factory(doc, **section)`` opens a daemon on ``tmp_path`` (the same root and
    files each time, as a restart would); ``close()`` closes every one it opened."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[Rig] = []

    async def __call__(self, doc: dict[str, Any] | None = None, **section: Any) -> Rig:
        tmp_path = self.tmp_path
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
            role=Role.PRIMARY,
            log=log,
            metrics=DaemonMetrics("ollama-health", "0", registry=registry),
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
        self.opened.append(rig)
        return rig

    async def close(self) -> None:
        for rig in self.opened:
            await rig.daemon.close()
            await rig.outbox.close()

"""The status file the routers read: the seed's shape, written atomically, read tolerantly.

One top-level key per host ``{"healthy", "last_check", "latency_ms", "models",
"consecutive_failures", "via", "error", "override"}`` (so tier-router.js keeps reading
``status.anvil.healthy``), plus keys starting with ``_`` that are never host names:
``_generated_at``, ``_interval_s``, ``_routing``, ``_override``, ``_config`` (the table in
tier-routing.json's shape, for ``route()``), ``_config_error``, ``_link`` (the legacy-path
symlink and whether it is published) and ``_monitor`` (a copy of the daemon's memory for people
reading it). The daemon restores its memory only from its own memory file under the private
state dir, never from a status file: the legacy status path is in /tmp, where anyone can plant
one. Writes go through ``shared.files.atomic_write_json`` (temp + fsync + rename, 0600), so a
reader sees the old file or the new one, never a mix. This module must never write in place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemons.ollama_health.policy import HostState, format_iso
from daemons.ollama_health.probe import ProbeResult
from daemons.ollama_health.routing import RoutingDecision
from daemons.ollama_health.table import HostSpec, RoutingTable
from shared.files import atomic_write_json
from shared.notify import Message

__all__ = [
    "MAX_STATUS_BYTES",
    "Memory",
    "StatusFileError",
    "build_status",
    "host_entry",
    "memory_from_json",
    "parse_status",
    "read_status",
    "write_status",
]

MAX_STATUS_BYTES = 8 * 1024 * 1024


class StatusFileError(Exception):
    """The status file exists but cannot be used (unreadable, not JSON, not an object)."""


@dataclass
class Memory:
    """What the daemon carries from one cycle (or one run) to the next."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    rules_since: dict[str, float] = field(default_factory=dict)
    pending_alerts: list[Message] = field(default_factory=list)
    # "config" / "override" -> when that file last turned unusable (the error alert's identity)
    errors_since: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": {name: state.to_json() for name, state in self.hosts.items()},
            "rules": dict(self.rules_since),
            "errors": dict(self.errors_since),
            "pending_alerts": [
                {
                    "channel": m.channel,
                    "text": m.text,
                    "dedup_key": m.dedup_key,
                    "kind": m.kind,
                    "daemon": m.daemon,
                }
                for m in self.pending_alerts
            ],
        }


def host_entry(
    spec: HostSpec, state: HostState, probe: ProbeResult | None, forced: bool | None, now: float
) -> dict[str, Any]:
    """One host's object in the seed's shape (plus ``role``/``kind`` for people reading it)."""
    latency = probe.latency_s if probe is not None else None
    return {
        "healthy": forced if forced is not None else bool(state.healthy),
        "last_check": format_iso(now),
        "latency_ms": round(latency * 1000, 1) if latency is not None else None,
        "models": list(probe.models) if probe is not None else [],
        "consecutive_failures": state.consecutive_failures,
        "via": probe.via if probe is not None else None,
        "error": probe.error if probe is not None else None,
        "override": forced is not None,
        "role": spec.role,
        "kind": spec.kind,
    }


def build_status(
    *,
    table: RoutingTable,
    memory: Memory,
    probes: Mapping[str, ProbeResult],
    forced: Mapping[str, bool],
    override: Mapping[str, Any],
    decision: RoutingDecision,
    now: float,
    interval_s: float,
    config_error: str | None,
    link: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        name: host_entry(
            spec, memory.hosts.get(name, HostState()), probes.get(name), forced.get(name), now
        )
        for name, spec in table.hosts.items()
    }
    doc["_generated_at"] = format_iso(now)
    doc["_interval_s"] = interval_s
    doc["_routing"] = decision.to_json()
    doc["_override"] = dict(override)
    doc["_config"] = table.to_json()
    doc["_config_error"] = config_error
    doc["_link"] = dict(link) if link is not None else None
    doc["_monitor"] = memory.to_json()
    return doc


def write_status(path: Path, doc: Mapping[str, Any]) -> None:
    atomic_write_json(path, doc)


def read_status(path: Path) -> dict[str, Any] | None:
    """The parsed status file; None if it does not exist; StatusFileError if unusable."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StatusFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_status(raw, path)


def parse_status(raw: bytes, path: Path) -> dict[str, Any]:
    """``raw`` (the content of ``path``) as a JSON object; StatusFileError if it is not one."""
    if len(raw) > MAX_STATUS_BYTES:
        raise StatusFileError(f"{path} is larger than {MAX_STATUS_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise StatusFileError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise StatusFileError(f"{path} is not a JSON object")
    return doc


def _message(raw: Any) -> Message | None:
    if not isinstance(raw, Mapping):
        return None
    fields = ("channel", "text", "dedup_key")
    if not all(isinstance(raw.get(k), str) and raw.get(k) for k in fields):
        return None
    # Always an alert: this daemon sends nothing else, and a push would bypass silences.
    return Message(
        channel=raw["channel"],
        text=raw["text"],
        dedup_key=raw["dedup_key"],
        kind="alert",
        daemon=str(raw.get("daemon", "")),
    )


def _times(raw: Any) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def memory_from_json(raw: Any, hosts: Mapping[str, Any] | None = None) -> Memory:
    """Restore the daemon's memory from its JSON form (the memory file's content); entries
    that do not parse, or name hosts not in ``hosts`` when given, are dropped."""
    memory = Memory()
    if not isinstance(raw, Mapping):
        return memory
    raw_hosts = raw.get("hosts")
    if isinstance(raw_hosts, Mapping):
        for name, value in raw_hosts.items():
            state = HostState.from_json(value)
            if state is not None and (hosts is None or name in hosts):
                memory.hosts[name] = state
    memory.rules_since = _times(raw.get("rules"))
    memory.errors_since = _times(raw.get("errors"))
    raw_pending = raw.get("pending_alerts")
    if isinstance(raw_pending, list):
        memory.pending_alerts = [m for m in map(_message, raw_pending) if m is not None]
    return memory

"""The registry: one line per daemon. Adding a daemon is one package under ``daemons/`` (with a
``manifest.py``) plus one line here.

Each line names the daemon, where its manifest lives, and the stdlib-only hook verbs (``fleet
zakon validate``) that ``fleet.entry`` dispatches before importing anything else. This module is
standard library only: the fast paths read it before click or pydantic are imported. Manifests
are imported on first use.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.manifest import DaemonManifest

__all__ = ["LINES", "RegistryLine", "by_name", "fast_paths", "manifests"]


@dataclass(frozen=True)
class RegistryLine:
    name: str
    manifest: str  # "package.module:ATTRIBUTE"
    fast_paths: Mapping[tuple[str, str], str] = field(
        default_factory=dict, hash=False, compare=False
    )


LINES: tuple[RegistryLine, ...] = (
    RegistryLine("email-reactor", "daemons.email_reactor.manifest:MANIFEST"),
    RegistryLine("ollama-health", "daemons.ollama_health.manifest:MANIFEST"),
    RegistryLine("restore-loop", "daemons.restore_loop.manifest:MANIFEST"),
    RegistryLine("heartbeat", "daemons.heartbeat.manifest:MANIFEST"),
    RegistryLine(
        "blueprint-watchdog",
        "daemons.blueprint_watchdog.manifest:MANIFEST",
        {
            ("zakon", "validate"): "daemons.blueprint_watchdog.gate:zakon_validate_main",
            ("blueprint", "validate"): "daemons.blueprint_watchdog.gate:blueprint_validate_main",
        },
    ),
    RegistryLine("claim-sweeper", "daemons.claim_sweeper.manifest:MANIFEST"),
)


def fast_paths(lines: tuple[RegistryLine, ...] | None = None) -> dict[tuple[str, str], str]:
    """(first two argv words) -> stdlib-only "module:function(argv_rest) -> int"."""
    chosen = LINES if lines is None else lines
    return {words: target for line in chosen for words, target in line.fast_paths.items()}


@functools.cache
def _load(lines: tuple[RegistryLine, ...]) -> tuple[DaemonManifest, ...]:
    loaded = []
    for line in lines:
        module_name, _, attr = line.manifest.partition(":")
        manifest: DaemonManifest = getattr(importlib.import_module(module_name), attr)
        if manifest.name != line.name:
            raise ValueError(f"registry line {line.name!r} loads the manifest of {manifest.name!r}")
        loaded.append(manifest)
    return tuple(loaded)


def manifests(lines: tuple[RegistryLine, ...] | None = None) -> tuple[DaemonManifest, ...]:
    """Every registered daemon's manifest, in registry order."""
    return _load(LINES if lines is None else lines)


def by_name(lines: tuple[RegistryLine, ...] | None = None) -> dict[str, DaemonManifest]:
    return {m.name: m for m in manifests(lines)}

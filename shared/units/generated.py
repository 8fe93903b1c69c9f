"""Whole sets of service files: ``generate`` renders every unit or plist a host needs from the
config and the manifests it is given, in memory; ``is_generated_file`` tells a file this
generator wrote from one an operator put there (so uninstall and stale cleanup never touch the
latter). Writing and installing are the app's job; this module never writes.
"""

from __future__ import annotations

import plistlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers.expat import ExpatError

from shared.config import FleetConfig
from shared.manifest import DaemonManifest
from shared.units.launchd import LaunchAgentPlist, LaunchDaemonPlist, render_launchd
from shared.units.services import (
    DEFAULT_TIMINGS,
    GENERATED_MARKER,
    LABEL_PREFIX,
    UNIT_PREFIX,
    InstallLayout,
    ServiceTimings,
    Target,
    dedupe_paths,
    label_name,
    service_specs,
    skipped_daemons,
    unit_name,
)
from shared.units.systemd import render_systemd, render_timer, timer_name

__all__ = ["GeneratedSet", "file_name", "generate", "is_generated_file"]


@dataclass
class GeneratedSet:
    """Generated files for one target: file name -> content, plus the daemons left out."""

    target: Target
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # Directories the services write: ProtectSystem=strict cannot create them, so install does.
    write_dirs: tuple[Path, ...] = ()


def file_name(target: Target, service: str) -> str:
    return unit_name(service) if target == "systemd" else f"{label_name(service)}.plist"


def generate(
    config: FleetConfig,
    manifests: Sequence[DaemonManifest],
    target: Target,
    layout: InstallLayout,
    *,
    timings: ServiceTimings = DEFAULT_TIMINGS,
) -> GeneratedSet:
    """Every file for ``target`` from ``config`` and the daemons' ``manifests``."""
    out = GeneratedSet(target=target, skipped=skipped_daemons(config, manifests))
    specs = service_specs(config, manifests, layout)
    out.write_dirs = dedupe_paths(
        p for spec in specs for p in (*spec.write_paths, spec.log_dir, *spec.log_dirs)
    )
    for spec in specs:
        if target == "systemd":
            data = render_systemd(spec, config, layout, timings).encode()
            if spec.calendar is not None:
                out.files[timer_name(spec.name)] = render_timer(spec, layout).encode()
        else:
            data = render_launchd(spec, config, layout, timings)
        out.files[file_name(target, spec.name)] = data
    return out


def is_generated_file(path: Path) -> bool:
    """A file this generator wrote (so uninstall removes it), not one an operator put there."""
    name = path.name
    if name.startswith(UNIT_PREFIX) and name.endswith((".service", ".timer")):
        try:
            head = path.read_text(encoding="utf-8", errors="replace")[:200]
        except OSError:
            return False
        return GENERATED_MARKER in head
    if name.startswith(LABEL_PREFIX) and name.endswith(".plist"):
        try:
            raw = plistlib.loads(path.read_bytes())
        except (OSError, ValueError, plistlib.InvalidFileException, ExpatError):
            return False
        daemon = isinstance(raw, dict) and "UserName" in raw
        try:
            (LaunchDaemonPlist if daemon else LaunchAgentPlist).model_validate(raw)
        except ValueError:
            return False
        return True
    return False

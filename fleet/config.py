"""The root config: ``shared.config.FleetConfig`` plus one section per registered daemon, the
host layout's presets (``fleet.layout``), and the rules that span daemons (a standby_dir
holding a database another daemon writes).

The root model is composed from the manifests (``pydantic.create_model``), so a new daemon's
section appears with its registry line. Loading never echoes a secret (``shared.config``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import Field, create_model

from fleet.registry import RegistryLine, manifests
from shared.config import FleetConfig
from shared.config import load_config as load_shared
from shared.manifest import DaemonManifest, WrittenDb, fenced_off
from shared.roles import Role, RoleFileError, effective_role
from shared.sections import empty_table

__all__ = [
    "example_toml",
    "fleet_written_dbs",
    "load_config",
    "role_file_errors",
    "root_model",
    "standby_dir_conflicts",
]


@functools.cache
def _model(daemons: tuple[DaemonManifest, ...]) -> type[FleetConfig]:
    fields: dict[str, Any] = {}
    for m in daemons:
        taken = m.section_name in FleetConfig.model_fields or hasattr(FleetConfig, m.section_name)
        if taken or m.section_name in fields:
            raise ValueError(f"daemon {m.name!r}: section [{m.section_name}] is already taken")
        # An empty table the root validates (shared.config: no per-section validator built).
        fields[m.section_name] = (m.section, Field(default_factory=empty_table))
    return create_model("RootConfig", __base__=FleetConfig, **fields)


def __getattr__(name: str) -> Any:
    # ``from fleet.config import RootConfig``: the composed model, built on first use.
    if name == "RootConfig":
        return root_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def root_model(lines: tuple[RegistryLine, ...] | None = None) -> type[FleetConfig]:
    """``FleetConfig`` with a field per registered daemon's section."""
    return _model(manifests(lines))


def load_config(
    path: str | os.PathLike[str] | None = None,
    lines: tuple[RegistryLine, ...] | None = None,
    *,
    secret_sections: Collection[str] | None = None,
) -> FleetConfig:
    """Load and validate the whole config (every daemon's section), raising ConfigError.
    ``[fleet] layout`` presets the keys the file and the environment leave unset
    (``fleet.layout``). ``secret_sections``: whose ``*_file`` secrets to read (None: all;
    ``fleet run NAME`` reads only the shared sections' and its own)."""
    from fleet.layout import all_presets

    model = root_model(lines)
    return load_shared(path, model, all_presets(model), secret_sections=secret_sections)


def example_toml(lines: tuple[RegistryLine, ...] | None = None) -> str:
    """config/fleet.example.toml: every key of the root model with its default; the keys a
    host layout may preset are commented out, so a copied example leaves them to the layout."""
    from fleet.layout import LAYOUTS
    from shared.example_config import render_example_toml

    preset_keys = {pair for table in LAYOUTS.values() for pair in table}
    return render_example_toml(root_model(lines), preset_keys)


def fleet_written_dbs(
    config: FleetConfig, role: Role, lines: tuple[RegistryLine, ...] | None = None
) -> list[WrittenDb]:
    """The databases the fleet writes on a host of ``role`` with this config: the outbox on
    every host; on a standby also those of the enabled daemons that run there. A daemon fenced
    off the standby (email-reactor, claim-sweeper with auto_release, blueprint-watchdog writing
    hivemind_db) writes nothing there: its databases are the replica copies restore-loop keeps
    fresh, which it takes over after a promotion, exactly as ``fleet run --all`` decides."""
    out = [
        WrittenDb(
            "notify.outbox_db", config.notify.outbox_db, "the notification outbox (every host)"
        )
    ]
    if role is not Role.STANDBY:
        return out
    enabled = [m for m in manifests(lines) if config.daemon_section(m.section_name).enabled]
    fenced = fenced_off(enabled, config, role)
    for manifest in enabled:
        if manifest.name not in fenced:
            out.extend(manifest.writes(config, config.daemon_section(manifest.section_name)))
    return out


def _under(path: Path, directory: Path) -> bool:
    resolved = path.expanduser().resolve(strict=False)
    base = directory.expanduser().resolve(strict=False)
    return resolved.parent == base or base in resolved.parents


def role_file_errors(config: FleetConfig) -> list[tuple[str, str]]:
    """``(path, message)`` when the role file is there but does not name a role: every
    daemon would refuse to start, so check-config refuses too."""
    try:
        effective_role(config.fleet.role, config.role_file)
    except RoleFileError as exc:
        return [(str(exc.path), exc.detail)]
    return []


def standby_dir_conflicts(
    config: FleetConfig, lines: tuple[RegistryLine, ...] | None = None
) -> list[tuple[str, str]]:
    """``(dotted path, message)`` for each fleet-written DB inside restore-loop's
    ``standby_dir`` (empty when restore-loop is disabled or not registered). On a primary
    restore-loop refuses to run and nothing can be clobbered, so the rule is quiet there (and
    with a garbled role file, which ``role_file_errors`` reports). A pure function of the config
    plus the role file; it never creates or modifies a file."""
    try:
        section: Any = config.daemon_section("restore_loop")
    except KeyError:
        return []
    if not section.enabled:
        return []
    try:
        role = effective_role(config.fleet.role, config.role_file)
    except RoleFileError:
        return []
    writers: dict[tuple[str, Path], list[str]] = {}
    for db in fleet_written_dbs(config, role, lines):
        if _under(db.path, section.standby_dir):
            writers.setdefault((db.key, db.path), []).append(db.writer)
    errors: list[tuple[str, str]] = []
    for (key, path), names in writers.items():
        errors.append(
            (
                "restore_loop.standby_dir",
                f"{section.standby_dir} holds {path.name} ({key}), written by "
                f"{' and '.join(names)} on a {role} host; restore-loop would replace it with the "
                f"replica's copy. Move {key} out of standby_dir, or point standby_dir elsewhere",
            )
        )
    return errors

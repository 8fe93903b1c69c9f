"""Where the hook gates find things, without pydantic: the fleet root, the ZAKON registry,
mission-control.db, the override audit log and the document schemas.

Each value comes from the command line, else the environment (the same ``FLEET_*`` names the
full config honours), else the TOML file shared/config.py would load (``--config``,
``$FLEET_CONFIG``, ./fleet.toml, ~/.config/alai-fleet/fleet.toml, /etc/alai-fleet/fleet.toml),
else the embedded defaults (for the root: the one ``[fleet] layout`` presets). Standard library
only (tomllib): this runs before every write an agent makes. It must never import the CLI
framework or pydantic, and never guess past an unreadable config file or an unknown layout
(errors the gate fails closed on).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons.blueprint_watchdog.schema import DocType, SchemaError, doc_types_from_settings
from shared.config_files import find_config_file

__all__ = [
    "DEFAULT_LOG_KEEP",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_ROOT",
    "LAYOUT_ROOTS",
    "GateConfigError",
    "GateSettings",
    "resolve_gate_settings",
]

# Mirrors of shared.sections.FleetSection defaults (a test keeps them equal).
DEFAULT_ROOT = "~/.local/share/alai-fleet"
DEFAULT_LOG_MAX_BYTES = 10_000_000
DEFAULT_LOG_KEEP = 5
ROOT_TOKEN = "<root>"
# Mirror of the root each [fleet] layout presets (fleet/layout.py; tests/unit/test_layouts.py
# keeps the gate's paths equal to the full config's in every layout). The other paths the gate
# reads default under the root in every layout.
LAYOUT_ROOTS = {"default": DEFAULT_ROOT, "alai": "~/system"}


class GateConfigError(Exception):
    """The configuration the gate needs cannot be read; the gate exits 3 (fail closed)."""


@dataclass(frozen=True)
class GateSettings:
    root: Path
    home: str
    registry_file: Path
    mission_control_db: Path
    override_log: Path
    doc_types: tuple[DocType, ...]
    log_max_bytes: int
    log_keep: int
    config_file: Path | None


def _expand(value: str, home: str) -> str:
    if value == "~" or value.startswith("~/"):
        return home + value[1:]
    return value


def _resolve(value: str, root: Path, home: str) -> Path:
    if value == ROOT_TOKEN:
        return root
    if value.startswith(ROOT_TOKEN + "/"):
        return root / value[len(ROOT_TOKEN) + 1 :]
    return Path(_expand(value, home))


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise GateConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise GateConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _table(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise GateConfigError(f"[{name}] in the config file is not a table")
    return table


def _str_setting(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise GateConfigError(f"{where}.{key} must be a string")
    return value


def _int_setting(raw: str | int | None, default: int, where: str) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise GateConfigError(f"{where} must be an integer") from None
    if value < 1:
        raise GateConfigError(f"{where} must be >= 1")
    return value


def resolve_gate_settings(
    *,
    root: str | None = None,
    registry: str | None = None,
    config: str | None = None,
    mc_db: str | None = None,
    env: Mapping[str, str] | None = None,
) -> GateSettings:
    env = os.environ if env is None else env
    home = env.get("HOME") or os.path.expanduser("~")
    config_file = find_config_file(config, env=env, home=home)
    data = _load_toml(config_file) if config_file is not None else {}
    fleet = _table(data, "fleet")
    section = _table(data, "blueprint_watchdog")
    mission = _table(data, "mission_control")

    layout = env.get("FLEET_FLEET__LAYOUT") or _str_setting(fleet, "layout", "fleet") or "default"
    if layout not in LAYOUT_ROOTS:
        raise GateConfigError(
            f"fleet.layout: unknown layout {layout!r}; known: {', '.join(LAYOUT_ROOTS)}"
        )
    root_text = (
        root
        or env.get("FLEET_FLEET__ROOT")
        or _str_setting(fleet, "root", "fleet")
        or LAYOUT_ROOTS[layout]
    )
    root_path = Path(_expand(root_text, home))

    def pick(
        flag: str | None, env_key: str, table: Mapping[str, Any], key: str, where: str, default: str
    ) -> Path:
        text = flag or env.get(env_key) or _str_setting(table, key, where) or default
        return _resolve(text, root_path, home)

    registry_file = pick(
        registry,
        "FLEET_BLUEPRINT_WATCHDOG__REGISTRY_FILE",
        section,
        "registry_file",
        "blueprint_watchdog",
        "<root>/rules/zakon-registry.json",
    )
    mission_db = pick(
        mc_db,
        "FLEET_MISSION_CONTROL__DB",
        mission,
        "db",
        "mission_control",
        "<root>/databases/mission-control.db",
    )
    override_log = pick(
        None,
        "FLEET_BLUEPRINT_WATCHDOG__OVERRIDE_LOG",
        section,
        "override_log",
        "blueprint_watchdog",
        "<root>/logs/blueprint-override.jsonl",
    )
    try:
        doc_types = doc_types_from_settings(section)
    except SchemaError as exc:
        raise GateConfigError(f"blueprint_watchdog: {exc}") from None
    return GateSettings(
        root=root_path,
        home=home,
        registry_file=registry_file,
        mission_control_db=mission_db,
        override_log=override_log,
        doc_types=doc_types,
        log_max_bytes=_int_setting(
            env.get("FLEET_FLEET__LOG_MAX_BYTES") or fleet.get("log_max_bytes"),
            DEFAULT_LOG_MAX_BYTES,
            "fleet.log_max_bytes",
        ),
        log_keep=_int_setting(
            env.get("FLEET_FLEET__LOG_KEEP") or fleet.get("log_keep"),
            DEFAULT_LOG_KEEP,
            "fleet.log_keep",
        ),
        config_file=config_file,
    )

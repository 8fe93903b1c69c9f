"""Where the hook gates find things, without pydantic: the fleet root, the ZAKON registry,
mission-control.db, the override audit log and the document schemas.

The gates run inside an agent's session, so everything that session controls is untrusted:
its environment (``FLEET_*``, ``FLEET_CONFIG``, ``HOME``) and its working directory
(``./fleet.toml``). The values come only from the system config: ``/etc/alai-fleet/fleet.toml``
(``SYSTEM_CONFIG``; embedded defaults when it does not exist), or the path a generated gate
script embeds (``fleet blueprint gate-script``; then the file must exist). An explicit
``--config`` (or ``--root``/``--registry``/``--mc-db``) on the hook's command line replaces it;
``GateSettings.overrides`` lists those so the gate logs them. ``~`` is the home directory of
the user the gate runs as, from the password database. Standard library only (tomllib): this
runs before every write an agent makes. It must never import the CLI framework or pydantic,
never read the environment, and never guess past an unreadable config file or an unknown
layout (errors the gate fails closed on).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons.blueprint_watchdog.schema import DocType, SchemaError, doc_types_from_settings

__all__ = [
    "DEFAULT_LOG_KEEP",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_ROOT",
    "LAYOUT_ROOTS",
    "SYSTEM_CONFIG",
    "GateConfigError",
    "GateSettings",
    "resolve_gate_settings",
    "system_home",
]

# The only config file the gates read unless their command line names another.
SYSTEM_CONFIG = Path("/etc/alai-fleet/fleet.toml")

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
    # Explicit command-line choices that replaced the system config ("--config PATH", ...).
    overrides: tuple[str, ...] = ()


def system_home() -> str:
    """The home of the user the gate runs as, from the password database (``$HOME`` belongs to
    the caller)."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError):
        return os.path.expanduser("~")


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


def _config_data(
    config: str | None, system_config: str | os.PathLike[str] | None, home: str
) -> tuple[Path | None, dict[str, Any]]:
    if config:
        path = Path(_expand(config, home))
    elif system_config is not None:
        path = Path(system_config)  # embedded in a generated gate script: must exist
    elif os.path.lexists(SYSTEM_CONFIG):
        path = SYSTEM_CONFIG
    else:
        return None, {}
    return path, _load_toml(path)


def resolve_gate_settings(
    *,
    root: str | None = None,
    registry: str | None = None,
    config: str | None = None,
    mc_db: str | None = None,
    system_config: str | os.PathLike[str] | None = None,
    home: str | None = None,
) -> GateSettings:
    """The gate's settings. ``root``/``registry``/``config``/``mc_db`` are the hook's explicit
    command-line flags; ``system_config`` is the path a generated gate script embeds (None:
    ``SYSTEM_CONFIG`` if it exists, else the embedded defaults); ``home`` is for tests (None:
    ``system_home()``)."""
    home = home if home is not None else system_home()
    config_file, data = _config_data(config, system_config, home)
    fleet = _table(data, "fleet")
    section = _table(data, "blueprint_watchdog")
    mission = _table(data, "mission_control")

    layout = _str_setting(fleet, "layout", "fleet") or "default"
    if layout not in LAYOUT_ROOTS:
        raise GateConfigError(
            f"fleet.layout: unknown layout {layout!r}; known: {', '.join(LAYOUT_ROOTS)}"
        )
    root_text = root or _str_setting(fleet, "root", "fleet") or LAYOUT_ROOTS[layout]
    root_path = Path(_expand(root_text, home))

    def pick(
        flag: str | None, table: Mapping[str, Any], key: str, where: str, default: str
    ) -> Path:
        text = flag or _str_setting(table, key, where) or default
        return _resolve(text, root_path, home)

    registry_file = pick(
        registry,
        section,
        "registry_file",
        "blueprint_watchdog",
        "<root>/rules/zakon-registry.json",
    )
    mission_db = pick(
        mc_db, mission, "db", "mission_control", "<root>/databases/mission-control.db"
    )
    override_log = pick(
        None,
        section,
        "override_log",
        "blueprint_watchdog",
        "<root>/logs/blueprint-override.jsonl",
    )
    try:
        doc_types = doc_types_from_settings(section)
    except SchemaError as exc:
        raise GateConfigError(f"blueprint_watchdog: {exc}") from None
    flags = (("--config", config), ("--root", root), ("--registry", registry), ("--mc-db", mc_db))
    return GateSettings(
        root=root_path,
        home=home,
        registry_file=registry_file,
        mission_control_db=mission_db,
        override_log=override_log,
        doc_types=doc_types,
        log_max_bytes=_int_setting(
            fleet.get("log_max_bytes"), DEFAULT_LOG_MAX_BYTES, "fleet.log_max_bytes"
        ),
        log_keep=_int_setting(fleet.get("log_keep"), DEFAULT_LOG_KEEP, "fleet.log_keep"),
        config_file=config_file,
        overrides=tuple(f"{flag} {value}" for flag, value in flags if value),
    )

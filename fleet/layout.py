"""Host layouts: where a host's operator-visible files go. ``[fleet] layout`` picks one row of
``LAYOUTS``; ``fleet.config`` hands the table to the loader as its lowest-priority source, so a
key set in the file or the environment always wins, and the preset wins over the models'
defaults. "default" presets nothing (a new host keeps the embedded defaults); "alai" is the
ANVIL/FORGE hosts' ``~/system`` tree with the file names the seed's runbook commands use.

Pure data and formatting: it never creates, moves or links a file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydantic only where a model is read: `fleet status` reads LAYOUTS alone
    from pydantic import BaseModel

    from shared.config import FleetConfig, LayoutPresets
    from shared.sections import Layout

__all__ = [
    "LAYOUTS",
    "OperatorPath",
    "all_presets",
    "operator_paths",
    "preset_sections",
    "render_operator_paths",
]

# (section, key) -> value, as it would be written in fleet.toml ("<root>" = [fleet] root, so
# an explicit root moves the whole tree; "~" is the home of the account the fleet runs as).
LAYOUTS: dict[Layout, dict[tuple[str, str], str]] = {
    "default": {},
    "alai": {
        ("fleet", "root"): "~/system",
        ("mission_control", "db"): "<root>/databases/mission-control.db",
        ("email_reactor", "inbox_db"): "<root>/databases/email-inbox.db",
        # inbox-watcher.js's audit and quarantine logs, email-reactor-digest.js's state
        ("email_reactor", "audit_file"): "<root>/state/inbox-watcher-audit.log",
        ("email_reactor", "quarantine_file"): "<root>/state/inbox-watcher-quarantine.jsonl",
        ("email_reactor", "digest_state_file"): "<root>/logs/email-reactor-digest-state.json",
        # what tier routing reads: the real file stays in the private state dir and the
        # daemon publishes a symlink it owns at the Node monitor's /tmp path; the manual
        # failover file stays in /tmp (the runbook's `echo ... >`), trusted only when it is
        # a regular file of the fleet's user or root, not group/world-writable
        ("ollama_health", "status_file"): "<root>/state/ollama-health.json",
        ("ollama_health", "status_link"): "/tmp/ollama-health.json",
        ("ollama_health", "override_file"): "/tmp/ollama-health-override.json",
        # com.alai.litestream-restore's and com.alai.litestream's log files
        ("restore_loop", "log_file"): "<root>/logs/litestream-restore.log",
        ("restore_loop", "error_log_file"): "<root>/logs/litestream-restore-error.log",
        ("restore_loop", "replicate_log_file"): "<root>/logs/litestream.log",
        ("restore_loop", "replicate_error_log_file"): "<root>/logs/litestream-error.log",
    },
}


def _has_key(model: type[BaseModel], section: str, key: str) -> bool:
    from pydantic import BaseModel

    field = model.model_fields.get(section)
    annotation = field.annotation if field is not None else None
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and key in annotation.model_fields
    )


def preset_sections(layout: Layout, model: type[FleetConfig]) -> dict[str, dict[str, str]]:
    """``layout``'s preset as section -> key -> value, for the keys ``model`` has (a registry
    without a daemon drops that daemon's keys instead of failing on them)."""
    out: dict[str, dict[str, str]] = {}
    for (section, key), value in LAYOUTS[layout].items():
        if _has_key(model, section, key):
            out.setdefault(section, {})[key] = value
    return out


def all_presets(model: type[FleetConfig]) -> LayoutPresets:
    """Every layout's preset for ``model``: what the loader picks from by ``[fleet] layout``."""
    return {name: preset_sections(name, model) for name in LAYOUTS}


@dataclass(frozen=True)
class OperatorPath:
    key: str  # "section.key"
    path: str
    source: str  # "layout <name>", "config" (file or environment) or "default"


def _operator_keys() -> list[tuple[str, str]]:
    keys: dict[tuple[str, str], None] = {}
    for table in LAYOUTS.values():
        keys.update(dict.fromkeys(table))
    return list(keys)


def operator_paths(config: FleetConfig) -> list[OperatorPath]:
    """Each file a layout places, where it is in effect on this host and why."""
    from shared.config import resolve_root_path

    layout = config.fleet.layout
    preset = LAYOUTS[layout]
    root = config.fleet.root
    rows = []
    for section_name, key in _operator_keys():
        section: Any = getattr(config, section_name, None)
        if section is None or key not in type(section).model_fields:
            continue
        value = getattr(section, key)
        if value is None:
            unset = "(none)"
            if key.endswith("log_file"):
                unset = (
                    "(service default: <root>/logs/<service>.log and .err.log under launchd, "
                    "the journal under systemd)"
                )
            rows.append(OperatorPath(f"{section_name}.{key}", unset, "default"))
            continue
        template = preset.get((section_name, key))
        if template is not None and resolve_root_path(Path(template), root) == value:
            source = f"layout {layout}"
        elif key in section.model_fields_set:
            source = "config"
        else:
            source = "default"
        rows.append(OperatorPath(f"{section_name}.{key}", str(value), source))
    return rows


def render_operator_paths(config: FleetConfig, *, as_json: bool = False) -> str:
    """``fleet config paths``: the layout in effect and its files, as text or JSON."""
    rows = operator_paths(config)
    if as_json:
        return json.dumps(
            {
                "layout": config.fleet.layout,
                "root": str(config.fleet.root),
                "paths": [asdict(r) for r in rows],
            },
            indent=2,
        )
    width = max(len(r.key) for r in rows)
    lines = [f"layout {config.fleet.layout} (root {config.fleet.root})"]
    lines += [f"{r.key:<{width}}  {r.path}  [{r.source}]" for r in rows]
    return "\n".join(lines)

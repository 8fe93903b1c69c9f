"""The few config facts ``fleet status`` needs, read without pydantic: the root (where the
heartbeat files and the role file are), the configured role and layout, and per daemon whether
it is enabled and on which roles role fencing keeps it off the host.

``read_facts`` takes them from the TOML file and ``FLEET_*`` variables directly when every key
it needs holds a value it understands exactly as the models would (a bool, one of the literal
choices, a non-empty path); otherwise, and for an unreadable or invalid file, it loads the whole
config (``from_config``), which names every bad key and exits 78; so does a registered daemon
whose role rule is not restated in ``ROLE_RULES``. Keys it does not read are not validated
here: ``fleet check-config`` does that. Standard library only at import time, so
``fleet status`` starts in well under 0.3 s. Every default and role rule restated here is
checked against the models and manifests by tests/unit/test_status_facts.py.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet import registry
from fleet.layout import LAYOUTS
from shared.config_files import find_config_file

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.manifest import DaemonManifest

__all__ = ["DEFAULTS", "ROLE_RULES", "DaemonFacts", "StatusFacts", "cheap_facts", "from_config"]

ROLES = ("primary", "standby")
#: (section, key) -> the model's default, for the shared keys status reads
DEFAULTS: dict[tuple[str, str], Any] = {
    ("fleet", "root"): "~/.local/share/alai-fleet",
    ("fleet", "role"): "primary",
    ("fleet", "layout"): "default",
}
#: every daemon section's ``enabled`` default (DaemonSection and each daemon's own)
ENABLED_DEFAULT = True

Rule = Callable[[Mapping[str, Any], str], bool]


def _runs_anywhere(_values: Mapping[str, Any], _role: str) -> bool:
    return False


#: daemon -> (the section keys its role rule reads, with their defaults; does it refuse to run
#: on a host of this role?): the manifests' ``refuse`` restated over raw values. A registered
#: daemon missing here is read through the full config and its manifest (correct, only slower),
#: so a registry line alone still adds a daemon.
ROLE_RULES: dict[str, tuple[dict[str, Any], Rule]] = {
    "email-reactor": ({}, lambda _v, role: role == "standby"),
    "ollama-health": ({}, _runs_anywhere),
    "restore-loop": ({}, lambda _v, role: role != "standby"),
    "heartbeat": ({}, _runs_anywhere),
    "blueprint-watchdog": (
        {"hivemind_url": ""},
        lambda v, role: role == "standby" and not v["hivemind_url"],
    ),
    "claim-sweeper": (
        {"auto_release": False},
        lambda v, role: role == "standby" and v["auto_release"] is True,
    ),
}

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


@dataclass(frozen=True)
class DaemonFacts:
    name: str
    enabled: bool
    fenced_on: frozenset[str]  # the roles on which role fencing keeps it off the host


@dataclass(frozen=True)
class StatusFacts:
    root: Path
    role: str  # as configured; <root>/state/role overrides it
    layout: str
    daemons: tuple[DaemonFacts, ...]

    @property
    def heartbeat_dir(self) -> Path:
        return self.root / "state" / "heartbeats"

    @property
    def role_file(self) -> Path:
        return self.root / "state" / "role"


class _Unsure(Exception):
    """A value this reader cannot judge exactly as the models would: load the whole config."""


def _fenced_on(refuses: Callable[[str], bool]) -> frozenset[str]:
    # As DaemonManifest.fenced: refused here but not on the other role (refused on both is a
    # config problem, and the daemon stays expected).
    return frozenset(r for r in ROLES if refuses(r) and not refuses(ROLES[1 - ROLES.index(r)]))


class _Raw:
    """Raw values as pydantic-settings would see them: ``FLEET_<SECTION>__<KEY>`` (any case)
    over the TOML file over the layout's preset over the model default."""

    def __init__(self, data: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.data = data
        self.env: dict[str, list[str]] = {}
        for name, value in env.items():
            if name.upper().startswith("FLEET_"):
                self.env.setdefault(name.lower(), []).append(value)

    def table(self, section: str) -> Mapping[str, Any]:
        if f"fleet_{section}" in self.env:  # a whole table as JSON
            raise _Unsure
        matches = [k for k in self.data if str(k).lower() == section]
        if not matches:
            return {}
        table = self.data[matches[0]]
        if matches != [section] or not isinstance(table, Mapping):
            raise _Unsure
        return table

    def get(self, section: str, key: str, default: Any) -> Any:
        values = self.env.get(f"fleet_{section}__{key}")
        if values is not None:
            if len(values) > 1:  # the same variable in two spellings
                raise _Unsure
            return _from_env(values[0], default)
        table = self.table(section)
        matches = [k for k in table if str(k).lower() == key]
        if not matches:
            return default
        if matches != [key]:
            raise _Unsure
        value = table[key]
        if type(value) is not type(default):
            raise _Unsure
        return value


def _refuses(rule: Rule, values: Mapping[str, Any], role: str) -> bool:
    return rule(values, role)


def _from_env(value: str, default: Any) -> Any:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # the full load names the variable
        raise _Unsure from None
    if isinstance(default, bool):
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise _Unsure
    return value


def _choice(value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _Unsure
    return str(value)


def cheap_facts(data: Mapping[str, Any], env: Mapping[str, str]) -> StatusFacts | None:
    """The facts from the parsed TOML ``data`` and ``env``; None when a value needs the models
    to judge it."""
    raw = _Raw(data, env)
    try:
        layout = _choice(raw.get("fleet", "layout", DEFAULTS["fleet", "layout"]), tuple(LAYOUTS))
        preset = LAYOUTS[layout].get(("fleet", "root"), DEFAULTS["fleet", "root"])  # type: ignore[index]
        root_text = raw.get("fleet", "root", preset)
        if not isinstance(root_text, str) or not root_text or "\0" in root_text:
            raise _Unsure
        role = _choice(raw.get("fleet", "role", DEFAULTS["fleet", "role"]), ROLES)
        daemons = []
        for line in registry.LINES:  # read now: a test may append a line
            section = line.name.replace("-", "_")
            enabled = raw.get(section, "enabled", ENABLED_DEFAULT)
            if line.name not in ROLE_RULES:
                raise _Unsure
            keys, rule = ROLE_RULES[line.name]
            values = {key: raw.get(section, key, default) for key, default in keys.items()}
            fenced = _fenced_on(functools.partial(_refuses, rule, values))
            daemons.append(DaemonFacts(line.name, enabled, fenced))
    except _Unsure:
        return None
    return StatusFacts(Path(root_text).expanduser(), role, layout, tuple(daemons))


def from_config(config: FleetConfig, manifests: Sequence[DaemonManifest]) -> StatusFacts:
    """The same facts from a loaded config and the manifests' own role rules."""
    daemons = []
    for manifest in manifests:
        section = config.daemon_section(manifest.section_name)
        fenced = frozenset(r for r in ROLES if manifest.fenced(section, r))
        daemons.append(DaemonFacts(manifest.name, section.enabled, fenced))
    return StatusFacts(config.fleet.root, config.fleet.role, config.fleet.layout, tuple(daemons))


def read_facts(config_path: str | None, load: Callable[[str | None], FleetConfig]) -> StatusFacts:
    """The facts for ``--config`` (else the usual search): read directly when the file and the
    environment allow it, else through ``load`` (the whole config; exits 78 when invalid)."""
    config_file = find_config_file(config_path)
    data: dict[str, Any] = {}
    try:
        if config_file is not None:
            with config_file.open("rb") as fh:
                data = tomllib.load(fh)
        facts = cheap_facts(data, os.environ)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        facts = None  # the full load names the problem
    if facts is not None:
        return facts
    from fleet.registry import manifests

    return from_config(load(config_path), manifests())

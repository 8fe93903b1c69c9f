"""``ops-watchdog.json``: the legacy watchdog restarts every job its ``critical_services``
lists, so a legacy label left there would bring the old daemon back beside the fleet's (two
reactors). Read it, find the legacy labels, and rewrite the list with the fleet's labels.

``critical_services`` entries are labels (strings) or objects naming one under ``label``,
``name`` or ``service``; every other key and entry is kept as it is. A file that is not such
JSON is reported, never rewritten. Pure except ``read_watchdog``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WatchdogFile", "legacy_labels_in", "read_watchdog", "replace_labels"]

_LABEL_KEYS = ("label", "name", "service")


@dataclass(frozen=True)
class WatchdogFile:
    path: Path
    data: dict[str, Any] | None  # None: missing or unusable (see problem)
    problem: str | None = None

    @property
    def exists(self) -> bool:
        return self.data is not None or self.problem is not None


def read_watchdog(path: Path) -> WatchdogFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return WatchdogFile(path, None)
    except (OSError, UnicodeDecodeError) as exc:
        return WatchdogFile(path, None, f"cannot read it: {getattr(exc, 'strerror', None) or exc}")
    try:
        data = json.loads(text)
    except ValueError as exc:
        return WatchdogFile(path, None, f"not valid JSON: {exc}")
    if not isinstance(data, dict):
        return WatchdogFile(path, None, "not a JSON object")
    services = data.get("critical_services", [])
    if not isinstance(services, list):
        return WatchdogFile(path, None, "critical_services is not a list")
    return WatchdogFile(path, data)


def _label_of(entry: Any) -> tuple[str | None, str | None]:
    """(label, the key holding it) of one critical_services entry."""
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, dict):
        for key in _LABEL_KEYS:
            if isinstance(entry.get(key), str):
                return entry[key], key
    return None, None


def legacy_labels_in(data: Mapping[str, Any], legacy: Sequence[str]) -> list[str]:
    """The labels among ``legacy`` that critical_services lists."""
    listed = {_label_of(e)[0] for e in data.get("critical_services", [])}
    return [label for label in legacy if label in listed]


def replace_labels(
    data: Mapping[str, Any], replacements: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """A copy of ``data`` whose critical_services has each legacy label replaced by the fleet
    labels it maps to (several for litestream: one per replicate service; none listed twice)."""
    entries = list(data.get("critical_services", []))
    kept = {_label_of(e)[0] for e in entries} - set(replacements)
    out: list[Any] = []
    added: set[str] = set()
    for entry in entries:
        label, key = _label_of(entry)
        if label is None or label not in replacements:
            out.append(entry)
            continue
        for new in replacements[label]:
            if new in kept or new in added:
                continue
            added.add(new)
            out.append(new if key is None else {**entry, key: new})
    return {**data, "critical_services": out}

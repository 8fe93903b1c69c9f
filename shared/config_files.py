"""Where the fleet's TOML config file is looked for. Standard library only: commands that must
start fast resolve the same file without importing pydantic. (The pre-write gates do not use
this search: they read only the system config.)"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SEARCH_PATH", "config_search_path", "find_config_file"]

# After --config and $FLEET_CONFIG, the first of these that exists.
SEARCH_PATH = ("fleet.toml", "~/.config/alai-fleet/fleet.toml", "/etc/alai-fleet/fleet.toml")


def _expand(value: str, home: str) -> str:
    if value == "~" or value.startswith("~/"):
        return home + value[1:]
    return value


def config_search_path(home: str | None = None) -> list[Path]:
    home = home if home is not None else os.path.expanduser("~")
    return [Path(_expand(p, home)) for p in SEARCH_PATH]


def find_config_file(
    explicit: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: str | None = None,
) -> Path | None:
    """The config file to load: explicit, else $FLEET_CONFIG, else the first that exists."""
    env = os.environ if env is None else env
    home = home if home is not None else os.path.expanduser("~")
    if explicit:
        return Path(_expand(os.fspath(explicit), home))
    if env.get("FLEET_CONFIG"):
        return Path(_expand(env["FLEET_CONFIG"], home))
    for candidate in config_search_path(home):
        if candidate.is_file():
            return candidate
    return None

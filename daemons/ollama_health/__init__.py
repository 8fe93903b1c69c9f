"""ollama-health: probes the LLM servers, writes the routing status file, alerts on transitions.

Routers in Python resolve a tier with ``route(tier, model, status)`` (status: the parsed status
file, e.g. from ``read_status(path)``), which applies the failover rules exactly as the daemon
does and falls back to the configured primary when the status is missing or stale. The names
are imported on first use, so loading the config (which imports ``.config``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemons.ollama_health.routing import Route, RouteError, Unavailable, UnknownTier, route
    from daemons.ollama_health.status_file import StatusFileError, read_status

__all__ = [
    "Route",
    "RouteError",
    "StatusFileError",
    "Unavailable",
    "UnknownTier",
    "read_status",
    "route",
]

_HOMES = {
    "Route": "routing",
    "RouteError": "routing",
    "Unavailable": "routing",
    "UnknownTier": "routing",
    "route": "routing",
    "StatusFileError": "status_file",
    "read_status": "status_file",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)

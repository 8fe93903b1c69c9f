"""The gates' audit trail: who called (user, pid, parent pid, host), every explicit
command-line choice that replaced the system config, and every BLUEPRINT_OVERRIDE, appended to
the override JSONL log (0600, rotated like every fleet log). Standard library only (the hook
path imports it). It must never write anywhere but that log and stderr.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import IO, Any

from daemons.blueprint_watchdog.gate_settings import SYSTEM_CONFIG, GateSettings
from shared.files import append_jsonl

__all__ = ["audit", "log_overrides", "user_name", "who"]


def user_name(env: Mapping[str, str]) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return env.get("USER") or env.get("LOGNAME") or str(os.getuid())


def who(env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "user": user_name(env),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "host": socket.gethostname().split(".")[0],
    }


def log_overrides(
    settings: GateSettings,
    *,
    gate: str,
    path: str,
    ctx: Mapping[str, Any],
    env: Mapping[str, str],
    err: IO[str],
    now: float,
) -> None:
    """An explicit --config/--root/--registry/--mc-db replaced the system config: say so on
    stderr and in the audit log, every time."""
    if not settings.overrides:
        return
    system = ctx.get("system_config") or SYSTEM_CONFIG
    print(
        f"GATE_CONFIG_OVERRIDE: {'; '.join(settings.overrides)} replaces the system config "
        f"({system}); logged to {settings.override_log}",
        file=err,
    )
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "event": "gate_config_override",
        "gate": gate,
        "overrides": list(settings.overrides),
        "config_file": str(settings.config_file) if settings.config_file else None,
        "registry_file": str(settings.registry_file),
        "mission_control_db": str(settings.mission_control_db),
        "file": path,
        **who(env),
    }
    try:
        append_jsonl(
            settings.override_log, record, max_bytes=settings.log_max_bytes, keep=settings.log_keep
        )
    except OSError as exc:
        print(
            f"GATE_CONFIG_OVERRIDE: could not be logged to {settings.override_log} "
            f"({exc.strerror or exc})",
            file=err,
        )


def audit(settings: GateSettings, record: dict[str, Any], err: IO[str]) -> bool:
    try:
        append_jsonl(
            settings.override_log, record, max_bytes=settings.log_max_bytes, keep=settings.log_keep
        )
        return True
    except OSError as exc:
        print(
            f"BLUEPRINT_OVERRIDE refused: cannot write the audit log {settings.override_log} "
            f"({exc.strerror or exc})",
            file=err,
        )
        return False

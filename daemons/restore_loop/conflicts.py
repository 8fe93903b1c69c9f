"""The check-config rule: restore-loop's ``standby_dir`` must not hold a database the fleet itself
writes, or a fresh restore would be renamed over it.

The outbox is written on every host in every role, so it is checked whatever the role. The
replicated DBs' writers (claim-sweeper with auto_release, email-reactor, blueprint-watchdog's
HiveMind sink without hivemind_url) are checked on a standby: there they would refuse to start
anyway, so configuring them is a mistake to hear about before anything runs. On a primary
restore-loop refuses to run and nothing can be clobbered, so the rule is quiet there (the embedded
defaults keep mission-control.db and email-inbox.db under ``<root>/databases``, which is also the
default ``standby_dir``). A pure function of the config plus the role file (read as every daemon
reads it); it must never create or modify a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.config import FleetConfig

__all__ = ["fleet_written_dbs", "standby_dir_conflicts"]


def _role(config: FleetConfig) -> str:
    try:
        text = config.role_file.read_text(encoding="utf-8").strip().lower()
    except OSError:
        return config.fleet.role
    return text if text in ("primary", "standby") else config.fleet.role


def _section(config: FleetConfig, name: str) -> Any:
    return getattr(config, name, None)


def _enabled(section: Any) -> bool:
    return bool(getattr(section, "enabled", False))


def fleet_written_dbs(config: FleetConfig, role: str) -> list[tuple[str, Path, str]]:
    """(dotted config path, DB path, who writes it) for each DB the fleet writes on a host of
    ``role`` with this config."""
    out: list[tuple[str, Path, str]] = [
        ("notify.outbox_db", config.notify.outbox_db, "the notification outbox (every host)")
    ]
    if role != "standby":
        return out
    # On a standby these writers refuse to start; configuring them there is a mistake the
    # operator should hear about before a restore renames a copy over their file.
    sweeper = _section(config, "claim_sweeper")
    if _enabled(sweeper) and getattr(sweeper, "auto_release", False):
        out.append(
            ("mission_control.db", config.mission_control.db, "claim-sweeper with auto_release")
        )
    reactor = _section(config, "email_reactor")
    if _enabled(reactor):
        out.append(
            ("mission_control.db", config.mission_control.db, "email-reactor (creates MC tasks)")
        )
        inbox = getattr(reactor, "inbox_db", None)
        if isinstance(inbox, Path):
            out.append(("email_reactor.inbox_db", inbox, "email-reactor (its reactor columns)"))
    watchdog = _section(config, "blueprint_watchdog")
    hivemind = getattr(watchdog, "hivemind_db", None)
    # With hivemind_url set its HiveMind alerts go over HTTP, not into hivemind_db.
    if (
        _enabled(watchdog)
        and isinstance(hivemind, Path)
        and not getattr(watchdog, "hivemind_url", "")
    ):
        out.append(
            ("blueprint_watchdog.hivemind_db", hivemind, "blueprint-watchdog's HiveMind sink")
        )
    return out


def _under(path: Path, directory: Path) -> bool:
    resolved = path.expanduser().resolve(strict=False)
    base = directory.expanduser().resolve(strict=False)
    return resolved.parent == base or base in resolved.parents


def standby_dir_conflicts(config: FleetConfig) -> list[tuple[str, str]]:
    """``(dotted path, message)`` for each fleet-written DB inside ``restore_loop.standby_dir``
    (empty when restore-loop is disabled)."""
    section = config.restore_loop
    if not section.enabled:
        return []
    role = _role(config)
    errors: list[tuple[str, str]] = []
    seen: set[tuple[str, Path]] = set()
    for dotted, path, writer in fleet_written_dbs(config, role):
        if (dotted, path) in seen or not _under(path, section.standby_dir):
            continue
        seen.add((dotted, path))
        errors.append(
            (
                "restore_loop.standby_dir",
                f"{section.standby_dir} holds {path.name} ({dotted}), written by {writer} on a "
                f"{role} host; restore-loop would replace it with the replica's copy. Move "
                f"{dotted} out of standby_dir, or point standby_dir elsewhere",
            )
        )
    return errors

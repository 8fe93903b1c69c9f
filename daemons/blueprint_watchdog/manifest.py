"""blueprint-watchdog's manifest: what the app knows about it without importing its runtime
code. Its gate verbs' stdlib fast paths are declared on its registry line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from daemons.blueprint_watchdog.config import BlueprintWatchdogSection
from shared.config import FleetConfig
from shared.files import under_shared_tmp
from shared.manifest import AlertRule, DaemonManifest, UnitProfile, WrittenDb, metric
from shared.roles import Role, RoleFileError, effective_role
from shared.schema_contract import ContractUse
from shared.shared_tables import HIVEMIND_MESSAGES

__all__ = ["MANIFEST"]


def refuse(section: BlueprintWatchdogSection, role: Role) -> str | None:
    # (An unusable schedule never gets here: the section refuses it when the config loads.)
    if role is Role.STANDBY and not section.hivemind_url:
        return (
            "its HiveMind alerts go to hivemind_db, a database replicated from the primary; "
            "a standby must not write it. Run it on the primary, set "
            "[blueprint_watchdog] hivemind_url (HTTP sink), or disable it here "
            "([blueprint_watchdog] enabled = false)"
        )
    return None


def writes(_config: FleetConfig, section: BlueprintWatchdogSection) -> Sequence[WrittenDb]:
    # With hivemind_url set its HiveMind alerts go over HTTP, not into hivemind_db.
    if section.hivemind_url:
        return ()
    return (
        WrittenDb(
            "blueprint_watchdog.hivemind_db",
            section.hivemind_db,
            "blueprint-watchdog's HiveMind sink",
        ),
    )


def contracts(_config: FleetConfig, section: BlueprintWatchdogSection) -> Sequence[ContractUse]:
    if section.hivemind_url:
        return ()
    return (
        ContractUse(section.hivemind_db, HIVEMIND_MESSAGES, "blueprint-watchdog's HiveMind sink"),
    )


def unit_profile(_config: FleetConfig, section: BlueprintWatchdogSection) -> UnitProfile:
    paths: list[Path] = [section.report_file.parent]
    if not section.hivemind_url:
        paths.append(section.hivemind_db.parent)
    return UnitProfile(
        write_paths=tuple(paths),
        shared_tmp=under_shared_tmp(*section.roots, *paths),
        tasks_max=32,
        memory_max_mb=256,
        process_type="Background",  # a nightly batch scan nobody waits on: throttle it
    )


def sinks(config: FleetConfig, section: BlueprintWatchdogSection) -> Mapping[str, Any]:
    """The HiveMind sink its settings define, for every outbox sender on the host. The DB is
    replicated from the primary: a standby must never write it."""
    from shared.hivemind import HiveMindSink

    try:
        writable = effective_role(config.fleet.role, config.role_file) is Role.PRIMARY
    except RoleFileError:
        writable = False  # a garbled role file never makes a host writable
    return {
        "hivemind": HiveMindSink(
            db=section.hivemind_db,
            url=section.hivemind_url,
            token=section.hivemind_token.get_secret_value(),
            timeout_s=section.hivemind_timeout_s,
            writable=writable,
        )
    }


def alerts(_section: BlueprintWatchdogSection) -> Sequence[AlertRule]:
    return (
        AlertRule(
            "FleetBlueprintNoncompliant",
            "sum by (job, instance, host, type, reason) (fleet_blueprint_noncompliant) > 0",
            "10m",
            "warning",
            "{{ $value }} {{ $labels.type }} files non-compliant ({{ $labels.reason }})",
            "The nightly blueprint/ZAKON scan found files that fail the schema or liveness checks.",
            "docs/runbooks/blueprint-watchdog.md",
            ("blueprint-watchdog",),
        ),
        AlertRule(
            "FleetZakonRegistryBroken",
            # 0 also means "no registry", which only matters where ZAKON files exist
            "fleet_zakon_registry_ok == 0\n"
            "and on (job, instance)\n"
            '  sum by (job, instance) (fleet_blueprint_files{type="zakon"}) > 0',
            "10m",
            "critical",
            "ZAKON registry on {{ $labels.host }} is missing or invalid",
            "The registry is absent or corrupt while ZAKON files exist: the fail-closed gate "
            "blocks every ZAKON write until it is fixed.",
            "docs/runbooks/blueprint-watchdog.md",
            ("blueprint-watchdog",),
        ),
    )


MANIFEST = DaemonManifest(
    name="blueprint-watchdog",
    section=BlueprintWatchdogSection,
    daemon="daemons.blueprint_watchdog.daemon:BlueprintWatchdog",
    description="nightly blueprint/ZAKON liveness scan, the ZAKON registry gate",
    refuse=refuse,
    metrics=(
        metric(
            "fleet_blueprint_files", "gauge", "Documents found by the last scan, by type", "type"
        ),
        metric(
            "fleet_blueprint_noncompliant",
            "gauge",
            "Documents failing a rule in the last scan, by type and reason",
            "type",
            "reason",
        ),
        metric("fleet_blueprint_scan_duration_seconds", "gauge", "Wall time of the last scan"),
        metric(
            "fleet_blueprint_scan_problems",
            "gauge",
            "Directories the last scan could not look into (loops, unreadable, truncated)",
        ),
        metric(
            "fleet_zakon_registry_ok",
            "gauge",
            "1 if the ZAKON registry was readable and valid at the last scan, else 0",
        ),
    ),
    alerts=alerts,
    sinks=sinks,
    writes=writes,
    contracts=contracts,
    unit_profile=unit_profile,
    commands={
        "blueprint": "daemons.blueprint_watchdog.cli:blueprint",
        "zakon": "daemons.blueprint_watchdog.cli:zakon",
    },
)

"""claim-sweeper's manifest: what the app knows about it without importing its runtime code."""

from __future__ import annotations

import os
from collections.abc import Sequence

from daemons.claim_sweeper.config import ClaimSweeperSection
from shared.config import FleetConfig
from shared.manifest import AlertRule, DaemonManifest, UnitProfile, WrittenDb, metric
from shared.mc_target import URL_ENV
from shared.roles import Role
from shared.schema_contract import ContractUse
from shared.shared_tables import TASKS_LEASES

__all__ = ["MANIFEST", "claims_alert_after_s"]


def on_postgres(config: FleetConfig) -> bool:
    """Mission Control is a Postgres server every host shares (not a replicated file)."""
    return bool(os.environ.get(URL_ENV, "").strip() or config.mission_control.url)


def refuse(section: ClaimSweeperSection, role: Role) -> str | None:
    if role is Role.STANDBY and section.auto_release:
        return (
            "auto_release = true writes mission-control.db, which is replicated from "
            "the primary; on a standby set [claim_sweeper] auto_release = false, or "
            "promote this host with `fleet role set primary`"
        )
    return None


def writes(config: FleetConfig, section: ClaimSweeperSection) -> Sequence[WrittenDb]:
    if not section.auto_release or on_postgres(config):
        return ()
    return (
        WrittenDb(
            "mission_control.db", config.mission_control.db, "claim-sweeper with auto_release"
        ),
    )


def contracts(config: FleetConfig, _section: ClaimSweeperSection) -> Sequence[ContractUse]:
    if on_postgres(config):
        return ()  # the Postgres table is the fleet's own (shared/mc_postgres.py)
    return (ContractUse(config.mission_control.db, TASKS_LEASES, "claim-sweeper"),)


def unit_profile(config: FleetConfig, _section: ClaimSweeperSection) -> UnitProfile:
    # On the primary it creates/migrates mission-control.db (WAL: -wal/-shm beside it).
    return UnitProfile(
        write_paths=(config.mission_control.db.parent,),
        tasks_max=32,
        memory_max_mb=192,
        process_type="Background",  # housekeeping whose deadline is alert_after_s (minutes)
    )


def claims_alert_after_s(section: ClaimSweeperSection) -> float:
    """The sweeper already posts #ops per lease after alert_after_s; the page is for a lease
    stuck much longer (a dead session holding work): an hour, or alert_after_s if longer."""
    return max(3600.0, section.alert_after_s)


def alerts(section: ClaimSweeperSection) -> Sequence[AlertRule]:
    claims_s = claims_alert_after_s(section)
    return (
        AlertRule(
            "FleetClaimsExpired",
            f"fleet_claims_expired > 0 and fleet_claims_oldest_expired_age_seconds > {claims_s:g}",
            "5m",
            "warning",
            "{{ $labels.host }}: a Mission Control lease expired over "
            f"{claims_s / 60:g} minutes ago",
            "A task is held by a session that stopped extending its lease; nobody else may "
            "take it until it is released.",
            "docs/runbooks/claim-sweeper.md",
            ("claim-sweeper",),
        ),
    )


MANIFEST = DaemonManifest(
    name="claim-sweeper",
    section=ClaimSweeperSection,
    daemon="daemons.claim_sweeper.daemon:ClaimSweeper",
    description="find expired Mission Control task leases, alert #ops, optionally release",
    refuse=refuse,
    metrics=(
        metric("fleet_claims_held", "gauge", "Leases currently held and live"),
        metric("fleet_claims_expired", "gauge", "Leases held past their expiry"),
        metric("fleet_claims_released_total", "counter", "Expired leases released by the sweeper"),
        metric(
            "fleet_claims_oldest_expired_age_seconds",
            "gauge",
            "How long the oldest expired lease has been expired (0: none)",
        ),
    ),
    alerts=alerts,
    writes=writes,
    contracts=contracts,
    unit_profile=unit_profile,
)

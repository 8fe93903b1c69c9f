"""The replication bill as the operator reads it: per tier, the standby's follow interval, LIST
requests a day and monthly cost, and the primary's upload PUTs (each DB's sync interval times its
measured write rate, or every sync interval when no rate was measured). Text only; it must never
read a file or start a process (``fleet restore status`` and ``fleet litestream config`` pass
what they read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from daemons.restore_loop.catalog import TierTable, go_duration_s
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.cost import (
    LISTS_PER_IDLE_POLL,
    CostItem,
    derive_follow_intervals,
    monthly_cost,
    standby_requests_per_day,
    upload_puts_per_day,
)

__all__ = ["Bill", "UploadItem", "bill", "bill_lines", "table_items"]


@dataclass(frozen=True)
class UploadItem:
    """One DB replicated by the primary: its sync interval and measured write rate (None: not
    measured, every sync interval is assumed to upload)."""

    db: str
    sync_interval_s: float
    writes_per_s: float | None


@dataclass(frozen=True)
class Bill:
    standby_per_day: float
    standby_per_month: float
    upload_per_day: float
    upload_per_month: float
    per_tier: dict[str, dict[str, Any]]
    currency: str

    def to_json(self) -> dict[str, Any]:
        return {
            "standby_list_per_day": round(self.standby_per_day),
            "standby_cost_per_month": round(self.standby_per_month, 2),
            "primary_put_per_day": round(self.upload_per_day),
            "primary_cost_per_month": round(self.upload_per_month, 2),
            "currency": self.currency,
            "tiers": self.per_tier,
        }


def table_items(
    section: RestoreLoopSection, table: TierTable
) -> tuple[list[CostItem], list[UploadItem]]:
    """What the tier table would cost on the standby (intervals derived as the daemon does)
    and on the primary (every DB of every tier uploads)."""
    rows = table.in_tiers(section.tiers)
    fixed: list[CostItem] = []
    open_counts: dict[str, int] = {}
    for db in rows:
        mode = db.mode or section.mode
        interval = db.follow_interval_s or section.fixed_follow_interval(db.tier)
        if mode == "follow" and interval is None:
            open_counts[db.tier] = open_counts.get(db.tier, 0) + 1
        else:
            fixed.append(CostItem(db.tier, mode, interval or 1.0))
    derived = derive_follow_intervals(
        section, open_counts, standby_requests_per_day(section, fixed)
    )
    items = [
        CostItem(
            db.tier,
            db.mode or section.mode,
            db.follow_interval_s
            or section.fixed_follow_interval(db.tier)
            or derived.get(db.tier, section.max_follow_interval_s),
        )
        for db in rows
    ]
    uploads = [
        UploadItem(db.name, go_duration_s(db.sync_interval) if db.sync_interval else 1.0, None)
        for db in table.databases
    ]
    return items, uploads


def bill(
    section: RestoreLoopSection,
    items: Iterable[CostItem],
    uploads: Iterable[UploadItem],
    measured: Mapping[str, float] | None = None,
) -> Bill:
    """Standby LISTs and primary PUTs a day and a month; ``measured`` = db -> writes/s."""
    per_tier: dict[str, dict[str, Any]] = {}
    by_tier: dict[str, list[CostItem]] = {}
    for item in items:
        by_tier.setdefault(item.tier, []).append(item)
    standby = 0.0
    for tier in sorted(by_tier):
        per_day = standby_requests_per_day(section, by_tier[tier])
        standby += per_day
        per_tier[tier] = {
            "dbs": len(by_tier[tier]),
            "follow_interval_s": sorted(
                {i.interval_s for i in by_tier[tier] if i.mode == "follow"}
            ),
            "list_per_day": round(per_day),
            "cost_per_month": round(monthly_cost(per_day, section.list_price_per_10k), 2),
        }
    upload = 0.0
    for u in uploads:
        rate = (measured or {}).get(u.db, u.writes_per_s)
        # Not measured: the upper bound, a write in every sync interval.
        upload += upload_puts_per_day(u.sync_interval_s, 1e9 if rate is None else rate)
    return Bill(
        standby_per_day=standby,
        standby_per_month=monthly_cost(standby, section.list_price_per_10k),
        upload_per_day=upload,
        upload_per_month=monthly_cost(upload, section.put_price_per_10k),
        per_tier=per_tier,
        currency=section.currency,
    )


def bill_lines(section: RestoreLoopSection, b: Bill, *, measured: bool) -> list[str]:
    cur = section.currency
    basis = "measured write rates" if measured else "every DB idle: the upper bound"
    lines = [
        f"standby polling ({basis}): {b.standby_per_day:,.0f} LIST requests/day, about "
        f"{b.standby_per_month:,.2f} {cur}/month at {section.list_price_per_10k:g} {cur} per "
        f"10,000 (budget {section.budget_eur_month:g} {cur}/month; an idle follower poll is "
        f"{LISTS_PER_IDLE_POLL} LISTs; a copy that did not advance is listed once per "
        f"{section.verify_interval_s:g}s)"
    ]
    if b.standby_per_month > section.budget_eur_month * 1.01 and section.budget_eur_month > 0:
        lines.append(
            f"  OVER BUDGET: fixed intervals, max_follow_interval_s "
            f"({section.max_follow_interval_s:g}s) or the verification listings cost more than "
            f"{section.budget_eur_month:g} {cur}/month; raise the budget or the bounds"
        )
    for tier, row in b.per_tier.items():
        intervals = ", ".join(f"{iv:g}s" for iv in row["follow_interval_s"]) or "-"
        lines.append(
            f"  {tier}: {row['dbs']} DBs, follow interval {intervals}: "
            f"{row['list_per_day']:,} LIST/day, {row['cost_per_month']:,.2f} {cur}/month"
        )
    basis = "measured write rates" if measured else "a write in every sync interval (upper bound)"
    lines.append(
        f"primary uploads: {b.upload_per_day:,.0f} PUT requests/day, about "
        f"{b.upload_per_month:,.2f} {cur}/month at {section.put_price_per_10k:g} {cur} per "
        f"10,000 ({basis}; LTX files per sync interval plus compactions)"
    )
    lines.append(
        f"whole replication bill: about {b.standby_per_month + b.upload_per_month:,.2f} "
        f"{cur}/month in requests (storage not included)"
    )
    return lines

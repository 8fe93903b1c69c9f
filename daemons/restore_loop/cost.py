"""The replication bill as pure arithmetic: blob requests a day and their monthly cost, for the
standby (follower polls, verification listings, snapshot restores) and for the primary's uploads
(one LTX file PUT per sync interval with writes, plus compactions), and the follow interval of
each tier derived from ``[restore_loop] budget_eur_month``.

Counts measured with litestream 0.5.17 against Azurite (abs): an idle follower poll is 9 LIST
requests (``ltx/0/<next>``, then levels 1-8), a ``litestream ltx -json`` is 1 LIST, a one-shot
restore lists levels 0-9. No I/O, no clock: this module must never start a process or read a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemons.restore_loop.config import RestoreLoopSection

__all__ = [
    "DAY_S",
    "LISTS_PER_IDLE_POLL",
    "LISTS_PER_LTX",
    "LISTS_PER_RESTORE",
    "MONTH_DAYS",
    "CostItem",
    "budget_requests_per_day",
    "derive_follow_intervals",
    "falls_behind",
    "lists_per_poll",
    "monthly_cost",
    "standby_requests_per_day",
    "upload_puts_per_day",
]

LISTS_PER_IDLE_POLL = 9
LISTS_PER_LTX = 1
LISTS_PER_RESTORE = 10
DAY_S = 86400.0
MONTH_DAYS = 30.0
# litestream 0.5 default compaction levels (seconds): L1 30 s, L2 5 min, L3 1 h, and the daily
# snapshot. Each level writes one file per interval in which the level below changed.
COMPACTION_INTERVALS_S = (30.0, 300.0, 3600.0, DAY_S)


@dataclass(frozen=True)
class CostItem:
    """One DB of the plan: its tier, mode and follow interval (seconds)."""

    tier: str
    mode: str
    interval_s: float
    #: measured write transactions a second (None: unknown, every poll counted as idle)
    writes_per_s: float | None = None
    #: the primary's sync interval: at most one level-0 file per sync interval appears
    sync_interval_s: float = 1.0
    #: lag at which a follower falling behind is restarted fresh (None: not modelled)
    behind_after_s: float | None = None


def lists_per_poll(item: CostItem) -> float:
    """LIST requests of one follower poll: 9 when it finds nothing, 1 when it finds a new file.
    A poll finds one when the primary uploaded since the last one (litestream 0.5.17 applies one
    file a poll, so a DB uploading faster than the polls always has one waiting)."""
    if item.writes_per_s is None or item.writes_per_s <= 0:
        return float(LISTS_PER_IDLE_POLL)
    uploads_per_s = min(item.writes_per_s, 1.0 / max(item.sync_interval_s, 1e-3))
    found = min(1.0, uploads_per_s * item.interval_s)
    return LISTS_PER_IDLE_POLL - (LISTS_PER_IDLE_POLL - 1) * found


def monthly_cost(per_day: float, price_per_10k: float) -> float:
    return per_day * MONTH_DAYS / 10_000.0 * price_per_10k


def budget_requests_per_day(section: RestoreLoopSection) -> float:
    """LIST requests a day that ``budget_eur_month`` pays for (inf when LISTs are free)."""
    if section.list_price_per_10k <= 0:
        return math.inf
    return section.budget_eur_month / section.list_price_per_10k * 10_000.0 / MONTH_DAYS


def _verify_per_day(section: RestoreLoopSection) -> float:
    # Upper bound: a follower is listed only when its copy did not advance, at most once per
    # verify_interval_s.
    return DAY_S / section.verify_interval_s * LISTS_PER_LTX


def falls_behind(item: CostItem) -> bool:
    """The DB uploads more files than its follower polls (one file a poll): it falls behind
    and is caught up by fresh restarts."""
    if item.writes_per_s is None or item.behind_after_s is None:
        return False
    uploads_per_s = min(item.writes_per_s, 1.0 / max(item.sync_interval_s, 1e-3))
    return uploads_per_s * item.interval_s > 1.0


def _item_per_day(section: RestoreLoopSection, item: CostItem) -> float:
    mode, interval_s = item.mode, item.interval_s
    if mode == "follow" and falls_behind(item) and item.behind_after_s is not None:
        # A cycle: a fresh restore (LISTS_PER_RESTORE), then a poll every interval (1 LIST,
        # it always finds a file) and a listing every check round that is an interval after
        # the last (it is behind), until the lag reaches behind_after_s, seen at a listing.
        every = max(interval_s, section.check_interval_s)
        cycle = item.behind_after_s + every
        per_cycle = LISTS_PER_RESTORE + cycle / interval_s + cycle / every * LISTS_PER_LTX
        return DAY_S / cycle * per_cycle
    if mode == "follow":
        return DAY_S / interval_s * lists_per_poll(item) + _verify_per_day(section)
    # snapshot mode: one listing per check round, a restore per snapshot interval (if changed)
    return (
        DAY_S / section.check_interval_s * LISTS_PER_LTX
        + DAY_S / section.snapshot_interval_s * LISTS_PER_RESTORE
    )


def standby_requests_per_day(section: RestoreLoopSection, items: Iterable[CostItem]) -> float:
    """Blob LIST requests a day of the standby for ``items``: an idle poll is 9 LISTs (the
    upper bound, used when the write rate is unknown), one that finds data 1 plus the GETs."""
    return sum(_item_per_day(section, i) for i in items)


def derive_follow_intervals(
    section: RestoreLoopSection,
    counts: Mapping[str, int],
    fixed_per_day: float = 0.0,
) -> dict[str, float]:
    """The follow interval of each tier in ``counts`` (tier -> follow-mode DBs whose interval
    is not fixed) so that the standby's LIST requests fit ``budget_eur_month``.

    ``fixed_per_day`` is what the rest (fixed intervals, snapshot-mode DBs) costs. The budget left
    after it and after the verification listings is shared by ``tier_weights`` (normalised over
    the tiers present); within a tier every DB gets the same interval, clamped to
    [min_follow_interval_s, max_follow_interval_s] and rounded up to 0.1 s."""
    tiers = {t: n for t, n in counts.items() if n > 0}
    if not tiers:
        return {}
    lo, hi = section.min_follow_interval_s, section.max_follow_interval_s
    budget = budget_requests_per_day(section)
    left = budget - fixed_per_day - sum(tiers.values()) * _verify_per_day(section)
    weights = {t: section.tier_weights.get(t, 0.0) for t in tiers}
    total_weight = sum(weights.values())
    out: dict[str, float] = {}
    for tier, n in tiers.items():
        share = left * (weights[tier] / total_weight if total_weight > 0 else 1 / len(tiers))
        if math.isinf(share):
            interval = lo
        elif share <= 0:
            interval = hi
        else:
            interval = n * LISTS_PER_IDLE_POLL * DAY_S / share
        interval = math.ceil(min(hi, max(lo, interval)) * 10 - 1e-9) / 10
        out[tier] = interval
    return out


def upload_puts_per_day(sync_interval_s: float, writes_per_s: float) -> float:
    """Blob PUT requests a day of the primary's ``litestream replicate`` for one DB: a level-0
    LTX file per sync interval in which it was written, and one file per compaction level and
    interval with changes. ``writes_per_s`` is the measured write-transaction rate (0: idle)."""
    if writes_per_s <= 0:
        return 0.0
    per_day = DAY_S * min(1.0 / max(sync_interval_s, 1e-3), writes_per_s)
    for level_s in COMPACTION_INTERVALS_S:
        per_day += DAY_S * min(1.0 / level_s, writes_per_s)
    return per_day

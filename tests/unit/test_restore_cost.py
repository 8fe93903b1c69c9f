"""The replication bill: today's fixed 1 s / 15 s intervals reproduce the issue's 15.9 M LIST a
day for the example tier table; the default budget derives intervals that fit it (<= 1/20 of
that); the primary's upload PUTs follow the sync interval and the write rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemons.restore_loop.catalog import load_tier_table
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.cost import (
    LISTS_PER_IDLE_POLL,
    CostItem,
    budget_requests_per_day,
    derive_follow_intervals,
    falls_behind,
    lists_per_poll,
    monthly_cost,
    standby_requests_per_day,
    upload_puts_per_day,
)
from daemons.restore_loop.cost_report import bill, bill_lines, table_items

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "databases.example.toml"


def test_todays_defaults_cost_what_the_issue_measured() -> None:
    today = RestoreLoopSection(follow_interval={"P0": 1, "P1": 15}, verify_interval_s=10)
    items, uploads = table_items(today, load_tier_table(EXAMPLE))
    per_day = bill(today, items, uploads).standby_per_day
    assert per_day == pytest.approx(15.9e6, rel=0.01)
    assert monthly_cost(per_day, 0.05) == pytest.approx(2386, rel=0.01)


def test_the_default_budget_is_a_twentieth_of_today() -> None:
    section = RestoreLoopSection()
    items, uploads = table_items(section, load_tier_table(EXAMPLE))
    b = bill(section, items, uploads)
    assert b.standby_per_day <= 800_000
    assert b.standby_per_day <= budget_requests_per_day(section) * 1.001
    assert b.standby_per_month <= section.budget_eur_month * 1.001
    p0 = b.per_tier["P0"]["follow_interval_s"]
    p1 = b.per_tier["P1"]["follow_interval_s"]
    assert len(p0) == 1 and len(p1) == 1 and p0[0] < p1[0]
    text = "\n".join(bill_lines(section, b, measured=False))
    assert "LIST requests/day" in text and "PUT requests/day" in text and "EUR/month" in text


def test_derived_intervals_scale_with_budget_and_stay_in_bounds() -> None:
    counts = {"P0": 17, "P1": 42}
    rich = derive_follow_intervals(RestoreLoopSection(budget_eur_month=1000), counts)
    poor = derive_follow_intervals(RestoreLoopSection(budget_eur_month=10), counts)
    assert rich["P0"] < poor["P0"] and rich["P1"] < poor["P1"]
    broke = derive_follow_intervals(RestoreLoopSection(budget_eur_month=0.01), counts)
    assert broke == {"P0": 300.0, "P1": 300.0}  # max_follow_interval_s
    free = derive_follow_intervals(RestoreLoopSection(list_price_per_10k=0), counts)
    assert free == {"P0": 1.0, "P1": 1.0}  # min_follow_interval_s
    section = RestoreLoopSection(budget_eur_month=200)  # no tier at a bound
    derived = derive_follow_intervals(section, counts)
    spent = standby_requests_per_day(
        section, [CostItem(t, "follow", derived[t]) for t, n in counts.items() for _ in range(n)]
    )
    assert spent == pytest.approx(budget_requests_per_day(section), rel=0.01)
    one_poll = CostItem("P0", "follow", 10.0)
    assert standby_requests_per_day(section, [one_poll]) == pytest.approx(
        8640 * LISTS_PER_IDLE_POLL + 86400 / section.verify_interval_s
    )


def test_upload_puts_follow_sync_interval_and_write_rate() -> None:
    assert upload_puts_per_day(1.0, 0.0) == 0.0
    busy = upload_puts_per_day(1.0, 10.0)
    assert busy == pytest.approx(86400 + 2880 + 288 + 24 + 1)
    slow_sync = upload_puts_per_day(10.0, 10.0)
    assert slow_sync < busy / 5
    rare = upload_puts_per_day(1.0, 1 / 3600)  # one write an hour
    assert rare == pytest.approx(24 * 4 + 1)


def test_a_poll_that_finds_data_is_one_list() -> None:
    idle = CostItem("P0", "follow", 10.0)
    assert lists_per_poll(idle) == LISTS_PER_IDLE_POLL  # unknown rate: the upper bound
    assert lists_per_poll(CostItem("P0", "follow", 10.0, 0.0)) == LISTS_PER_IDLE_POLL
    busy = CostItem("P0", "follow", 10.0, writes_per_s=10.0, sync_interval_s=1.0)
    assert lists_per_poll(busy) == 1.0  # a new file waits at every poll
    rare = CostItem("P0", "follow", 10.0, writes_per_s=0.01, sync_interval_s=1.0)
    assert lists_per_poll(rare) == pytest.approx(9 - 8 * 0.1)


def test_a_follower_falling_behind_costs_its_restarts() -> None:
    section = RestoreLoopSection()
    keeps_up = CostItem("P0", "follow", 1.0, 10.0, 1.0, behind_after_s=30.0)
    assert not falls_behind(keeps_up)  # one upload a second, one poll a second
    slow = CostItem("P0", "follow", 20.0, 10.0, 1.0, behind_after_s=30.0)
    assert falls_behind(slow)
    cycle = 30.0 + 20.0  # restart, then a poll and a listing an interval until 30 s behind
    expected = 86400 / cycle * (10 + 2 * cycle / 20.0)  # (check rounds every 10 s < 20 s)
    assert standby_requests_per_day(section, [slow]) == pytest.approx(expected)
    # Without the restart threshold it is not modelled (the poll model alone).
    assert not falls_behind(CostItem("P0", "follow", 20.0, 10.0, 1.0))

"""Fewer fresh restores: fast follow switches only the followers whose interval changes (a P0
follower already polling at the fast interval, a busy DB at its upload-rate floor, is current
and keeps running; a fresh restore replays every LTX file since the last snapshot, and promote
waited 30 s for 17 of them after 5 minutes of writes); and a busy DB's follower starts at its
floor, from one listing taken before it starts, instead of being restarted once two listings
measured the rate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.follower_pool import CopyContext, DbState, FollowerPool
from daemons.restore_loop.litestream import LitestreamError
from daemons.restore_loop.policy import LtxFile, ReplicaView, level0_upload_rate
from daemons.restore_loop.replica_check import ReplicaChecker
from daemons.restore_loop.state import RestoreTarget


class RunningChild:
    """What the pool reads of a follower: its pid, its child's interval, restart requests."""

    def __init__(self, interval_s: float) -> None:
        self.pid: int | None = 4242
        self.child_interval_s = interval_s
        self.restarts: list[str] = []

    def request_restart(self, reason: str) -> None:
        self.restarts.append(reason)


def state(name: str, tier: str, budget_s: float, child_s: float, floor_s: float | None) -> Any:
    target = RestoreTarget(name, tier, Path(f"/db/{name}.db"), "follow", budget_s, 60.0, 60.0)
    st = DbState(target, floor_s=floor_s)
    st.follower = RunningChild(child_s)  # type: ignore[assignment]
    return st


def pool() -> FollowerPool:
    registry = CollectorRegistry()
    ctx = CopyContext(
        section=RestoreLoopSection(fast_follow_interval_s=1.0),
        work_dir=Path("/nonexistent"),
        log=structlog.get_logger(),
        clock=lambda: 0.0,
        dry_run=True,
        is_fenced=lambda name: False,
        start_slots=asyncio.Semaphore(1),
    )
    return FollowerPool(
        ctx,
        restarts=Counter("r", "r", ["db", "reason"], registry=registry),
        failures=Counter("f", "f", ["db", "reason"], registry=registry),
    )


def test_fast_follow_restarts_only_followers_whose_interval_changes() -> None:
    busy = state("busy", "P0", 26.5, 1.0, floor_s=1.0)  # at its floor: already fast
    idle = state("idle", "P0", 26.5, 26.5, floor_s=None)
    p1 = state("archive", "P1", 262.0, 262.0, floor_s=None)
    stopped = state("down", "P0", 26.5, 26.5, floor_s=None)
    stopped.follower.pid = None
    p = pool()
    assert p.set_fast(True, [busy, idle, p1, stopped]) == ["idle"]
    assert busy.follower.restarts == [] and p1.follower.restarts == []
    assert idle.follower.restarts == ["fast_follow"]
    assert p.interval_for(busy) == 1.0 and p.interval_for(idle) == 1.0
    assert p.interval_for(p1) == 262.0  # P1 never fast follows

    # The primary answers again: the idle DB's new child (1 s) goes back to the budget's 26.5 s;
    # the busy one stays at its floor, no restart.
    idle.follower.child_interval_s = 1.0
    assert p.set_fast(False, [busy, idle, p1]) == ["idle"]
    assert idle.follower.restarts == ["fast_follow", "slow_follow"]
    assert busy.follower.restarts == [] and p.interval_for(idle) == 26.5


# A busy DB's follower starts at its floor: one listing before it starts tells the rate --------
T0 = 1_800_000_000.0


def level0(*ages: float) -> ReplicaView:
    """Level-0 files written ``ages`` seconds before T0 (one TXID each)."""
    ordered = sorted(ages, reverse=True)
    return ReplicaView(
        tuple(LtxFile(0, i + 1, i + 1, 100, T0 - age) for i, age in enumerate(ordered))
    )


def test_one_listing_tells_the_upload_rate() -> None:
    busy = level0(*[float(a) for a in range(0, 40)])  # one file a second for 40 s
    assert level0_upload_rate(busy, T0 + 0.5) == pytest.approx(1.0)
    every_4s = level0(0, 4, 8, 12, 16, 20, 24, 28)
    assert level0_upload_rate(every_4s, T0 + 1) == pytest.approx(0.25)
    assert level0_upload_rate(busy, T0 + 60) == 0.0  # the newest is a minute old: idle now
    assert level0_upload_rate(level0(0, 1), T0) is None  # too few files to tell
    assert level0_upload_rate(level0(0, 1, 2), T0) is None  # spanning under 5 s
    assert level0_upload_rate(ReplicaView(()), T0) is None
    # Only level 0 counts (compacted files cover many uploads).
    compacted = ReplicaView((LtxFile(1, 1, 30, 100, T0 - 30), LtxFile(1, 31, 60, 100, T0)))
    assert level0_upload_rate(compacted, T0) is None


class ListingOnly:
    """The one litestream call ``first_listing`` makes."""

    def __init__(self, views: dict[str, ReplicaView | None]) -> None:
        self.views = views
        self.calls: list[str] = []

    async def ltx(self, path: Path, *, level: str = "0") -> ReplicaView:
        self.calls.append(path.stem)
        view = self.views[path.stem]
        if view is None:
            raise LitestreamError("timeout", "listing timed out")
        return view


def make_checker(clock: Any) -> ReplicaChecker:
    registry = CollectorRegistry()
    ctx = CopyContext(
        section=RestoreLoopSection(),
        work_dir=Path("/nonexistent"),
        log=structlog.get_logger(),
        clock=clock,
        dry_run=False,
        is_fenced=lambda name: False,
        start_slots=asyncio.Semaphore(1),
    )

    def record_floor(st: DbState, floor_s: float | None) -> bool:
        st.floor_s = floor_s
        return False

    def gauge(name: str, *labels: str) -> Gauge:
        return Gauge(name, name, list(labels), registry=registry)

    return ReplicaChecker(
        ctx,
        lag=gauge("lag", "db", "tier"),
        local=gauge("local", "db"),
        replica=gauge("replica", "db"),
        last_success=gauge("ok", "db"),
        failures=Counter("f", "f", ["db", "reason"], registry=registry),
        floors=record_floor,
    )


def test_first_listing_floors_a_busy_db_before_its_follower_starts() -> None:
    checker = make_checker(lambda: T0 + 0.5)

    def new(name: str) -> DbState:
        path = Path(f"/db/{name}.db")
        return DbState(RestoreTarget(name, "P0", path, "follow", 26.5, 60.0, 60.0))

    states = [new("busy"), new("idle"), new("down")]
    ls = ListingOnly(
        {"busy": level0(*[float(a) for a in range(0, 40)]), "idle": level0(100), "down": None}
    )
    asyncio.run(checker.first_listing(states, ls))  # type: ignore[arg-type]
    busy, idle, down = states
    assert busy.floor_s == 1.0 and busy.writes_per_s == pytest.approx(1.0)
    assert busy.listed_at == T0 + 0.5 and busy.replica is not None  # the first check reuses it
    assert idle.floor_s is None and idle.writes_per_s == 0.0
    assert down.floor_s is None and down.listed_at is None  # a failed listing changes nothing
    assert sorted(ls.calls) == ["busy", "down", "idle"]


def test_progress_is_no_upload_rate_when_the_follower_applies_a_file_every_poll() -> None:
    now = [T0]
    checker = make_checker(lambda: now[0])
    target = RestoreTarget("a", "P0", Path("/db/a.db"), "follow", 20.0, 60.0, 60.0)
    st = DbState(target, replica=level0(100), listed_at=T0 - 100)
    child = RunningChild(20.0)
    child.started_at = T0 - 100  # type: ignore[attr-defined]
    st.follower = child  # type: ignore[assignment]

    def progress(at: float, local: int) -> float | None:
        now[0] = at
        checker.from_progress(st, local, "")
        return st.writes_per_s

    assert progress(T0, 10) is None  # the first mark
    # One file in 10 s with 20 s polls: two files a poll is more than a follower can apply,
    # so the DB may upload faster: no rate (a listing tells, and then the floor).
    assert progress(T0 + 10, 11) is None and st.floor_s is None
    assert progress(T0 + 20, 11) == 0.0  # nothing applied: idle
    # A fresh restore since the mark (a jump of 29 TXIDs) is no rate either.
    child.started_at = T0 + 25  # type: ignore[attr-defined]
    assert progress(T0 + 30, 40) == 0.0
    # One file in two polls: it keeps up at its interval, and that is the DB's rate.
    assert progress(T0 + 70, 41) == pytest.approx(1 / 40)

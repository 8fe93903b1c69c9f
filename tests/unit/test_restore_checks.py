"""Cheaper checks: a following copy is listed (one `litestream ltx`) only when it was never
listed, looks stuck (behind at the last listing and not advanced since), or once per
verify_interval_s; otherwise its freshness comes from its follower's own progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemons.restore_loop.assessment import CopyState, needs_listing, progress_only
from daemons.restore_loop.policy import LtxFile, ReplicaView
from daemons.restore_loop.state import RestoreTarget

T0 = 1_800_000_000.0
VERIFY = 120.0
# Listed at T0: TXIDs 1..9, the newest written 10 s before.
LISTED = ReplicaView((LtxFile(0, 1, 6, 100, T0 - 50), LtxFile(0, 7, 9, 100, T0 - 10)))


def copy(mode: str = "follow", **kw: Any) -> CopyState:
    target = RestoreTarget("a", "P0", Path("/db/a.db"), mode, 1.0, 60.0, 60.0)
    return CopyState(target, **kw)


def needs(c: CopyState, local: int | None, now: float, following: bool = True) -> bool:
    return needs_listing(c, following=following, local_txid=local, now=now, verify_s=VERIFY)


def test_listing_needed_only_when_progress_cannot_tell() -> None:
    caught_up = copy(replica=LISTED, listed_at=T0, local_txid=9)
    assert not needs(caught_up, 9, T0 + 10)  # idle and caught up: no subprocess
    assert not needs(caught_up, 12, T0 + 10)  # advancing past the listing
    assert needs(caught_up, 9, T0 + VERIFY)  # but verified once per verify interval
    behind = copy(replica=LISTED, listed_at=T0, local_txid=5)
    assert needs(behind, 5, T0 + 1)  # behind and not advanced: looks stuck
    assert not needs(behind, 7, T0 + 0.5)  # behind but advancing
    assert needs(behind, 7, T0 + 1.0)  # ... listed again a follow interval later
    assert needs(copy(), 9, T0)  # never listed
    assert needs(copy(replica=ReplicaView(()), listed_at=T0), 9, T0 + 1)  # replica missing
    assert needs(caught_up, 9, T0 + 1, following=False)  # restoring, failing
    assert needs(copy("snapshot", replica=LISTED, listed_at=T0, local_txid=9), 9, T0 + 1)


def test_progress_only_judges_against_the_last_listing() -> None:
    c = copy(replica=LISTED, listed_at=T0, local_txid=6, last_success_at=T0 - 100)
    fresh = progress_only(c, 9, T0 + 5)
    assert fresh.lag_s == 0.0 and fresh.verified_fresh_at == T0 + 5 == fresh.last_success_at
    assert not fresh.compared  # no listing: the stall watch does not see this check
    past = progress_only(c, 11, T0 + 5)  # past the listing: applied since, fresh
    assert past.lag_s == 0.0
    stuck = progress_only(c, 6, T0 + 5)  # the pending 7..9 keep their age
    assert stuck.lag_s == pytest.approx(15.0) and stuck.last_success_at == T0 - 100
    moving = progress_only(c, 8, T0 + 5)
    assert moving.lag_s == pytest.approx(15.0) and moving.last_success_at == T0 + 5


def test_a_busy_db_is_polled_at_its_upload_rate() -> None:
    from daemons.restore_loop.policy import busy_floor

    # 1 upload a second (sync 1 s) against a 20 s budget interval: polled a bit faster.
    assert busy_floor(10.0, 1.0, 20.0, None) == 1.0  # one upload a second: as raw followers
    assert busy_floor(0.25, 1.0, 20.0, None) == 3.6  # one upload every 4 s
    assert busy_floor(10.0, 0.2, 20.0, None) == 1.0  # never below min_follow_interval_s
    assert busy_floor(10.0, 0.2, 20.0, None, min_s=0.5) == 0.5
    # Hysteresis: a small change in the rate keeps the floor (no restart) ...
    assert busy_floor(0.3, 1.0, 20.0, 3.2) == 3.2
    # ... more uploads per poll at the floor lower it, few at the budget's release it.
    assert busy_floor(1.0, 1.0, 20.0, 3.2) == 1.0
    assert busy_floor(0.01, 1.0, 20.0, 3.2) is None
    assert busy_floor(None, 1.0, 20.0, 3.2) == 3.2  # not measured: unchanged
    assert busy_floor(0.0, 1.0, 20.0, None) is None  # idle


def test_a_follower_applying_a_file_every_poll_is_listed_to_learn_the_rate() -> None:
    # Budget interval 20 s, sync 1 s: listed at T0 with newest TXID 9; the follower restored
    # past it and applies one file a poll (all a litestream follower can do), so only a listing
    # tells whether the DB uploads faster (then it is floored to the upload rate).
    target = RestoreTarget("a", "P0", Path("/db/a.db"), "follow", 20.0, 60.0, 60.0)
    base = CopyState(target, replica=LISTED, listed_at=T0, local_txid=11)
    assert not needs(base, 11, T0 + 30)  # 1.5 polls: too early to tell
    assert needs(base, 11, T0 + 40)  # 2 polls, 2 files: saturated
    assert not needs(base, 10, T0 + 40)  # 1 file in 2 polls: keeps up at its interval
    assert not needs(base, 9, T0 + 60)  # idle, caught up
    floored = CopyState(target, replica=LISTED, listed_at=T0, local_txid=11, floor_s=1.0)
    assert not needs(floored, 60, T0 + 50)  # at its floor one file a poll is the point
    measured = CopyState(
        target, replica=LISTED, listed_at=T0, local_txid=11, rate_listed_at=T0 - 10
    )
    assert not needs(measured, 11, T0 + 40)  # a listing measured the rate lately
    # An interval no floor could shorten (1 s at a 1 s sync interval): never.
    fast = RestoreTarget("a", "P0", Path("/db/a.db"), "follow", 1.0, 60.0, 60.0)
    assert not needs(CopyState(fast, replica=LISTED, listed_at=T0), 20, T0 + 10)


def test_a_follower_applying_the_fastest_upload_rate_is_verified_less_often() -> None:
    # Floored at 1 s with a 1 s sync interval: it polls as often as the primary can upload.
    # Since its progress mark 10 s ago it applied 9 files: it cannot be falling behind, so the
    # verification listing (one process, ~35 ms of CPU) waits up to 5 verify intervals.
    def busy(local_then: int, floor_s: float | None = 1.0) -> CopyState:
        return CopyState(
            copy().target,
            replica=LISTED,
            listed_at=T0,
            local_txid=local_then,
            floor_s=floor_s,
            rate_mark=(T0 + VERIFY - 10, local_then),
        )

    assert not needs(busy(100), 109, T0 + VERIFY)  # at full rate: the listing waits
    assert needs(busy(100), 109, T0 + 5 * VERIFY)  # ... but not for ever
    assert needs(busy(100), 101, T0 + VERIFY)  # slower than the primary could upload
    assert needs(busy(100), 100, T0 + VERIFY)  # stopped: idle, primary gone or stuck
    assert needs(busy(100, floor_s=None), 109, T0 + VERIFY)  # not floored: the budget's
    slow_floor = busy(100, floor_s=3.6)  # polls slower than one sync interval
    assert needs(slow_floor, 109, T0 + VERIFY)

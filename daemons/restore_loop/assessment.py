"""How fresh each standby copy is: what one check learns from the copy's TXID (its follower's
sidecar, the seed a previous run left, or the snapshot record), the replica's listing, and
``now``; when a snapshot copy is due for a restore; and whether any copy is usable at all.

Pure: plain data and ``now`` in, plain data out. This module must never read a file, list a
replica, start a process or read the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from daemons.restore_loop.policy import ReplicaView, RestartLog, StallWatch, diverged, lag_seconds
from daemons.restore_loop.state import RestoreTarget

__all__ = [
    "CopyState",
    "Freshness",
    "SnapshotAction",
    "SnapshotStep",
    "assess_copy",
    "copy_txid",
    "first_unusable_error",
    "needs_all_levels",
    "needs_listing",
    "progress_only",
    "snapshot_step",
    "usable",
]


@dataclass
class CopyState:
    """What the daemon knows about one standby copy, carried from check to check."""

    target: RestoreTarget
    watch: StallWatch = field(default_factory=StallWatch)
    restarts: RestartLog = field(default_factory=RestartLog)
    replica: ReplicaView | None = None  # the last successful listing
    replica_error: str = ""
    replica_missing: bool = False
    checked_at: float | None = None
    local_txid: int | None = None
    lag_s: float | None = None
    applied_at: float | None = None
    verified_fresh_at: float | None = None
    last_success_at: float | None = None
    last_snapshot_at: float | None = None
    last_error: str = ""
    failures: int = 0
    # TXID of the copy left by the previous run, until a new follower reports its own.
    seed_txid: int | None = None
    # The replica's newest TXID is behind the copy's (reset, recreated, new URL).
    diverged: bool = False
    # Why the copy may be torn (quick_check failed after a follower died); "" when fine.
    suspect: str = ""
    # When the replica was last listed (a check round may learn from the follower instead).
    listed_at: float | None = None
    # Replicated TXIDs a second (LTX files the primary uploads), between two listings or from
    # the follower's progress; None until measured. ``rate_mark``: (time, TXID) it counts from.
    writes_per_s: float | None = None
    rate_mark: tuple[float, int] | None = None
    list_mark: tuple[float, int] | None = None  # (time, replica TXID) of the listings' rate
    rate_listed_at: float | None = None  # when listings last measured the rate
    # A busy DB's follower polls at its upload rate (``policy.busy_floor``); None: the budget's.
    floor_s: float | None = None


def copy_txid(
    live: int | None, seed: int | None, copy_exists: bool
) -> tuple[int | None, int | None]:
    """A follow-mode copy's TXID and the seed to keep: the live follower's sidecar once it has
    one (the seed is then dropped for good), else the previous run's TXID while its copy is
    still there."""
    if live is not None:
        return live, None
    return (seed if copy_exists else None), seed


def needs_all_levels(level0: ReplicaView, local_txid: int | None) -> bool:
    """Level 0 no longer holds the oldest change the copy lacks (compacted away): only a listing
    of every level dates it."""
    if not level0.files or local_txid is None:
        return False
    return local_txid + 1 < min(f.min_txid for f in level0.files)


def needs_listing(
    copy: CopyState, *, following: bool, local_txid: int | None, now: float, verify_s: float
) -> bool:
    """Whether this check round must list the replica (one ``litestream ltx``) or can learn
    from the follower's own progress. Listed: a copy that is not simply following (snapshot
    mode, restoring, failing), one never listed, one behind at the last listing that did not
    advance since (stuck?) or was listed a follow interval ago (falling behind?), and every copy
    once per ``verify_s`` (a follower that applies the primary's fastest possible upload rate,
    ``at_full_rate``, once per ``VERIFY_FULL_RATE_FACTOR`` of those)."""
    if copy.target.mode != "follow" or not following:
        return True
    if copy.listed_at is None or copy.replica is None or copy.replica.missing:
        return True
    if now - copy.listed_at >= verify_s:
        return not at_full_rate(copy, local_txid, now) or (
            now - copy.listed_at >= VERIFY_FULL_RATE_FACTOR * verify_s
        )
    newest = copy.replica.newest_txid
    behind = newest is not None and (local_txid is None or local_txid < newest)
    # Behind: list again when it did not advance (stuck?) or once a follow interval (falling
    # behind? a follower applies one LTX file per poll).
    if behind:
        return local_txid == copy.local_txid or (
            now - copy.listed_at >= copy.target.follow_interval_s
        )
    return saturated(copy, local_txid, now, verify_s)


VERIFY_FULL_RATE_FACTOR = 5


def at_full_rate(copy: CopyState, local_txid: int | None, now: float) -> bool:
    """A busy DB's follower that polls at least as often as the primary can upload (its floor
    is at most the sync interval: one level-0 file per sync interval at most) and has applied
    about that many files since its last progress mark: it cannot be falling behind, so its
    verification listing can wait (each is a ``litestream ltx`` process, ~35 ms of CPU). When
    it stops advancing (the DB went idle, the primary died, the follower stuck) it is listed
    as usual."""
    t, mark = copy.target, copy.rate_mark
    if copy.floor_s is None or copy.floor_s > t.sync_interval_s or local_txid is None:
        return False
    if mark is None or now - mark[0] < 1.0:
        return False
    return local_txid - mark[1] >= 0.8 * (now - mark[0]) / t.sync_interval_s


def saturated(copy: CopyState, local_txid: int | None, now: float, verify_s: float) -> bool:
    """Past the last listing but applying a file every poll at the budget's interval: one LTX
    file a poll is all a follower can do, so the DB may upload faster and only a listing tells
    its rate (then ``busy_floor``). Not for a floored follower (polling at the upload rate is
    what it is for), nor where no floor could apply (an interval under 1.2 sync intervals), and
    at most once per ``verify_s`` after a listing measured the rate."""
    view, t = copy.replica, copy.target
    if copy.floor_s is not None or t.follow_interval_s <= 1.2 * t.sync_interval_s:
        return False
    if view is None or copy.listed_at is None or local_txid is None:
        return False
    newest = view.newest_txid
    if newest is None or local_txid <= newest:
        return False
    if copy.rate_listed_at is not None and now - copy.rate_listed_at < verify_s:
        return False
    elapsed = now - copy.listed_at
    polls = elapsed / t.follow_interval_s
    return polls >= 2 and local_txid - newest >= polls


def progress_only(copy: CopyState, local_txid: int | None, now: float) -> Freshness:
    """A check without a listing: the copy against the last listing. Caught up with it (or
    past it) counts as fresh; changes it held that the copy still lacks keep their age."""
    view = copy.replica
    assert view is not None
    newest = view.newest_txid
    verified, success = copy.verified_fresh_at, copy.last_success_at
    if local_txid is not None and newest is not None and local_txid >= newest:
        lag = 0.0
        verified = success = now
    else:
        lag = lag_seconds(local_txid, view, now)
        if local_txid is not None and copy.local_txid is not None and local_txid > copy.local_txid:
            success = now
    applied = view.applied_at(local_txid) if local_txid is not None else None
    return Freshness(copy.diverged, lag, applied or copy.applied_at, verified, success, False)


@dataclass(frozen=True)
class Freshness:
    """What one check concludes about a copy."""

    diverged: bool
    lag_s: float
    applied_at: float | None
    verified_fresh_at: float | None
    last_success_at: float | None
    # The copy was compared with a usable listing: the replica's TXID is known and the stall
    # watch sees this check.
    compared: bool


def assess_copy(
    *,
    local_txid: int | None,
    previous_txid: int | None,
    replica: ReplicaView | None,
    reset: bool,
    applied_at: float | None,
    verified_fresh_at: float | None,
    last_success_at: float | None,
    opened_at: float,
    now: float,
) -> Freshness:
    """Lag and divergence of a copy holding ``local_txid`` (``previous_txid`` at the last
    check) against ``replica`` (None: the listing failed). ``reset``: a snapshot copy found
    ahead of its replica was just restored fresh, which is still a divergence.

    Lag is the age of the oldest change the copy lacks. A diverged copy is not "caught up": it
    follows nothing the replica holds, so its lag is the time since it was last verified fresh
    (since the daemon opened if never), as it is when the replica could not be listed."""
    usable_listing = replica is not None and not replica.missing
    is_diverged = reset or (
        usable_listing and replica is not None and diverged(local_txid, replica.newest_txid)
    )
    unverified_s = max(
        0.0, now - (verified_fresh_at if verified_fresh_at is not None else opened_at)
    )
    if replica is None or replica.missing:
        return Freshness(
            is_diverged, unverified_s, applied_at, verified_fresh_at, last_success_at, False
        )
    if is_diverged and not reset:
        return Freshness(True, unverified_s, None, verified_fresh_at, last_success_at, True)
    if local_txid is None:
        # Nothing restored yet: everything the replica holds is at risk.
        lag = max(0.0, now - (replica.oldest_unapplied_at(None) or now))
    else:
        lag = lag_seconds(local_txid, replica, now)
    if local_txid is not None and lag == 0.0:
        verified_fresh_at = last_success_at = now
    elif local_txid is not None and previous_txid is not None and local_txid > previous_txid:
        last_success_at = now
    return Freshness(
        is_diverged, lag, replica.applied_at(local_txid), verified_fresh_at, last_success_at, True
    )


class SnapshotAction(enum.Enum):
    UP_TO_DATE = "up_to_date"  # the copy holds the replica's newest TXID
    WAIT = "wait"  # restored less than snapshot_interval_s ago
    RESTORE = "restore"


@dataclass(frozen=True)
class SnapshotStep:
    action: SnapshotAction
    # The copy's record is ahead of the replica (reset or recreated): forget the record, so the
    # restore may replace the copy (``should_replace`` refuses "older"), and restore now.
    reset: bool


def snapshot_step(
    current_txid: int | None,
    replica_txid: int | None,
    last_snapshot_at: float | None,
    interval_s: float,
    now: float,
) -> SnapshotStep:
    """What a snapshot-mode copy needs, from its recorded TXID and its replica's newest."""
    reset = diverged(current_txid, replica_txid)
    if reset:
        return SnapshotStep(SnapshotAction.RESTORE, reset=True)
    if current_txid is not None and replica_txid is not None and current_txid >= replica_txid:
        return SnapshotStep(SnapshotAction.UP_TO_DATE, reset=False)
    if last_snapshot_at is not None and now - last_snapshot_at < interval_s:
        return SnapshotStep(SnapshotAction.WAIT, reset=False)
    return SnapshotStep(SnapshotAction.RESTORE, reset=False)


def usable(copy: CopyState) -> bool:
    """The copy holds a TXID and neither its follower nor its replica reports an error."""
    return not copy.last_error and not copy.replica_error and copy.local_txid is not None


def first_unusable_error(copies: Iterable[CopyState]) -> str | None:
    """None when some copy is usable (or there are none); else why none is, naming the first
    error found."""
    items = list(copies)
    if not items or any(usable(c) for c in items):
        return None
    first = next(
        (c.last_error or c.replica_error for c in items if c.last_error or c.replica_error), "?"
    )
    return f"no standby copy is usable: {len(items)} DB(s) all failing; first error: {first}"

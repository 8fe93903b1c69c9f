"""restore-loop decisions as pure functions of plain data and ``now``: replica listings, lag,
stall detection and snapshot replacement (the blob request cost is in ``cost``; a copy's overall
assessment is in ``assessment``, its incidents in ``incidents``).

No I/O, no clock reads, no randomness: callers pass ``now`` (unix seconds). This module must never
start a process or touch a file.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "CheckRound",
    "CheckSchedule",
    "LtxFile",
    "ReplicaView",
    "RestartLog",
    "StallWatch",
    "busy_floor",
    "diverged",
    "format_age",
    "lag_seconds",
    "level0_upload_rate",
    "parse_ltx_json",
    "parse_txid",
    "should_replace",
    "stall_threshold_s",
]

DAY_S = 86400.0


def parse_txid(text: str) -> int:
    """A litestream TXID (16 hex digits) as an int; ValueError if it is not one."""
    value = text.strip()
    if not value or len(value) > 16:
        raise ValueError(f"not a TXID: {text!r}")
    return int(value, 16)


def _parse_time(text: str) -> float:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class LtxFile:
    level: int
    min_txid: int
    max_txid: int
    size: int
    timestamp: float  # when the newest transaction in the file was written on the primary


def parse_ltx_json(text: str) -> list[LtxFile]:
    """``litestream ltx -json`` output -> LtxFile list; ValueError on anything else."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"ltx output is not JSON: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError("ltx output is not a JSON list")
    files = []
    for item in data:
        if not isinstance(item, dict):
            raise ValueError("ltx entry is not an object")
        try:
            files.append(
                LtxFile(
                    level=int(item.get("level", 0)),
                    min_txid=parse_txid(str(item["min_txid"])),
                    max_txid=parse_txid(str(item["max_txid"])),
                    size=int(item.get("size", 0)),
                    timestamp=_parse_time(str(item["timestamp"])),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad ltx entry {item!r}: {exc}") from None
    return files


@dataclass(frozen=True)
class ReplicaView:
    """What one listing of a replica says."""

    files: tuple[LtxFile, ...]

    @property
    def missing(self) -> bool:
        return not self.files

    @property
    def newest_txid(self) -> int | None:
        return max((f.max_txid for f in self.files), default=None)

    @property
    def newest_at(self) -> float | None:
        newest = self.newest_txid
        return max((f.timestamp for f in self.files if f.max_txid == newest), default=None)

    def applied_at(self, local_txid: int | None) -> float | None:
        """When the newest change the local copy holds was written on the primary."""
        if local_txid is None:
            return None
        return max((f.timestamp for f in self.files if f.max_txid <= local_txid), default=None)

    def oldest_unapplied_at(self, local_txid: int | None) -> float | None:
        """When the oldest change the local copy lacks was written (None: nothing missing)."""
        pending = [f.timestamp for f in self.files if local_txid is None or f.max_txid > local_txid]
        return min(pending, default=None)


def diverged(local_txid: int | None, replica_txid: int | None) -> bool:
    """The replica's newest TXID is behind the local copy's: the replica was reset or recreated,
    its URL changed, or the DB was recreated on the primary. The copy no longer follows that
    replica, so it is neither "caught up" nor resumable: it must be restored fresh."""
    return local_txid is not None and replica_txid is not None and replica_txid < local_txid


def lag_seconds(local_txid: int | None, replica: ReplicaView, now: float) -> float:
    """Age of the oldest replica change not yet applied locally; 0 when caught up.

    The oldest, not the newest: a follower stuck at TXID N on a busy DB always has a fresh
    newest change pending, so only the oldest pending one shows how much data is at risk."""
    oldest = replica.oldest_unapplied_at(local_txid)
    return 0.0 if oldest is None else max(0.0, now - oldest)


def stall_threshold_s(stall_after_s: float, follow_interval_s: float) -> float:
    """A follower polls every follow_interval_s, so it is only 'stalled' well past that."""
    return max(stall_after_s, 3.0 * follow_interval_s)


@dataclass
class StallWatch:
    """Progress of one follower across checks."""

    local_txid: int | None = None
    local_changed_at: float | None = None
    behind_since: float | None = None

    def reset(self) -> None:
        self.local_txid = None
        self.local_changed_at = None
        self.behind_since = None

    def observe(
        self,
        local_txid: int | None,
        replica_txid: int | None,
        lag_s: float,
        now: float,
        threshold_s: float,
        behind_threshold_s: float | None = None,
    ) -> str | None:
        """Record one check; return why the follower must be restarted fresh, or None.

        ``stall``: the replica moved ahead and the local TXID has not advanced for threshold_s
        (upstream issue #1515, or a reader's long transaction blocking it). ``falling_behind``:
        it advances, but the oldest pending change is older than threshold_s (the abs follower
        that applies one LTX file per poll and never catches up). ``diverged``: the replica is
        behind the copy (see ``diverged()``)."""
        if diverged(local_txid, replica_txid):
            return "diverged"
        if local_txid != self.local_txid:
            self.local_txid = local_txid
            self.local_changed_at = now
        behind = replica_txid is not None and (local_txid is None or local_txid < replica_txid)
        if not behind:
            self.behind_since = None
            return None
        if self.behind_since is None:
            self.behind_since = now
        advanced = self.local_changed_at is not None and self.local_changed_at > self.behind_since
        last_progress = (
            self.local_changed_at if advanced and self.local_changed_at else (self.behind_since)
        )
        if now - last_progress >= threshold_s:
            return "stall"
        behind_limit = threshold_s if behind_threshold_s is None else behind_threshold_s
        if advanced and lag_s >= behind_limit:
            return "falling_behind"
        return None


@dataclass
class RestartLog:
    """Follower restarts with their reasons, for the 'restarted more than N times an hour'
    alert."""

    window_s: float = 3600.0
    events: deque[tuple[float, str]] = field(default_factory=deque)
    total: int = 0

    def add(self, now: float, reason: str) -> None:
        self.events.append((now, reason))
        self.total += 1
        self.prune(now)

    def prune(self, now: float) -> None:
        while self.events and now - self.events[0][0] > self.window_s:
            self.events.popleft()

    def recent(self, now: float) -> int:
        self.prune(now)
        return len(self.events)


@dataclass
class CheckRound:
    """One round of replica listings. When ``give_up_after`` listings in a row time out and none
    succeeded, the endpoint is down for all of them: the rest are skipped, so a round costs one
    batch of timeouts instead of one timeout per DB."""

    give_up_after: int
    timeouts: int = 0
    succeeded: bool = False

    def record(self, timed_out: bool) -> None:
        if timed_out:
            self.timeouts += 1
        else:
            self.succeeded = True
            self.timeouts = 0

    @property
    def unreachable(self) -> bool:
        return not self.succeeded and self.timeouts >= self.give_up_after


@dataclass
class CheckSchedule:
    """When check rounds run: at once the first time, then every ``interval_s`` (on a
    monotonic clock), measured from the start of the previous round."""

    interval_s: float
    last: float | None = None

    def due(self, now: float) -> bool:
        """Whether a round is due at ``now``; if so it counts as started."""
        if self.last is not None and now - self.last < self.interval_s:
            return False
        self.last = now
        return True


def should_replace(new_txid: int | None, current_txid: int | None) -> bool:
    """A fresh restore replaces the standby copy only if it is not older than what is there."""
    if new_txid is None:
        return False
    return current_txid is None or new_txid >= current_txid


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 2 * DAY_S:
        return f"{s / 3600:.1f}h"
    return f"{s / DAY_S:.1f}d"


def level0_upload_rate(
    view: ReplicaView, now: float, *, window_s: float = 30.0, quiet_after_s: float = 10.0
) -> float | None:
    """A DB's upload rate (level-0 LTX files a second) from one listing, so a follower can
    start at its busy floor instead of being restarted once two listings measured it: the
    level-0 files of the last ``window_s`` before the newest one (the primary's own
    timestamps, compared with each other), when the newest is at most ``quiet_after_s`` old
    (an older one: the DB is not being written now, 0). None when the listing cannot tell
    (fewer than 3 such files, or they span under 5 s)."""
    level0 = sorted(f.timestamp for f in view.files if f.level == 0)
    if not level0:
        return None
    newest = level0[-1]
    if now - newest > quiet_after_s:
        return 0.0
    recent = [t for t in level0 if t >= newest - window_s]
    span = newest - recent[0]
    if len(recent) < 3 or span < 5.0:
        return None
    return (len(recent) - 1) / span


FLOOR_MARGIN = 0.9  # poll a little faster than the uploads, so jitter does not leave it behind


def busy_floor(
    writes_per_s: float | None,
    sync_interval_s: float,
    interval_s: float,
    current: float | None,
    min_s: float = 1.0,
) -> float | None:
    """The poll interval a busy DB's follower needs to keep up, or None (the budget's
    ``interval_s``); never below ``min_s`` (``min_follow_interval_s``: a DB uploading faster
    than that falls behind and is caught up by a fresh restore, ``falling_behind``, which
    costs fewer requests than polling it faster than raw followers do).

    litestream 0.5.17's abs follower applies one LTX file per poll, so a DB that uploads more
    often than its follower polls falls behind. Floored: poll a little faster than the uploads
    (a poll that finds a file is 1 LIST). Hysteresis: a floor is set or lowered when more than
    1.2 uploads would wait per poll at the interval in use, released when fewer than 0.5 would
    at the budget's, and otherwise kept (no restart for a small change in the rate)."""
    if writes_per_s is None:
        return current
    uploads_per_s = min(writes_per_s, 1.0 / max(sync_interval_s, 1e-3))
    if uploads_per_s * interval_s < 0.5:
        return None
    in_use = interval_s if current is None else min(current, interval_s)
    if uploads_per_s * in_use > 1.2:
        return max(min_s, math.floor(10.0 * FLOOR_MARGIN / uploads_per_s) / 10)
    return current

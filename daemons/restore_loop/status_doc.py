"""The status document restore-loop writes each cycle (``<state>/restore-loop/status.json``),
which `fleet restore status`, `fleet restore promote` and the next run read: one row per copy,
the open incidents, plan problems and the fence acknowledgement. Also what the next run takes
back from it (the copies' TXIDs, open incidents, followers that may have outlived it).

Pure: plain data and ``now`` in, JSON-ready dicts out. This module must never read or write the
file itself (``state.StatePaths`` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons.restore_loop.assessment import CopyState

__all__ = [
    "FollowerView",
    "LeftoverFollower",
    "database_row",
    "leftover_followers",
    "previous_incidents",
    "previous_txids",
    "status_document",
    "worth_writing",
]


@dataclass(frozen=True)
class FollowerView:
    """A copy's state word ('snapshot', 'idle' or its follower's state) and its follower child,
    as the status shows them."""

    state: str
    pid: int | None = None
    output: Path | None = None
    sidecar: Path | None = None
    interval_s: float | None = None  # the running child's poll interval


def database_row(
    copy: CopyState,
    follower: FollowerView,
    *,
    promoted: bool,
    snapshot_txid_file: Path | None,
    now: float,
) -> dict[str, Any]:
    """One copy's row (restarts older than an hour are pruned from ``copy``)."""
    target = copy.target
    return {
        "db": target.name,
        "tier": target.tier,
        "mode": target.mode,
        "path": str(target.path),
        "state": "promoted" if promoted else follower.state,
        "local_txid": copy.local_txid,
        "replica_txid": copy.replica.newest_txid if copy.replica else None,
        "replica_newest_at": copy.replica.newest_at if copy.replica else None,
        "applied_at": copy.applied_at,
        "lag_s": None if copy.lag_s is None else round(copy.lag_s, 3),
        "stale_threshold_s": target.stale_threshold_s,
        "rpo_target_s": target.rpo_target_s,
        "follow_interval_s": target.follow_interval_s,
        "poll_interval_s": follower.interval_s,
        "listed_at": copy.listed_at,
        "writes_per_s": None if copy.writes_per_s is None else round(copy.writes_per_s, 3),
        "last_success_at": copy.last_success_at,
        "verified_fresh_at": copy.verified_fresh_at,
        "checked_at": copy.checked_at,
        "restarts_1h": copy.restarts.recent(now),
        "restarts_total": copy.restarts.total,
        "failures": copy.failures,
        "follower_pid": follower.pid,
        "follower_output": str(follower.output) if follower.output else None,
        "sidecar": str(follower.sidecar) if follower.sidecar else None,
        "snapshot_txid_file": str(snapshot_txid_file) if snapshot_txid_file else None,
        "replica_missing": copy.replica_missing,
        "diverged": copy.diverged,
        "suspect": copy.suspect,
        "last_error": copy.last_error or copy.replica_error,
    }


def status_document(
    *,
    host: str,
    pid: int,
    now: float,
    promoted: bool,
    fence_ack: str | None,
    incidents: list[dict[str, Any]],
    problems: Iterable[tuple[str, str]],
    plan_error: str,
    rows: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The whole document; ``rows`` are ordered by tier, then DB name."""
    return {
        "host": host,
        "pid": pid,
        "updated_at": now,
        "promoted": promoted,
        "fence_ack": fence_ack,
        "incidents": incidents,
        "problems": [list(p) for p in problems],
        "plan_error": plan_error,
        "databases": sorted(rows, key=lambda r: (r["tier"], r["db"])),
    }


def previous_txids(status: dict[str, Any]) -> dict[str, int]:
    """The TXIDs the follow-mode copies held when the previous run last wrote its status."""
    out: dict[str, int] = {}
    for row in status.get("databases") or []:
        if isinstance(row.get("local_txid"), int) and row.get("mode") == "follow":
            out[str(row.get("db"))] = int(row["local_txid"])
    return out


def previous_incidents(status: dict[str, Any]) -> list[dict[str, Any]]:
    return list(status.get("incidents") or [])


@dataclass(frozen=True)
class LeftoverFollower:
    pid: int
    output: str  # its restore output path: only a process naming it is ours
    db: Any


def leftover_followers(status: dict[str, Any], own_pid: int) -> list[LeftoverFollower]:
    """The followers the previous run recorded (a SIGKILLed daemon outside a service manager
    leaves them running); whether each still lives is for the caller to check."""
    out = []
    for row in status.get("databases") or []:
        pid, output = row.get("follower_pid"), row.get("follower_output")
        if not isinstance(pid, int) or not isinstance(output, str) or pid == own_pid:
            continue
        out.append(LeftoverFollower(pid, output, row.get("db")))
    return out


def worth_writing(
    previous: dict[str, Any] | None, doc: dict[str, Any], *, written_at: float, every_s: float
) -> bool:
    """Whether ``doc`` must be written: something in it changed since ``previous`` (the last
    one written: a follower's pid, a fence acknowledgement, a check's figures), or
    ``every_s`` passed since then (``updated_at`` says the daemon is alive). Between checks
    nothing changes, and a write is an fsync'd file every tick."""
    if previous is None or doc["updated_at"] - written_at >= every_s:
        return True
    return {k: v for k, v in previous.items() if k != "updated_at"} != {
        k: v for k, v in doc.items() if k != "updated_at"
    }

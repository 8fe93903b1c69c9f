"""restore-loop's #ops incidents: which ones each standby copy has open (stale, restarting too
often, diverged, suspect, replica missing), with their text, and the book that turns those
observations into one alert when an incident opens and one recovery message when it closes.

Pure: plain data and ``now`` in, messages out; sending them is the daemon's job. This module
must never read a file, send a message or read the clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemons.restore_loop.assessment import CopyState
from daemons.restore_loop.policy import format_age
from shared.notify import Message
from shared.notify.escape import slack_text

__all__ = [
    "TITLES",
    "AlertBook",
    "CopyFacts",
    "Incident",
    "Observation",
    "copy_facts",
    "observations",
]

TITLES = {
    "stale": "standby copy stale",
    "restarts": "follower keeps restarting",
    "replica_missing": "replica missing",
    "diverged": "replica behind the standby copy (reset, recreated or a new URL)",
    "suspect": "standby copy suspect (quick_check failed after a follower died)",
    "follower_crashed": "follower supervisor crashed",
}


@dataclass(frozen=True)
class CopyFacts:
    """What the incidents of one copy are decided from (its state after a check round)."""

    db: str
    tier: str
    stale_threshold_s: float
    lag_s: float | None
    local_txid: int | None
    replica_txid: int | None
    replica_error: str
    follower_state: str
    restarts_last_hour: int
    restart_reasons: Sequence[str]  # of the restarts in the last hour, sorted
    max_restarts_per_hour: int
    diverged: bool
    suspect: str
    replica_missing: bool


def copy_facts(
    copy: CopyState, follower_state: str, max_restarts_per_hour: int, now: float
) -> CopyFacts:
    """The facts of ``copy`` after a check round (restarts older than an hour are pruned)."""
    recent = copy.restarts.recent(now)
    return CopyFacts(
        db=copy.target.name,
        tier=copy.target.tier,
        stale_threshold_s=copy.target.stale_threshold_s,
        lag_s=copy.lag_s,
        local_txid=copy.local_txid,
        replica_txid=copy.replica.newest_txid if copy.replica else None,
        replica_error=copy.replica_error,
        follower_state=follower_state,
        restarts_last_hour=recent,
        restart_reasons=sorted({r for _, r in copy.restarts.events}),
        max_restarts_per_hour=max_restarts_per_hour,
        diverged=copy.diverged,
        suspect=copy.suspect,
        replica_missing=copy.replica_missing,
    )


@dataclass(frozen=True)
class Observation:
    """Whether incident ``kind`` is active for the copy now, and the text it opens or closes
    with. ``confirm``: how many active observations in a row open it."""

    kind: str
    active: bool
    detail: str
    confirm: int = 1


def observations(f: CopyFacts) -> list[Observation]:
    """The five incidents of one copy, in the order they are recorded."""
    stale = f.lag_s is not None and f.lag_s > f.stale_threshold_s
    cause = (
        f"replica unreachable ({f.replica_error[:160]})"
        if f.replica_error
        else f"local TXID {f.local_txid}, replica TXID {f.replica_txid}, "
        f"follower {f.follower_state}"
    )
    too_many = f.restarts_last_hour > f.max_restarts_per_hour
    restarts = f"{f.restarts_last_hour} restarts in the last hour"
    return [
        Observation(
            "stale",
            stale,
            f"lag {format_age(f.lag_s)} > {format_age(f.stale_threshold_s)} ({f.tier}); {cause}"
            if stale
            else f"lag {format_age(f.lag_s)}",
        ),
        Observation(
            "restarts",
            too_many,
            f"{restarts} ({', '.join(f.restart_reasons)})" if too_many else restarts,
        ),
        Observation(
            "diverged",
            f.diverged,
            f"replica TXID {f.replica_txid} < local TXID {f.local_txid}; restoring fresh"
            if f.diverged
            else "copy restored fresh from the replica",
        ),
        Observation(
            "suspect",
            bool(f.suspect),
            f.suspect[:300] if f.suspect else "copy replaced by a fresh restore",
        ),
        Observation(
            "replica_missing",
            f.replica_missing,
            "litestream lists no LTX files for it: is the primary replicating it?"
            if f.replica_missing
            else "replica present again",
            confirm=2,
        ),
    ]


@dataclass
class Incident:
    kind: str
    db: str
    opened_at: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "db": self.db,
            "opened_at": self.opened_at,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Incident:
        return cls(
            kind=str(data["kind"]),
            db=str(data["db"]),
            opened_at=float(data["opened_at"]),
            detail=str(data.get("detail", "")),
        )


@dataclass
class AlertBook:
    """Open incidents per (kind, db): one #ops alert when an incident opens, one recovery
    message when it closes; nothing in between. Dedup keys name the incident's start, so a
    daemon restart that reloads the book never alerts twice for the same incident."""

    host: str
    channel: str
    open: dict[tuple[str, str], Incident] = field(default_factory=dict)
    seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def update(
        self, kind: str, db: str, active: bool, now: float, detail: str, *, confirm: int = 1
    ) -> Message | None:
        """Record one observation. An incident opens once ``active`` was seen ``confirm`` times
        in a row (a replica that is missing for one listing may just be new)."""
        key = (kind, db)
        incident = self.open.get(key)
        self.seen[key] = self.seen.get(key, 0) + 1 if active else 0
        if active and incident is None and self.seen[key] >= confirm:
            incident = Incident(kind, db, now, detail)
            self.open[key] = incident
            return Message(
                channel=self.channel,
                text=f"[restore-loop@{self.host}] {slack_text(db, 80)}: {TITLES.get(kind, kind)}: "
                f"{slack_text(detail, 400)}",
                dedup_key=f"restore-{kind}:{self.host}:{db}:{int(incident.opened_at)}",
                kind="alert",
                daemon="restore-loop",
            )
        if not active and incident is not None:
            del self.open[key]
            lasted = format_age(now - incident.opened_at)
            return Message(
                channel=self.channel,
                text=(
                    f"[restore-loop@{self.host}] {slack_text(db, 80)}: recovered from "
                    f"{TITLES.get(kind, kind)} after {lasted}"
                    + (f": {slack_text(detail, 400)}" if detail else "")
                ),
                dedup_key=f"restore-{kind}:{self.host}:{db}:{int(incident.opened_at)}:recovered",
                kind="alert",
                daemon="restore-loop",
            )
        return None

    def observe(self, facts: CopyFacts, now: float) -> Iterator[Message]:
        """Record the observations of one copy, one at a time (lazily, so the caller sends
        each message before the next observation is recorded), yielding what they produce."""
        for o in observations(facts):
            message = self.update(o.kind, facts.db, o.active, now, o.detail, confirm=o.confirm)
            if message is not None:
                yield message

    def to_json(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self.open.values()]

    def load(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            try:
                incident = Incident.from_json(item)
            except (KeyError, TypeError, ValueError):
                continue
            self.open[(incident.kind, incident.db)] = incident

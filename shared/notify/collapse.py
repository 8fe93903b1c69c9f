"""The collapse plan: which pending alerts fold into which per-channel summary, and what the
summary says. A pure function of plain data (the pending alerts, the summaries still waiting to
go out, ``now`` and two settings); the outbox gathers the rows and applies the plan in one
transaction.

The rules, per (sink, channel), first match wins:

1. a summary for the channel is still waiting (Slack down, rate limited): it absorbs every
   pending alert, so an outage ends with one summary per channel, not one per burst plus
   stragglers; the new summary keeps the earlier one's attempts and backoff;
2. more than ``burst`` pending alerts: they all go out as one summary;
3. two or more alerts held during a silence: they go out as one summary (a lone held alert
   is released and goes out as itself);
4. two or more alerts older than ``stale_alert_s``: the stale ones go out as one summary
   (current news is not folded into the backlog).

Only alerts are collapsed: pushes never reach the plan. Nothing here may read a clock, touch a
database or do any other I/O.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.notify.message import OutboxRow

__all__ = [
    "ARRIVED_AT_ONCE",
    "DELAYED_BY_OUTAGE",
    "HELD_DURING_SILENCE",
    "CollapsePlan",
    "PendingAlert",
    "PlannedSummary",
    "WaitingSummary",
    "plan_collapse",
    "summary_text",
]

DELAYED_BY_OUTAGE = "delayed by an outage"
ARRIVED_AT_ONCE = "arrived at once"
HELD_DURING_SILENCE = "held during a silence"

Channel = tuple[str, str]  # (sink, channel)


@dataclass(frozen=True)
class PendingAlert:
    """A pending alert row; ``held``: held back by a silence."""

    row: OutboxRow
    held: bool = False


@dataclass(frozen=True)
class WaitingSummary:
    """A summary row not yet delivered, with the alerts it already stands for."""

    id: int
    sink: str
    channel: str
    attempts: int
    next_attempt_at: float
    alerts: tuple[OutboxRow, ...] = ()


@dataclass(frozen=True)
class PlannedSummary:
    """One summary row to insert, and what it replaces.

    ``collapses``: pending alerts it folds in now; ``regroups``: alerts already folded into an
    absorbed summary, which now point at this one; ``absorbs``: waiting summaries it replaces.
    """

    sink: str
    channel: str
    dedup_key: str
    text: str
    why: str
    created_at: float
    attempts: int
    next_attempt_at: float
    collapses: tuple[int, ...]
    regroups: tuple[int, ...] = ()
    absorbs: tuple[int, ...] = ()

    @property
    def alert_ids(self) -> tuple[int, ...]:
        """Every alert this summary stands for, oldest first."""
        return tuple(sorted((*self.collapses, *self.regroups)))


@dataclass(frozen=True)
class CollapsePlan:
    """``summaries`` in the order to insert them; ``release``: held alerts to un-hold (each
    was alone in its channel, so it goes out as itself)."""

    summaries: tuple[PlannedSummary, ...] = ()
    release: tuple[int, ...] = ()


def plan_collapse(
    alerts: Iterable[PendingAlert],
    waiting: Iterable[WaitingSummary],
    now: float,
    *,
    stale_alert_s: float,
    burst: int,
) -> CollapsePlan:
    """Decide the summaries for ``alerts`` (pending, kind ``alert``) given the ``waiting``
    summaries, at ``now``. Channels are planned in the order of their oldest pending alert."""
    groups: dict[Channel, list[PendingAlert]] = {}
    for alert in sorted(alerts, key=lambda a: a.row.id):
        groups.setdefault((alert.row.sink, alert.row.channel), []).append(alert)
    earlier: dict[Channel, list[WaitingSummary]] = {}
    for summary in sorted(waiting, key=lambda s: s.id):
        earlier.setdefault((summary.sink, summary.channel), []).append(summary)

    summaries: list[PlannedSummary] = []
    release: list[int] = []
    for (sink, channel), members in groups.items():
        planned = _plan_channel(
            sink,
            channel,
            members,
            earlier.get((sink, channel), []),
            now,
            stale_alert_s=stale_alert_s,
            burst=burst,
        )
        if planned is not None:
            summaries.append(planned)
        else:
            release.extend(a.row.id for a in members if a.held)
    return CollapsePlan(tuple(summaries), tuple(release))


def _plan_channel(
    sink: str,
    channel: str,
    members: Sequence[PendingAlert],
    earlier: Sequence[WaitingSummary],
    now: float,
    *,
    stale_alert_s: float,
    burst: int,
) -> PlannedSummary | None:
    rows = [a.row for a in members]
    held = [a.row for a in members if a.held]
    stale = [row for row in rows if row.created_at < now - stale_alert_s]
    attempts, next_attempt_at = 0, 0.0
    regrouped: list[OutboxRow] = []
    if earlier:
        regrouped = [row for summary in earlier for row in summary.alerts]
        fold, why = sorted([*regrouped, *rows], key=lambda row: row.id), DELAYED_BY_OUTAGE
        attempts = max(s.attempts for s in earlier)
        next_attempt_at = max(s.next_attempt_at for s in earlier)
    elif len(rows) > burst:
        fold, why = rows, ARRIVED_AT_ONCE
    elif len(held) >= 2:
        fold, why = held, HELD_DURING_SILENCE
    elif len(stale) >= 2:
        fold, why = stale, DELAYED_BY_OUTAGE
    else:
        return None
    ids = [row.id for row in fold]
    absorbs = tuple(s.id for s in earlier)
    # Each earlier summary is absorbed once, so its id keeps the key unique.
    key = f"summary:{sink}:{channel}:{ids[0]}-{ids[-1]}:{len(ids)}"
    if absorbs:
        key += f":after{absorbs[-1]}"
    regroup_ids = {row.id for row in regrouped}
    return PlannedSummary(
        sink=sink,
        channel=channel,
        dedup_key=key,
        text=summary_text(fold, why),
        why=why,
        created_at=now,
        attempts=attempts,
        next_attempt_at=next_attempt_at,
        collapses=tuple(i for i in ids if i not in regroup_ids),
        regroups=tuple(sorted(regroup_ids)),
        absorbs=absorbs,
    )


def summary_text(rows: Sequence[OutboxRow], why: str, max_lines: int = 10) -> str:
    """One message standing for many alerts: count, span (UTC), and the first few lines."""
    first = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(min(r.created_at for r in rows)))
    last = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(max(r.created_at for r in rows)))
    lines = [f"[summary] {len(rows)} alerts {why} ({first} .. {last}):"]
    for row in rows[:max_lines]:
        text = row.text.splitlines()[0] if row.text else ""
        lines.append(f"• {text[:200]}")
    if len(rows) > max_lines:
        lines.append(f"…and {len(rows) - max_lines} more")
    return "\n".join(lines)

"""The nightly scan's schedule: how long the gap between two runs of a crontab can be, which is
the interval ``fleet status`` and /health expect between successful scans. Pure (APScheduler's
trigger arithmetic over a fixed start date); imported by the manifest, so it stays cheap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["schedule_period_s"]


def schedule_period_s(expression: str, *, samples: int = 64) -> float:
    """The longest gap between consecutive fire times of ``expression`` (UTC) over the next
    ``samples`` runs: "0 2 * * *" -> 86400. Raises ValueError for a bad expression."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(expression, timezone=UTC)
    start = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: the period must not depend on today
    previous = trigger.get_next_fire_time(None, start)
    if previous is None:
        raise ValueError(f"{expression!r} never fires")
    longest = 0.0
    for _ in range(samples):
        following = trigger.get_next_fire_time(previous, previous + timedelta(seconds=1))
        if following is None:
            break
        longest = max(longest, (following - previous).total_seconds())
        previous = following
    return longest or 86400.0

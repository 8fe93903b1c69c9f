"""The daily #ceo digest: when it is due and what it says. Pure functions of data and now.

Due once per calendar day in the configured timezone, at or after ``digest_time``: a daemon
restarted at 08:05 still sends the 08:00 digest; one that already sent today never repeats.
Every field from the mail goes through ``slack_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time
from zoneinfo import ZoneInfo

from daemons.email_reactor.store import DigestRow
from shared.notify.escape import slack_text

__all__ = ["digest_due", "format_digest", "local_date"]


def local_date(now_utc: datetime, tz: str) -> str:
    return now_utc.astimezone(ZoneInfo(tz)).date().isoformat()


def digest_due(now_utc: datetime, tz: str, digest_time: str, last_sent_date: str | None) -> bool:
    local = now_utc.astimezone(ZoneInfo(tz))
    hh, mm = (int(x) for x in digest_time.split(":"))
    if local.time() < time(hh, mm):
        return False
    return last_sent_date != local.date().isoformat()


def format_digest(rows: Sequence[DigestRow], day: str, max_per_section: int = 25) -> str | None:
    """One Slack message in two sections; None when nothing is pending."""
    partners = [r for r in rows if r.partner_tier > 0]
    others = [r for r in rows if r.partner_tier == 0]
    if not rows:
        return None
    lines = [f"*Email digest {day}*: {len(rows)} unanswered"]
    for title, section in (
        ("Strategic Partner Emails", partners),
        ("High-Priority Emails", others),
    ):
        if not section:
            continue
        lines.append(f"\n*{title}* ({len(section)})")
        for r in section[:max_per_section]:
            tier = f"[TIER-{r.partner_tier}] " if r.partner_tier else ""
            lines.append(
                f"• {tier}#{r.id} {slack_text(r.from_name or r.from_domain, 60)} "
                f"({slack_text(r.from_domain, 80) or 'unknown domain'}) — "
                f"{slack_text(r.subject, 120)} (since {slack_text(r.created_at, 40)} UTC)"
            )
        if len(section) > max_per_section:
            lines.append(f"…and {len(section) - max_per_section} more")
    return "\n".join(lines)

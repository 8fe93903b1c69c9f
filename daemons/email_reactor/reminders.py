"""What the email-reactor tells people about mail nobody acts on: one #ceo message per stale
email (``stale_after_h``; the founding incident, a partner's mail that sat 72 h) and the daily
#ceo digest. Functions of the running reactor, kept apart so the daemon module stays small.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from daemons.email_reactor import poison
from daemons.email_reactor.digest import digest_due, format_digest, local_date
from daemons.email_reactor.pipeline import stale_text
from shared.files import atomic_write_json, complete_in_thread
from shared.notify import Message
from shared.timestamps import format_sql_ts

if TYPE_CHECKING:
    from daemons.email_reactor.daemon import EmailReactor

__all__ = ["alert_stale", "maybe_digest", "send_digest"]


def _sql_now(now: float) -> str:
    return format_sql_ts(datetime.fromtimestamp(now, UTC))


async def alert_stale(r: EmailReactor, now: float) -> None:
    """One #ceo message per email nobody acts on past ``stale_after_h`` (the founding
    incident: a partner's mail sat 72 h). Remembered in ``reactor_stale_alerts``; the
    outbox dedup key ``email-stale:<id>`` covers a crash between enqueue and mark."""
    assert r.store is not None
    cutoff = _sql_now(now - r.s.stale_after_h * 3600)
    read = await r.store.stale_emails(r._since(now), cutoff)
    await poison.set_aside(r, read.poison)
    stale = read.emails
    r.m_stale.set(len(stale))
    alerted = await r.store.stale_alerted([e.id for e in stale])
    budget = r.s.pushes_per_cycle
    for email in stale:
        if email.id in alerted:
            continue
        if budget <= 0:
            break  # the rest next cycle
        budget -= 1
        try:
            created = datetime.fromisoformat(email.created_at).replace(tzinfo=UTC)
            age_h = (now - created.timestamp()) / 3600
        except ValueError:
            age_h = r.s.stale_after_h
        await r.ctx.notify(
            Message(
                channel=r.ctx.config.slack.ceo_channel,
                text=stale_text(email, age_h),
                dedup_key=f"email-stale:{email.id}",
                kind="push",
                daemon=r.name,
            )
        )
        await r.store.mark_stale_alerted(email.id, _sql_now(r.ctx.clock()))
        r.m_stale_alerts.inc()
        r.log.warning("stale email sent to #ceo", email_id=email.id, age_h=round(age_h, 1))


def digest_state_of(r: EmailReactor) -> dict[str, Any]:
    """The digest state file (blocking: call through a worker thread)."""
    try:
        data = json.loads(r.digest_state_path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


async def maybe_digest(r: EmailReactor, now: float) -> None:
    now_dt = datetime.fromtimestamp(now, UTC)
    state = await asyncio.to_thread(digest_state_of, r)
    if digest_due(now_dt, r.s.timezone, r.s.digest_time, state.get("last_sent_date")):
        await send_digest(r, now, force=False, dry_run=False)


async def send_digest(r: EmailReactor, now: float, *, force: bool, dry_run: bool) -> str | None:
    """Build today's digest; enqueue it unless dry-run. Returns the text (None: nothing)."""
    assert r.store is not None
    now_dt = datetime.fromtimestamp(now, UTC)
    day = local_date(now_dt, r.s.timezone)
    state = await asyncio.to_thread(digest_state_of, r)
    if state.get("last_sent_date") == day and not force:
        return None
    cutoff = format_sql_ts(now_dt - timedelta(hours=r.s.digest_min_age_h))
    rows, unreadable = await r.store.digest_candidates(r._since(now), cutoff)
    await poison.set_aside(r, unreadable)
    text = format_digest(rows, day)
    if dry_run:
        return text
    if text is not None:
        suffix = f":{int(now)}" if force else ""
        await r.ctx.notify(
            Message(
                channel=r.ctx.config.slack.ceo_channel,
                text=text,
                dedup_key=f"digest:{day}{suffix}",
                kind="push",
                daemon=r.name,
            )
        )
    await complete_in_thread(
        atomic_write_json,
        r.digest_state_path,
        {"last_sent_date": day, "items": len(rows), "sent": text is not None},
    )
    r.log.info("digest done", day=day, items=len(rows), sent=text is not None)
    return text

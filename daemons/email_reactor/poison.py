"""Inbox rows the reactor cannot read or type (``rows.py``): set aside in
``reactor_poison_rows`` with their reason, logged by id and reason only (never content), one
#ops alert per kind of problem (the outbox dedup key is the kind, not the row), and released
when someone fixes them. Functions of the running reactor, kept apart so the daemon module
stays small. It must never hold up the rest of the inbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from daemons.email_reactor.pipeline import poison_text
from daemons.email_reactor.rows import PoisonRow
from shared.notify import Message
from shared.timestamps import format_sql_ts

if TYPE_CHECKING:
    from daemons.email_reactor.daemon import EmailReactor

__all__ = ["release_fixed", "set_aside"]


async def set_aside(r: EmailReactor, rows: Sequence[PoisonRow]) -> None:
    """Record ``rows`` (a --dry-run only logs them) and alert #ops once per new kind."""
    assert r.store is not None
    if not rows:
        return
    if r.ctx.dry_run:
        for row in rows:
            r.log.warning(
                "inbox row cannot be read; skipped", email_id=row.email_id, reason=row.reason
            )
        return
    now = format_sql_ts(datetime.fromtimestamp(r.ctx.clock(), UTC))
    new = await r.store.set_aside(rows, now)
    by_kind: dict[str, list[int]] = {}
    for row in new:
        r.log.warning(
            "inbox row cannot be read; set aside", email_id=row.email_id, reason=row.reason
        )
        by_kind.setdefault(row.kind, []).append(row.email_id)
    for kind, ids in by_kind.items():
        await r.ctx.notify(
            Message(
                channel=r.ctx.config.slack.ops_channel,
                text=poison_text(kind, ids),
                dedup_key=f"poison-row:{kind}",
                daemon=r.name,
            )
        )


async def release_fixed(r: EmailReactor) -> None:
    """Rows set aside that read cleanly now go back to triage."""
    assert r.store is not None
    released = await r.store.release_fixed()
    if released:
        r.log.info("inbox rows readable again; triaged as new mail", email_ids=released)

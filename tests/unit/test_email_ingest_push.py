"""email-reactor beside email-agent.js: a row the ingest path pushed itself (``reactor_pushed_at``
set, ``mc_task_id`` NULL) still gets exactly one Mission Control task and no second push; a row
that already has a task is relinked. Pure triage, plus the store's push gate on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from daemons.email_reactor.actions import EmailAction
from daemons.email_reactor.config import FREE_MAIL_DOMAINS, EmailReactorSection
from daemons.email_reactor.pipeline import TriageInputs, triage
from daemons.email_reactor.rules import Email, parse_partners
from daemons.email_reactor.store import InboxStore
from tests.email_fixtures import FOREIGN_SCHEMA

PARTNERS = parse_partners(
    {"senders": [{"email": "partner@example.com", "name": "Pia Partner", "tier": 1}]},
    FREE_MAIL_DOMAINS,
)
PUSHED_AT = "2026-11-23T10:00:05.000Z"  # the ingest path's ISO form


def inputs() -> TriageInputs:
    return TriageInputs(
        settings=EmailReactorSection(),
        partners=PARTNERS,
        own_recipients=frozenset(),
        correspondents=[],
        ceo_channel="#ceo",
    )


def mail(**kw: object) -> Email:
    base: dict[str, object] = dict(
        id=7,
        account="ceo@example.com",
        from_addr="partner@example.com",
        from_name="Pia Partner",
        to_addr="ceo@example.com",
        reply_to="",
        subject="SEO partnership",
        body_text="Shall we start Monday?",
        attachments=(),
        headers={},
        classification="ACTION",
        status="new",
        created_at="2026-11-23 10:00:00",
    )
    base.update(kw)
    return Email(**base)  # type: ignore[arg-type]


def test_ingest_pushed_partner_row_gets_a_task_but_no_second_push() -> None:
    """Why-bullet: the row was taken as handled (relinked_via_dedup) and no task was made."""
    result = triage(mail(reactor_pushed_at=PUSHED_AT, partner_tier=1), inputs())
    d = result.decision
    assert d is not None
    assert d.action is EmailAction.LINKED and d.reason == "strategic_partner"
    assert d.creates_task and d.priority == "critical" and d.partner_tier == 1
    assert d.push_text is None and d.push_channel is None
    assert any("pushed by the ingest path" in step for step in result.trace)


def test_ingest_pushed_row_of_no_known_sender_still_gets_a_task() -> None:
    """The ingest pushed it (its own partner list may differ): a task, no LLM, no push."""
    d = triage(
        mail(from_addr="who@unknown.example.net", from_name="Who", reactor_pushed_at=PUSHED_AT),
        inputs(),
    )
    assert d.decision is not None
    assert (d.decision.action, d.decision.reason, d.decision.source) == (
        EmailAction.LINKED,
        "ingest_pushed",
        "ingest",
    )
    assert d.decision.creates_task and d.decision.push_text is None
    assert d.trace[-1].startswith("not a task by our rules, but pushed")


def test_ingest_pushed_phishing_is_still_quarantined() -> None:
    spoof = mail(reply_to="attacker@evil.example.net", reactor_pushed_at=PUSHED_AT)
    d = triage(spoof, inputs()).decision
    assert d is not None and d.action is EmailAction.SECURITY_QUARANTINE and not d.creates_task


def test_row_with_a_task_is_relinked_without_push() -> None:
    d = triage(mail(mc_task_id=4242, reactor_pushed_at=PUSHED_AT), inputs()).decision
    assert d is not None and d.action is EmailAction.RELINKED_VIA_DEDUP
    assert not d.creates_task and d.push_text is None


def test_unpushed_partner_row_is_pushed() -> None:
    d = triage(mail(), inputs()).decision
    assert d is not None and d.creates_task and d.push_text


def test_ingest_push_after_the_read_cancels_our_push(tmp_path: Path) -> None:
    """The ingest may push between our read and our commit: the decision then owes no push,
    and a push held back by pushes_per_cycle is not sent later either."""
    db = tmp_path / "email-inbox.db"
    with sqlite3.connect(db) as conn:
        conn.execute(FOREIGN_SCHEMA)
        for _ in range(2):
            conn.execute(
                "INSERT INTO emails(account, from_addr, from_name, subject, body_text,"
                " classification, status, created_at) VALUES ('ceo@example.com',"
                " 'partner@example.com', 'Pia Partner', 'Hi', 'Body', 'ACTION', 'new',"
                " '2026-11-23 10:00:00')"
            )
    conn.close()

    async def run() -> None:
        store = await InboxStore(db).open()
        try:
            first, second = (await store.new_emails("2026-11-01 00:00:00", 10)).emails
            decided = triage(first, inputs()).decision
            assert decided is not None and decided.push_text
            with sqlite3.connect(db) as other:  # email-agent.js pushes meanwhile
                other.execute(
                    "UPDATE emails SET reactor_pushed_at = ? WHERE id IN (?, ?)",
                    (PUSHED_AT, first.id, second.id),
                )
            other.close()
            got = await store.record(
                first,
                decided,
                mc_task_id=1,
                decided_at="2026-11-23 10:01:00",
                sender_hash="h",
                push_key=f"email:{first.id}",
            )
            assert got.inserted and not got.push
            # The second was decided (with a push) before the ingest pushed it: deferred only.
            await store.db.execute(
                "INSERT INTO reactor_decisions(email_id, action, decided_at, push_key,"
                " push_channel, push_text) VALUES (?, 'linked', 'x', ?, '#ceo', 'text')",
                (second.id, f"email:{second.id}"),
            )
            await store.db.commit()
            assert await store.deferred_pushes(10) == []
        finally:
            await store.close()

    asyncio.run(run())

"""The inbox store against what email-agent.js really writes: ``created_at`` in every form the
Node tools use (SQLite text, ISO with T and Z or an offset, epoch seconds or milliseconds as
integers or strings), tables without optional columns, and the contract that refuses a table
the reactor cannot use. Real SQLite files; no subprocess."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemons.email_reactor.store import InboxStore
from shared.schema_contract import ContractViolation
from tests.email_fixtures import FOREIGN_SCHEMA

SINCE = "2026-11-01 00:00:00"
BEFORE = "2026-11-23 12:00:00"  # the cutover line
# (label, created_at as the Node tools write it, before the cutover line?)
FORMS: list[tuple[str, object, bool]] = [
    ("sqlite", "2026-11-23 11:00:00", True),
    ("iso-z", "2026-11-23T11:00:00Z", True),
    ("iso-ms-z", "2026-11-23T11:00:00.123Z", True),
    ("iso-offset", "2026-11-23T13:00:00+02:00", True),  # 11:00 UTC
    ("epoch-s", 1795422000, True),  # 2026-11-23 08:20:00 UTC
    ("epoch-ms", 1795422000000, True),
    ("epoch-s-text", "1795422000", True),
    ("sqlite-late", "2026-11-23 12:30:00", False),
    ("iso-late", "2026-11-23T12:30:00Z", False),
    ("iso-offset-late", "2026-11-23T11:30:00-02:00", False),  # 13:30 UTC
    ("epoch-ms-late", 1795441800000, False),  # 2026-11-23 13:50:00 UTC
]


def inbox(
    path: Path, rows: list[tuple[str, object]], schema: str = FOREIGN_SCHEMA
) -> dict[str, int]:
    conn = sqlite3.connect(path)
    conn.execute(schema)
    ids = {}
    for label, created in rows:
        cur = conn.execute(
            "INSERT INTO emails(account, from_addr, subject, classification, status, created_at)"
            " VALUES ('ceo@example.com', ?, ?, 'ACTION', 'new', ?)",
            (f"{label}@example.com", label, created),
        )
        ids[label] = int(cur.lastrowid or 0)
    conn.commit()
    conn.close()
    return ids


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_new_mail_in_every_node_timestamp_form_is_seen(tmp_path: Path) -> None:
    """Why-bullet: epoch rows compared as INTEGER < TEXT were never new; ISO rows of the day
    before ``since`` counted as new ('T' > ' ')."""
    db = tmp_path / "email-inbox.db"
    ids = inbox(db, [(label, created) for label, created, _ in FORMS])
    old = {"iso-old": "2026-10-31T23:00:00Z", "epoch-old": 1793487600}  # before SINCE
    conn = sqlite3.connect(db)
    for label, created in old.items():
        conn.execute(
            "INSERT INTO emails(from_addr, subject, status, created_at) VALUES (?, ?, 'new', ?)",
            (f"{label}@example.com", label, created),
        )
    conn.commit()
    conn.close()

    async def go() -> list[str]:
        store = await InboxStore(db).open()
        try:
            return [e.subject for e in (await store.new_emails(SINCE, 100)).emails]
        finally:
            await store.close()

    got = run(go())
    assert sorted(got) == sorted(label for label, _, _ in FORMS)
    assert not set(old) & set(got)
    # oldest first, by the instant, whatever the form
    assert got[0] in ("epoch-s", "epoch-ms", "epoch-s-text") and got[-1] == "epoch-ms-late"
    assert set(ids) == {label for label, _, _ in FORMS}


def test_cutover_before_marks_every_form_by_its_instant(tmp_path: Path) -> None:
    """Why-bullet: a created_at in ISO form escaped `fleet email cutover --before`."""
    db = tmp_path / "email-inbox.db"
    ids = inbox(db, [(label, created) for label, created, _ in FORMS])

    async def go() -> set[int]:
        store = await InboxStore(db).open()
        try:
            await store.cutover(BEFORE, "2026-11-23 12:00:01")
            return {e.id for e in (await store.new_emails(SINCE, 100)).emails}
        finally:
            await store.close()

    left = run(go())
    assert left == {ids[label] for label, _, before in FORMS if not before}


def test_stale_check_reads_iso_and_epoch_rows(tmp_path: Path) -> None:
    db = tmp_path / "email-inbox.db"
    ids = inbox(db, [(label, created) for label, created, _ in FORMS])

    async def go() -> set[int]:
        store = await InboxStore(db).open()
        try:
            return {e.id for e in (await store.stale_emails(SINCE, BEFORE)).emails}
        finally:
            await store.close()

    assert run(go()) == {ids[label] for label, _, before in FORMS if before}


def test_unreadable_created_at_is_still_triaged_never_stale(tmp_path: Path) -> None:
    db = tmp_path / "email-inbox.db"
    ids = inbox(db, [("garbled", "yesterday-ish"), ("ambiguous", "2026-11-23T11:00:00")])

    async def go() -> tuple[set[int], set[int], int]:
        store = await InboxStore(db).open()
        try:
            new = {e.id for e in (await store.new_emails(SINCE, 100)).emails}
            stale = {e.id for e in (await store.stale_emails(SINCE, "2100-01-01 00:00:00")).emails}
            count, oldest = await store.backlog(SINCE)
            assert oldest is None
            return new, stale, count
        finally:
            await store.close()

    new, stale, count = run(go())
    assert new == set(ids.values()) and count == 2
    assert stale == set()


LEGACY = """CREATE TABLE emails (id INTEGER PRIMARY KEY AUTOINCREMENT, from_addr TEXT,
  subject TEXT, status TEXT DEFAULT 'new', created_at TEXT, mc_task_id INTEGER)"""


def test_required_columns_missing_refuse_naming_db_table_and_columns(tmp_path: Path) -> None:
    """The inbox before email-inbox.js's reactor additions: the reactor must not add them."""
    db = tmp_path / "email-inbox.db"
    inbox(db, [], schema=LEGACY)
    before = sqlite3.connect(db).execute("PRAGMA table_info(emails)").fetchall()
    with pytest.raises(ContractViolation) as err:
        run(InboxStore(db).open())
    text = str(err.value)
    assert str(db) in text and "table emails" in text
    assert "partner_tier" in text and "reactor_pushed_at" in text
    assert sqlite3.connect(db).execute("PRAGMA table_info(emails)").fetchall() == before


def test_optional_columns_missing_degrade_and_read_as_empty(tmp_path: Path) -> None:
    """No body_text/attachments/account/from_name/to_addr/classification: the store still
    reads and decides mail, and says which features are degraded."""
    db = tmp_path / "email-inbox.db"
    inbox(
        db,
        [],
        schema=LEGACY[:-1] + ", partner_tier INTEGER DEFAULT 0, reactor_pushed_at TEXT)",
    )
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO emails(from_addr, subject, created_at) VALUES"
        " ('a@example.com', 'hello', '2026-11-23T10:00:00Z')"
    )
    conn.commit()
    conn.close()

    async def go() -> tuple[list[str], list[str], set[str], int]:
        store = await InboxStore(db).open()
        try:
            mails = (await store.new_emails(SINCE, 10)).emails
            assert store.report is not None
            digest, _unreadable = await store.digest_candidates(SINCE, "2100-01-01 00:00:00")
            return (
                [m.body_text for m in mails],
                store.report.degraded(),
                await store.own_recipients(),
                len(digest),
            )
        finally:
            await store.close()

    bodies, degraded, own, digest = run(go())
    assert bodies == [""]
    text = "\n".join(degraded)
    for col in ("body_text", "attachments", "account", "from_name", "to_addr", "classification"):
        assert f"no column {col}" in text
    assert "security scan and the LLM see no body" in text
    assert own == set() and digest == 0


def test_schema_change_while_running_is_seen_at_the_next_check(tmp_path: Path) -> None:
    db = tmp_path / "email-inbox.db"
    inbox(db, [("a", "2026-11-23 10:00:00")])

    async def go() -> None:
        store = await InboxStore(db).open()
        try:
            assert await store.recheck() is None  # nothing moved
            other = sqlite3.connect(db)
            other.execute("ALTER TABLE emails RENAME COLUMN reactor_pushed_at TO pushed_at")
            other.close()
            with pytest.raises(ContractViolation, match="reactor_pushed_at"):
                await store.recheck()
            with pytest.raises(ContractViolation):  # still refused, until fixed
                await store.recheck()
            other = sqlite3.connect(db)
            other.execute("ALTER TABLE emails RENAME COLUMN pushed_at TO reactor_pushed_at")
            other.close()
            report = await store.recheck()
            assert report is not None and report.ok
            assert [e.subject for e in (await store.new_emails(SINCE, 10)).emails] == ["a"]
        finally:
            await store.close()

    run(go())

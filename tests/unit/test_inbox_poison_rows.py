"""Rows another tool wrote that cannot be read or typed: each is set aside with a reason that
names the column and the kind of problem, never the content, and every other row still reads.
Table-driven over ``rows.email_from_row``, then the store on real SQLite files (text that is not
UTF-8 written the way a C tool or a ``text_factory=bytes`` writer leaves it)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemons.email_reactor.rows import (
    EMAIL_COLUMNS,
    RowError,
    Undecodable,
    decode_text,
    email_from_row,
)
from daemons.email_reactor.rules import Email
from daemons.email_reactor.store import InboxStore, PoisonRow
from tests.email_fixtures import FOREIGN_SCHEMA

SINCE = "2026-11-01 00:00:00"
GOOD: dict[str, Any] = {
    "id": 7,
    "account": "ceo@example.com",
    "from_addr": "a@example.com",
    "from_name": "A",
    "to_addr": "ceo@example.com",
    "reply_to": None,
    "subject": "Hello",
    "body_text": "Body",
    "attachments": '["a.pdf", {"name": "b.docm"}]',
    "headers": '{"Authentication-Results": "dkim=pass"}',
    "classification": "ACTION",
    "status": "new",
    "created_at": "2026-11-23 10:00:00",
    "mc_task_id": None,
    "reactor_pushed_at": None,
    "partner_tier": 0,
}


def row(**changes: Any) -> list[Any]:
    values = {**GOOD, **changes}
    return [values[c] for c in EMAIL_COLUMNS]


def typed(**changes: Any) -> Email:
    return email_from_row(row(**changes), "2026-11-23 10:00:00")


# (column -> value, the kind, the reason's detail)
BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"mc_task_id": ""}, "mc_task_id: not an integer", "empty text"),
    ({"mc_task_id": "MC-42"}, "mc_task_id: not an integer", "text of 5 characters"),
    ({"mc_task_id": 4.5}, "mc_task_id: not an integer", "a float"),
    ({"partner_tier": "gold"}, "partner_tier: not an integer", "text of 4 characters"),
    ({"body_text": Undecodable(37)}, "body_text: not UTF-8", "37 bytes"),
    ({"body_text": b"secret \xff"}, "body_text: not UTF-8", "a BLOB of 8 bytes"),
    ({"subject": Undecodable(12)}, "subject: not UTF-8", "12 bytes"),
    ({"headers": "42"}, "headers: not a JSON object", "JSON number"),
    ({"headers": '["x"]'}, "headers: not a JSON object", "JSON array"),
    ({"headers": "Received: from x"}, "headers: not JSON", "text of 16 characters"),
    ({"attachments": '{"a": 1}'}, "attachments: not a JSON list", "JSON object"),
    ({"attachments": "[" * 100_000 + "]" * 100_000}, "attachments: JSON nested too deep", ""),
    ({"headers": '{"x": "' + "y" * 1_000_001 + '"}'}, "headers: JSON too large", ""),
    ({"attachments": 5}, "attachments: not a JSON list", "a int"),
]


@pytest.mark.parametrize(("changes", "kind", "detail"), BAD, ids=[b[1] for b in BAD])
def test_a_row_that_cannot_be_typed_says_which_column_and_why(
    changes: dict[str, Any], kind: str, detail: str
) -> None:
    with pytest.raises(RowError) as err:
        typed(**changes)
    assert err.value.kind == kind
    assert err.value.reason.startswith(f"{kind} ({detail}")
    assert "secret" not in err.value.reason and "Received" not in err.value.reason


def test_every_problem_of_a_row_is_named_first_one_is_its_kind() -> None:
    with pytest.raises(RowError) as err:
        typed(subject=Undecodable(3), partner_tier="gold")
    assert err.value.kind == "subject: not UTF-8"
    assert err.value.reason == (
        "subject: not UTF-8 (3 bytes); partner_tier: not an integer (text of 4 characters)"
    )


def test_what_other_tools_write_that_still_types() -> None:
    mail = typed(
        mc_task_id="42",  # an INTEGER column without affinity keeps the text
        partner_tier=None,
        body_text=b"valid \xc3\xa6 bytes",  # a BLOB that is UTF-8
        attachments="not-json[",  # one opaque name, still scanned
        headers="",
        from_name=None,
    )
    assert mail.mc_task_id == 42 and mail.partner_tier == 0
    assert mail.body_text == "valid \u00e6 bytes"
    assert mail.attachments == ("not-json[",) and mail.headers == {}
    assert mail.from_name == ""
    assert typed().attachments == ("a.pdf", "b.docm")


def test_text_factory_keeps_only_the_length_of_text_that_is_not_utf8() -> None:
    assert decode_text("ok \u00e6".encode()) == "ok \u00e6"
    bad = decode_text(b"wire the money \xff")
    assert bad == Undecodable(16) and "money" not in str(bad) + repr(bad)


def make_inbox(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute(FOREIGN_SCHEMA)
    return conn


def add(conn: sqlite3.Connection, label: str, **cols: Any) -> int:
    values: dict[str, Any] = {
        "from_addr": f"{label.lower()}@example.com",
        "subject": label,
        "body_text": "b",
        "classification": "ACTION",
        "status": "new",
        "created_at": "2026-11-23 10:00:00",
        **cols,
    }
    marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, bytes) else "?" for v in values.values())
    cur = conn.execute(
        f"INSERT INTO emails({', '.join(values)}) VALUES ({marks})", list(values.values())
    )
    return int(cur.lastrowid or 0)


def test_store_reads_good_rows_around_bad_ones_and_sets_them_aside_once(tmp_path: Path) -> None:
    db = tmp_path / "email-inbox.db"
    conn = make_inbox(db)
    before = add(conn, "Before")
    body = add(conn, "Body", body_text=b"SECRET body \xff\xfe")
    subject = add(conn, "X", subject=b"SECRET subject \xc3\x28")
    tier = add(conn, "Tier", partner_tier="gold")
    created = add(conn, "Created", created_at=b"2026-11-\xff")  # unreadable: still new mail
    after = add(conn, "After")
    conn.commit()
    conn.close()

    async def go() -> None:
        store = await InboxStore(db).open()
        try:
            read = await store.new_emails(SINCE, 100)
            assert [e.id for e in read.emails] == [before, after, created]  # unreadable last
            assert read.poison == [
                PoisonRow(body, "body_text: not UTF-8", "body_text: not UTF-8 (14 bytes)"),
                PoisonRow(subject, "subject: not UTF-8", "subject: not UTF-8 (17 bytes)"),
                PoisonRow(
                    tier,
                    "partner_tier: not an integer",
                    "partner_tier: not an integer (text of 4 characters)",
                ),
            ]
            assert await store.set_aside(read.poison, "2026-11-23 11:00:00") == read.poison
            assert await store.set_aside(read.poison, "2026-11-23 12:00:00") == []
            again = await store.new_emails(SINCE, 100)
            assert again.poison == [] and len(again.emails) == 3
            count, _oldest = await store.backlog(SINCE)
            assert count == 3  # rows set aside are not backlog
            explained = await store.email(body)
            assert isinstance(explained, PoisonRow) and "SECRET" not in explained.reason
            assert await store.set_aside_since(body) == "2026-11-23 11:00:00"
            assert await store.set_aside_since(before) is None
            assert await store.release_fixed() == []
            other = sqlite3.connect(db)
            other.execute("UPDATE emails SET partner_tier = 2 WHERE id = ?", (tier,))
            other.commit()
            other.close()
            assert await store.release_fixed() == [tier]
            fixed = [e for e in (await store.new_emails(SINCE, 100)).emails if e.id == tier]
            assert fixed and fixed[0].partner_tier == 2
        finally:
            await store.close()

    asyncio.run(go())


def test_stale_digest_and_own_mail_reads_survive_text_that_is_not_utf8(tmp_path: Path) -> None:
    """Before: a digest or stale read (and the OWN-recipient scan) failed on one such row, and
    sqlite3's error message quoted the text."""
    db = tmp_path / "email-inbox.db"
    conn = make_inbox(db)
    partner = add(conn, "Partner", partner_tier=1, status="read")
    bad = add(conn, "Bad", partner_tier=1, status="read", from_name=b"SECRET \xff")
    add(conn, "Own", classification="OWN", status="sent", to_addr=b"SECRET \xff")
    conn.commit()
    conn.close()

    async def go() -> None:
        store = await InboxStore(db).open()
        try:
            stale = await store.stale_emails(SINCE, "2100-01-01 00:00:00")
            assert [e.id for e in stale.emails] == [partner]
            assert [p.email_id for p in stale.poison] == [bad]
            digest, unreadable = await store.digest_candidates(SINCE, "2100-01-01 00:00:00")
            assert [d.id for d in digest] == [partner] and digest[0].partner_tier == 1
            assert [p.email_id for p in unreadable] == [bad]
            assert await store.own_recipients() == set()
        finally:
            await store.close()

    asyncio.run(go())


def test_header_values_of_any_json_type_are_scanned_not_fatal() -> None:
    """A typed row whose Authentication-Results is a list of numbers made the partner's
    security scan raise TypeError, every cycle."""
    from daemons.email_reactor.config import SecurityRules
    from daemons.email_reactor.rules import match_partner, parse_partners, security_scan

    partners = parse_partners({"senders": [{"email": "a@example.com", "tier": 1}]}, [])
    mail = typed(headers='{"Authentication-Results": [1, {"dkim": "fail"}, "spf=fail"]}')
    verdict = security_scan(
        mail, SecurityRules(), partners, match_partner(mail.from_addr, partners)
    )
    assert "auth_fail:spf" in verdict.signals and verdict.partner_spoof

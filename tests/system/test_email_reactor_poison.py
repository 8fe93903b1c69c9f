"""Poison rows, as real `fleet run email-reactor --once` processes: rows another tool wrote that
cannot be read or typed (text that is not UTF-8, ``'MC-42'`` in an INTEGER column, JSON of the
wrong shape or nested without end) used to stop all triage, every cycle, and the decode error
carried the mail body into the log. Now each is set aside with its reason, one #ops alert per
kind of problem, `fleet email explain` shows it, and the rest of the inbox is decided."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import run_fleet
from tests.email_fixtures import add_bulk, fixture_answer, sql_ts
from tests.fakes.llm import FakeLLM

pytestmark = pytest.mark.system

GOOD = 200
BODY_SECRET = b"BODYSECRET-7f3a wire the money to acct 1234 \xff\xfe\xfa tail"
SUBJECT_SECRET = b"SUBJSECRET-91c2 \xc3\x28 merger"
BLOB_SECRET = b"BLOBSECRET-22aa \x80\x81\x82"
DEEP = "[" * 200_000 + "]" * 200_000

# (name, column -> value bound as is, expected kind of problem). bytes are stored as TEXT
# with the raw bytes (what a writer with text_factory=bytes or a C tool leaves), except
# where the name says BLOB.
POISON: list[tuple[str, dict[str, object], str]] = [
    ("mc_task_id empty", {"mc_task_id": ""}, "mc_task_id: not an integer"),
    ("mc_task_id MC-42", {"mc_task_id": "MC-42"}, "mc_task_id: not an integer"),
    ("partner_tier gold", {"partner_tier": "gold"}, "partner_tier: not an integer"),
    ("body not UTF-8", {"body_text": BODY_SECRET}, "body_text: not UTF-8"),
    ("body BLOB not UTF-8", {"body_text": ("blob", BLOB_SECRET)}, "body_text: not UTF-8"),
    ("subject not UTF-8", {"subject": SUBJECT_SECRET}, "subject: not UTF-8"),
    ("headers a number", {"headers": "42"}, "headers: not a JSON object"),
    ("attachments nested", {"attachments": DEEP}, "attachments: JSON nested too deep"),
]
KINDS = {kind for _name, _cols, kind in POISON}


def insert_poison(db: Path, now: datetime) -> dict[str, int]:
    """The poison rows, spread between the good ones by created_at."""
    conn = sqlite3.connect(db)
    ids: dict[str, int] = {}
    for i, (name, cols, _kind) in enumerate(POISON):
        values: dict[str, object] = {
            "account": "ceo@example.com",
            "from_addr": f"poison{i}@unknown.example.net",
            "from_name": "Poison",
            "to_addr": "ceo@example.com",
            "subject": f"Poison {i}",
            "body_text": "plain",
            "attachments": "[]",
            "headers": "{}",
            "classification": "ACTION",
            "status": "new",
            "created_at": sql_ts(now - timedelta(minutes=GOOD - 20 * i - 5)),
        }
        values.update(cols)
        names = ", ".join(values)
        marks = ", ".join(
            "?" if isinstance(v, tuple) or not isinstance(v, bytes) else "CAST(? AS TEXT)"
            for v in values.values()
        )
        params = [v[1] if isinstance(v, tuple) else v for v in values.values()]
        cur = conn.execute(f"INSERT INTO emails({names}) VALUES ({marks})", params)
        ids[name] = int(cur.lastrowid or 0)
    # Not poison: an undecodable created_at is unreadable, and unreadable mail is still triaged.
    cur = conn.execute(
        "INSERT INTO emails(account, from_addr, subject, body_text, classification, status,"
        " created_at) VALUES ('ceo@example.com', 'late@unknown.example.net', 'Late', 'b',"
        " 'ACTION', 'new', CAST(? AS TEXT))",
        (b"2026-11-\xff",),
    )
    ids["created_at not UTF-8"] = int(cur.lastrowid or 0)
    conn.commit()
    conn.close()
    return ids


def poison_table(db: Path) -> dict[int, tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT email_id, kind, reason, first_seen FROM reactor_poison_rows"
        ).fetchall()
    conn.close()
    return {int(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}


def decided(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT email_id FROM reactor_decisions").fetchall()
    conn.close()
    return {int(r[0]) for r in rows}


def ops_alerts(root: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(root / "state/outbox.db") as conn:
        rows = conn.execute(
            "SELECT dedup_key, channel, text FROM outbox WHERE dedup_key LIKE 'poison-row:%'"
        ).fetchall()
    conn.close()
    return [(str(k), str(c), str(t)) for k, c, t in rows]


def no_content(text: str) -> None:
    for secret in ("BODYSECRET", "SUBJSECRET", "BLOBSECRET", "wire the money", "merger"):
        assert secret not in text, f"mail content {secret!r} leaked: ...{text[-2000:]}"


def test_poison_rows_are_set_aside_and_the_rest_is_decided(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    db = fleet_root / "databases/email-inbox.db"
    now = datetime.now(UTC)
    good = set(add_bulk(db, GOOD, now=now))
    ids = insert_poison(db, now)
    poison_ids = {ids[name]: kind for name, _cols, kind in POISON}
    with FakeLLM(fixture_answer) as llm:
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "30",
            "FLEET_EMAIL_REACTOR__LLM_CONCURRENCY": "8",
        }
        first = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=300)
        out = first.stdout + first.stderr
        assert first.returncode == 0, out[-3000:]
        no_content(out)
        got = decided(db)
        assert good <= got, f"{len(good - got)} good mails undecided"
        assert ids["created_at not UTF-8"] in got, "unreadable created_at: still triaged"
        assert not got & set(poison_ids), "a poison row was decided"
        table = poison_table(db)
        assert set(table) == set(poison_ids)
        for email_id, kind in poison_ids.items():
            got_kind, reason, _seen = table[email_id]
            assert got_kind == kind and reason.startswith(kind), (kind, reason)
            no_content(reason)
        assert table[ids["body not UTF-8"]][1] == f"body_text: not UTF-8 ({len(BODY_SECRET)} bytes)"
        alerts = ops_alerts(fleet_root)
        assert sorted(k for k, _c, _t in alerts) == sorted(f"poison-row:{k}" for k in KINDS)
        assert {c for _k, c, _t in alerts} == {"#ops"}
        no_content("\n".join(t for _k, _c, t in alerts))
        # The next cycle neither records nor alerts them again, and does not fail on them.
        second = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=300)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr
        no_content(second.stdout + second.stderr)
        assert poison_table(db) == table
        assert len(ops_alerts(fleet_root)) == len(KINDS)
        # `fleet email explain` shows why, without a traceback or the content.
        for email_id, kind in poison_ids.items():
            explained = run_fleet(["email", "explain", str(email_id)], env, tmp_path)
            text = explained.stdout + explained.stderr
            assert explained.returncode == 0, text
            assert kind in explained.stdout and "set aside" in explained.stdout, text
            assert "Traceback" not in text
            no_content(text)
        # An operator fixes a row: the next cycle triages it.
        fixed = ids["mc_task_id MC-42"]
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE emails SET mc_task_id = NULL WHERE id = ?", (fixed,))
        conn.close()
        third = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=300)
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr
    assert fixed in decided(db)
    assert set(poison_table(db)) == set(poison_ids) - {fixed}

"""Typing one ``emails`` row another tool wrote: an ``Email``, or a ``RowError`` naming the
column and the kind of problem (``body_text: not UTF-8``), never its content.

Other tools fill ``emails`` and SQLite keeps whatever they bind: text that is not UTF-8, a BLOB,
``'MC-42'`` in an INTEGER column, JSON of the wrong shape. One such row must not stop the
inbox, so every row is typed on its own and a row that cannot be is set aside with its reason
(``reactor_poison_rows``). The inbox connection's ``text_factory`` is ``decode_text``: text
that is not UTF-8 arrives as an ``Undecodable`` (its length only) instead of sqlite3's decode
error, whose message quotes the text. Pure: no I/O, no logging.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from daemons.email_reactor.rules import Email
from shared.timestamps import TimestampError, format_sql_ts, parse_timestamp

__all__ = [
    "EMAIL_COLUMNS",
    "InboxRows",
    "PoisonRow",
    "RowError",
    "Undecodable",
    "decode_text",
    "email_from_row",
    "sql_timestamp",
    "text_or_none",
    "typed_row",
    "typed_rows",
]

EMAIL_COLUMNS = (  # the order the store selects them in
    "id",
    "account",
    "from_addr",
    "from_name",
    "to_addr",
    "reply_to",
    "subject",
    "body_text",
    "attachments",
    "headers",
    "classification",
    "status",
    "created_at",
    "mc_task_id",
    "reactor_pushed_at",
    "partner_tier",
)
_CREATED_AT = EMAIL_COLUMNS.index("created_at")
_TYPED = ("id", "attachments", "headers", "created_at", "mc_task_id", "partner_tier")
_TEXT = tuple(c for c in EMAIL_COLUMNS if c not in (*_TYPED, "reactor_pushed_at"))
#: attachments/headers JSON larger than this is not read (a header block is a few KiB)
MAX_JSON_BYTES = 1_000_000
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number"}


@dataclass(frozen=True)
class Undecodable:
    """A TEXT value that is not UTF-8. Only its length is kept: the bytes are mail content."""

    nbytes: int

    def __str__(self) -> str:
        return f"<not UTF-8, {self.nbytes} bytes>"


def decode_text(raw: bytes) -> str | Undecodable:
    """The inbox connection's ``text_factory``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(len(raw))


def text_or_none(value: Any) -> str | None:
    """A column read as text, or None when it is not readable text (callers skip it)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass(frozen=True)
class PoisonRow:
    """An ``emails`` row that cannot be typed. ``kind`` (``column: problem``) groups alerts;
    ``reason`` adds the details of every problem found, never the content."""

    email_id: int
    kind: str
    reason: str


@dataclass(frozen=True)
class InboxRows:
    """What a read of ``emails`` gave: the rows typed, and the rows that could not be."""

    emails: list[Email] = field(default_factory=list)
    poison: list[PoisonRow] = field(default_factory=list)


class RowError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems  # (kind, detail) in column order
        self.kind = problems[0][0]
        self.reason = "; ".join(f"{kind} ({detail})" for kind, detail in problems)
        super().__init__(self.reason)


def _described(value: Any) -> str:
    """What a value is, without what it says."""
    if isinstance(value, str):
        return "empty text" if not value.strip() else f"text of {len(value)} characters"
    if isinstance(value, bytes):
        return f"a BLOB of {len(value)} bytes"
    return f"a {type(value).__name__}"


class _Reader:
    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.problems: list[tuple[str, str]] = []

    def fail(self, column: str, problem: str, detail: str) -> None:
        self.problems.append((f"{column}: {problem}", detail))

    def text(self, column: str) -> str:
        value = self.row[column]
        if value is None:
            return ""
        if isinstance(value, bytes):  # a BLOB: fine if it is UTF-8 text
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(column, "not UTF-8", f"a BLOB of {len(value)} bytes")
                return ""
        if isinstance(value, Undecodable):
            self.fail(column, "not UTF-8", f"{value.nbytes} bytes")
            return ""
        return str(value)

    def integer(self, column: str) -> int | None:
        value = self.row[column]
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        self.fail(column, "not an integer", _described(value))
        return None

    def json(self, column: str, kind: type) -> Any:
        label = "object" if kind is dict else kind.__name__
        value = self.row[column]
        if isinstance(value, bytes | Undecodable):
            value = self.text(column)  # records the problem when it is not UTF-8
        if not value:
            return kind()
        if not isinstance(value, str):
            self.fail(column, f"not a JSON {label}", _described(value))
            return kind()
        if len(value) > MAX_JSON_BYTES:
            self.fail(column, "JSON too large", f"{len(value)} characters")
            return kind()
        try:
            data = json.loads(value)
        except RecursionError:
            self.fail(column, "JSON nested too deep", f"{len(value)} characters")
            return kind()
        except ValueError:
            return None  # not JSON at all: the caller decides
        if not isinstance(data, kind):
            self.fail(column, f"not a JSON {label}", f"JSON {_JSON_TYPES.get(type(data), '?')}")
            return kind()
        return data


def _attachments(reader: _Reader) -> tuple[str, ...]:
    data = reader.json("attachments", list)
    if data is None:  # not JSON: one opaque name, still scanned (as the ingest sometimes writes)
        return (reader.text("attachments"),)
    return tuple(str(x.get("name", x)) if isinstance(x, dict) else str(x) for x in data)


def _headers(reader: _Reader) -> dict[str, Any]:
    data = reader.json("headers", dict)
    if data is None:
        reader.fail("headers", "not JSON", _described(reader.row["headers"]))
        return {}
    return dict(data)


def email_from_row(row: Sequence[Any], created_at: str | None) -> Email:
    """Type one row selected as ``EMAIL_COLUMNS``. ``created_at`` is its canonical form
    (None: unreadable, still triaged). Raises RowError naming every problem."""
    r = dict(zip(EMAIL_COLUMNS, row, strict=True))
    reader = _Reader(r)
    text = {c: reader.text(c) for c in _TEXT}
    attachments = _attachments(reader)
    headers = _headers(reader)
    mc_task_id = reader.integer("mc_task_id")
    partner_tier = reader.integer("partner_tier")
    pushed = r["reactor_pushed_at"]
    pushed_at = reader.text("reactor_pushed_at") if pushed is not None else None
    if reader.problems:
        raise RowError(reader.problems)
    return Email(
        id=int(r["id"]),
        account=text["account"],
        from_addr=text["from_addr"],
        from_name=text["from_name"],
        to_addr=text["to_addr"],
        reply_to=text["reply_to"],
        subject=text["subject"],
        body_text=text["body_text"],
        attachments=attachments,
        headers=headers,
        classification=text["classification"],
        status=text["status"],
        created_at=created_at or text_or_none(r["created_at"]) or "",
        mc_task_id=mc_task_id,
        reactor_pushed_at=pushed_at or None,
        partner_tier=partner_tier or 0,
    )


def sql_timestamp(value: object) -> str | None:
    """``fleet_ts(x)`` in SQL: any timestamp the Node tools write, as SQLite's canonical
    ``YYYY-MM-DD HH:MM:SS`` UTC text; None (NULL) for a value nobody can read. Text comes
    as bytes (the store's ``_ts``) so one that is not UTF-8 is unreadable, not an error."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if value is None:
        return None
    try:
        return format_sql_ts(parse_timestamp(value))
    except TimestampError:
        return None


def typed_row(row: Sequence[Any]) -> Email | PoisonRow:
    """One row typed, or the reason it cannot be (its ``id`` is INTEGER PRIMARY KEY)."""
    try:
        return email_from_row(row, sql_timestamp(row[_CREATED_AT]))
    except RowError as exc:
        return PoisonRow(int(row[0]), exc.kind, exc.reason)


def typed_rows(rows: Sequence[Sequence[Any]]) -> InboxRows:
    out = InboxRows()
    for row in rows:
        typed = typed_row(row)
        if isinstance(typed, PoisonRow):
            out.poison.append(typed)
        else:
            out.emails.append(typed)
    return out

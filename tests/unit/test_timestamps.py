"""shared.timestamps.parse_timestamp, table-driven: every form the Node tools and SQLite write,
and the values it must refuse (with the reason) instead of guessing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.timestamps import (
    CANONICAL_GLOB,
    TimestampError,
    format_iso,
    format_sql_ts,
    parse_timestamp,
    shown,
)

LEASE = datetime(2026, 5, 8, 12, 30, 0, tzinfo=UTC)
EPOCH_S = int(LEASE.timestamp())  # 1778243400

READABLE: list[tuple[object, datetime]] = [
    ("2026-05-08 12:30:00", LEASE),
    ("  2026-05-08 12:30:00\n", LEASE),
    ("2026-05-08 12:30:00.250", LEASE.replace(microsecond=250000)),
    ("2026-05-08T12:30:00Z", LEASE),
    ("2026-05-08T12:30:00z", LEASE),
    ("2026-05-08T12:30:00.123Z", LEASE.replace(microsecond=123000)),
    ("2026-05-08T12:30:00.123456789Z", LEASE.replace(microsecond=123456)),
    ("2026-05-08T14:30:00+02:00", LEASE),
    ("2026-05-08T14:30:00.5+02:00", LEASE.replace(microsecond=500000)),
    ("2026-05-08T07:30:00-0500", LEASE),
    ("2026-05-08T12:30:00+00:00", LEASE),
    ("2026-05-08 14:30:00+02:00", LEASE),
    (EPOCH_S, LEASE),
    (str(EPOCH_S), LEASE),
    (EPOCH_S * 1000, LEASE),
    (str(EPOCH_S * 1000), LEASE),
    (EPOCH_S * 1000 + 250, LEASE.replace(microsecond=250000)),
    (EPOCH_S + 0.5, LEASE.replace(microsecond=500000)),
    (f"{EPOCH_S}.5", LEASE.replace(microsecond=500000)),
    (float(EPOCH_S), LEASE),
]


@pytest.mark.parametrize(("value", "expected"), READABLE, ids=[repr(v) for v, _ in READABLE])
def test_reads_every_node_and_sqlite_form_as_utc(value: object, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.tzinfo is UTC


REFUSED: list[tuple[object, str]] = [
    ("2026-05-08T12:30:00", "ambiguous"),  # no zone: JS local time, SQLite UTC
    ("2026-05-08T12:30:00.123", "ambiguous"),
    (12345, "seconds (10 digits) or milliseconds (13 digits)"),
    ("12345", "seconds (10 digits) or milliseconds (13 digits)"),
    (EPOCH_S * 1_000_000, "microseconds"),  # microseconds: neither s nor ms
    (99_999_999_999, "could mean either"),  # between the two ranges
    ("", "empty"),
    ("   ", "empty"),
    ("tomorrow", "not YYYY-MM-DD HH:MM:SS"),
    ("2026-05-08", "not YYYY-MM-DD HH:MM:SS"),
    ("2026-05-08 12:30", "no seconds"),
    ("2026-13-08 12:30:00", "not a valid date"),
    ("2026-02-30T12:30:00Z", "not a valid date"),
    ("-1778243400", "not YYYY-MM-DD HH:MM:SS"),
    (-EPOCH_S, "seconds (10 digits)"),
    (None, "NoneType is not a timestamp"),
    (True, "bool is not a timestamp"),
    (b"2026-05-08 12:30:00", "bytes is not a timestamp"),
    (float("nan"), "not a finite number"),
    (float("inf"), "not a finite number"),
]


@pytest.mark.parametrize(("value", "reason"), REFUSED, ids=[repr(v) for v, _ in REFUSED])
def test_refuses_with_a_reason_instead_of_guessing(value: object, reason: str) -> None:
    with pytest.raises(TimestampError) as caught:
        parse_timestamp(value)
    assert reason in str(caught.value)
    assert caught.value.value is value or caught.value.value == value
    assert isinstance(caught.value, ValueError)  # one error type, catchable as ValueError


def test_formats_round_trip_through_the_parser() -> None:
    assert format_sql_ts(LEASE) == "2026-05-08 12:30:00"
    assert format_iso(LEASE) == "2026-05-08T12:30:00Z"
    assert parse_timestamp(format_sql_ts(LEASE)) == LEASE
    assert parse_timestamp(format_iso(LEASE)) == LEASE


def test_canonical_glob_matches_only_the_sqlite_form() -> None:
    import sqlite3

    conn = sqlite3.connect(":memory:")
    cases = {
        "2026-05-08 12:30:00": 1,
        "2026-05-08T12:30:00": 0,
        "2026-05-08T12:30:00Z": 0,
        "2026-05-08 12:30:00.123": 0,
        "2026-05-08 12:30:00+02:00": 0,
        str(EPOCH_S): 0,
    }
    for value, want in cases.items():
        got = conn.execute("SELECT ? GLOB ?", (value, CANONICAL_GLOB)).fetchone()[0]
        assert got == want, value
    assert conn.execute("SELECT ? GLOB ?", (EPOCH_S, CANONICAL_GLOB)).fetchone()[0] == 0
    conn.close()


def test_a_huge_garbage_value_is_echoed_cut_short() -> None:
    """Another tool's row may hold anything: errors and alerts quote at most 60 characters."""
    with pytest.raises(TimestampError) as exc:
        parse_timestamp("x" * 100_000)
    assert len(str(exc.value)) < 200 and str(exc.value).count("x") < 60
    assert shown("short") == "'short'"

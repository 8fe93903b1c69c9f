"""shared.pq_oneshot's decoders of binary results (what libpq hands the hook fast path)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from shared.pq_oneshot import decode_text, decode_timestamptz


def micros(dt: datetime) -> bytes:
    delta = dt - datetime(2000, 1, 1, tzinfo=UTC)
    return struct.pack("!q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def test_timestamptz_is_microseconds_since_2000_utc() -> None:
    when = datetime(2026, 5, 8, 12, 0, 7, 250_000, tzinfo=UTC)
    assert decode_timestamptz(micros(when)) == when
    before = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert decode_timestamptz(micros(before)) == before
    assert decode_timestamptz(None) is None


@pytest.mark.parametrize(
    ("raw", "words"),
    [(2**63 - 1, "too large"), (-(2**63), "too small")],  # Postgres' +/-infinity
)
def test_infinite_timestamps_are_refused_in_psycopgs_words(raw: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        decode_timestamptz(struct.pack("!q", raw))


def test_text_is_utf8() -> None:
    assert decode_text("pi-orch:s\u00e9".encode()) == "pi-orch:s\u00e9"
    assert decode_text(None) is None

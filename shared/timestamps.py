"""One parser for every timestamp the Node tools and SQLite write into shared tables.

``parse_timestamp`` is pure (standard library only, no clock): it returns an aware UTC datetime
or raises ``TimestampError`` saying what it could not read and why. It must never guess: a form
that could mean two different instants (an ISO time without a zone, an epoch number that could
be seconds or milliseconds) is refused with the reason, not resolved silently.

Accepted:

- SQLite's ``YYYY-MM-DD HH:MM:SS`` (optionally ``.fff``): UTC by SQLite's convention, which the
  seed's query ``lease_until > datetime('now')`` relies on;
- ISO-8601 with ``T`` and ``Z`` or an offset (``+02:00``), with or without fractional seconds;
- epoch seconds (``1e9 <= n < 1e10``: 2001-09-09 .. 2286-11-20) or epoch milliseconds
  (``1e12 <= n < 1e13``, the same span), as integers, floats or digit strings.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "CANONICAL_GLOB",
    "TimestampError",
    "format_iso",
    "format_sql_ts",
    "parse_timestamp",
    "shown",
]

#: GLOB pattern of the canonical form the fleet writes (``YYYY-MM-DD HH:MM:SS``). Rows matching
#: it compare correctly as text against ``datetime('now')``; every other row must be parsed.
CANONICAL_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"

_EPOCH_S = (1e9, 1e10)
_EPOCH_MS = (1e12, 1e13)
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_DATE_TIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?P<sep>[ T])(?P<time>\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)"
    r"(?P<zone>Z|z|[+-]\d{2}:?\d{2})?$"
)
_EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: what another tool wrote is echoed into
    errors, logs and alerts, and must not carry an unbounded blob there."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TimestampError(ValueError):
    """A value that is not a timestamp the fleet can read without guessing."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"cannot read timestamp {shown(value)}: {reason}")


def format_sql_ts(dt: datetime) -> str:
    """The canonical stored form: SQLite's ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_iso(dt: datetime) -> str:
    """The shown form: ISO-8601 UTC with ``Z``, whole seconds."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_epoch(value: object, number: float) -> datetime:
    if _EPOCH_S[0] <= number < _EPOCH_S[1]:
        seconds = number
    elif _EPOCH_MS[0] <= number < _EPOCH_MS[1]:
        seconds = number / 1000
    else:
        raise TimestampError(
            value,
            "an epoch number must be seconds (10 digits) or milliseconds (13 digits) between "
            "2001 and 2286; any other magnitude could mean either, or microseconds",
        )
    # timedelta keeps the fraction exactly to the microsecond (fromtimestamp rounds floats).
    return _EPOCH0 + timedelta(seconds=seconds)


def parse_timestamp(value: object) -> datetime:
    """Read ``value`` (str, int or float, as SQLite returns it) as an aware UTC datetime.

    Raises TimestampError naming the value and what is wrong or ambiguous about it.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TimestampError(value, f"a {type(value).__name__} is not a timestamp")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TimestampError(value, "not a finite number")
        return _from_epoch(value, float(value))
    text = value.strip()
    if not text:
        raise TimestampError(value, "empty")
    if _NUMBER.match(text):
        return _from_epoch(value, float(text))
    match = _DATE_TIME.match(text)
    if match is None:
        raise TimestampError(
            value,
            "not YYYY-MM-DD HH:MM:SS, ISO-8601 with T and Z or an offset, or epoch "
            "seconds/milliseconds",
        )
    zone = match["zone"]
    if zone is None and match["sep"] == "T":
        raise TimestampError(
            value,
            "ISO time without Z or an offset is ambiguous: JavaScript reads it as local time, "
            "SQLite as UTC",
        )
    if match["time"].count(":") == 1:
        raise TimestampError(value, "no seconds: write HH:MM:SS")
    normalized = text[:-1] + "+00:00" if zone in ("Z", "z") else text
    if zone and zone not in ("Z", "z") and ":" not in zone:
        normalized = text[: -len(zone)] + zone[:3] + ":" + zone[3:]
    fraction = re.search(r"\.(\d+)", match["time"])
    if fraction and len(fraction[1]) > 6:
        # Python reads at most microseconds; nanoseconds add nothing a lease can use.
        normalized = normalized.replace(fraction[0], "." + fraction[1][:6], 1)
    try:
        parsed = datetime.fromisoformat(normalized)
    except ValueError as exc:
        raise TimestampError(value, f"not a valid date or time ({exc})") from None
    if parsed.tzinfo is None:  # the SQLite form: UTC by SQLite's own convention
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)

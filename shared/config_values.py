"""Checks for config values that would otherwise fail only at run time: URLs, time zones, clock
times, regexes, bind addresses and durations. The section models call them from their field
validators, so ``fleet run`` and ``fleet check-config`` judge a value alike.

Each check returns the value (normalised where noted) or raises ValueError with a message that
names the problem, never the value: a URL can carry a password, and pydantic prints the message
under the key's dotted path. Standard library only; pure.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DURATION_UNITS_S",
    "MAX_DURATION_S",
    "check_bind_address",
    "check_clock_time",
    "check_duration",
    "check_http_url",
    "check_no_nul",
    "check_regexes",
    "check_timezone",
    "duration_unit_s",
]

# The longest duration any key may hold: ten years. Longer ones overflow datetime arithmetic
# (``now - recency_days``) or never happen; a typo of a few zeros is the likely cause.
MAX_DURATION_S = 10 * 365.25 * 86400.0

# Key-name suffix -> seconds per unit: ``interval_s``, ``health_timeout_ms``, ``stale_after_h``,
# ``recency_days``. Keys named so hold durations (the convention the section models follow).
DURATION_UNITS_S = {"_ms": 0.001, "_s": 1.0, "_h": 3600.0, "_days": 86400.0}

_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_http_url(value: str, *, allow_credentials: bool = False) -> str:
    """An absolute ``http://`` or ``https://`` URL with a host and a valid port. Credentials in
    the URL (``user:password@``) are refused unless ``allow_credentials`` (for a URL that is
    itself a secret): URLs appear in logs and errors, tokens go in their own keys."""
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must be a URL without whitespace or control characters")
    # urllib's messages may quote the URL, which can hold a password: never pass them on.
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        raise ValueError("is not a valid URL (check the host's brackets)") from None
    try:
        port = parts.port  # raises on a port out of range or not a number
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https"):
        shown = parts.scheme if parts.scheme.isalnum() else ""
        raise ValueError(
            "must be an http:// or https:// URL" + (f" (not {shown}://)" if shown else "")
        )
    if not hostname:
        raise ValueError("must be an absolute http:// or https:// URL with a host")
    if port == 0:
        raise ValueError("must have a port between 1 and 65535 (or none)")
    if not allow_credentials and (parts.username is not None or parts.password is not None):
        raise ValueError(
            "must not carry credentials (user:password@); put the token in its own key or *_file"
        )
    return value


def check_timezone(value: str) -> str:
    """An IANA time zone name zoneinfo knows (``Europe/Oslo``)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            "is not a time zone this host knows (an IANA name such as Europe/Oslo or UTC)"
        ) from None
    return value


def check_clock_time(value: str) -> str:
    """A wall-clock time ``HH:MM`` from 00:00 to 23:59."""
    if not _CLOCK_RE.fullmatch(value):
        raise ValueError("must be a time HH:MM between 00:00 and 23:59, e.g. 08:00")
    return value


def check_regexes(values: Iterable[str], flags: int = 0) -> None:
    """Each entry compiles as a Python regex (with ``flags``, as its user compiles it)."""
    for i, pattern in enumerate(values):
        try:
            re.compile(pattern, flags)
        except re.error as exc:
            raise ValueError(f"entry [{i}] is not a valid regex: {exc.msg}") from None


def check_bind_address(value: str) -> str:
    """An IP address or a host name to listen on (``127.0.0.1``, ``::1``, ``localhost``)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if (
        len(value) > 253
        or not all(_HOST_LABEL_RE.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError("must be an IP address or a host name to listen on, e.g. 127.0.0.1")
    return value


def duration_unit_s(key: str) -> float | None:
    """Seconds per unit of the duration key ``key`` by its suffix, or None if it is not one."""
    for suffix, unit in DURATION_UNITS_S.items():
        if key.endswith(suffix):
            return unit
    return None


def check_duration(value: float, unit_s: float) -> None:
    """A finite duration of at most ``MAX_DURATION_S`` (``value`` in units of ``unit_s``)."""
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if abs(value) * unit_s > MAX_DURATION_S:
        limit = MAX_DURATION_S / unit_s
        raise ValueError(f"is longer than ten years (at most {limit:.15g})")


def check_no_nul(text: str) -> None:
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")

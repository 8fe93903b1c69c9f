"""The one duration parser: ``"2h"``, ``"90m"``, ``"1h30m"``, ``"500ms"``, ``"168h"``, ``"1d"``
to seconds (Go-style, as litestream writes them, plus days). Pure; standard library only."""

from __future__ import annotations

import re

__all__ = ["parse_duration_s"]

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str, *, positive: bool = False) -> float:
    """Seconds in ``text``; ValueError naming the text when it is not a duration (or, with
    ``positive``, when it is zero)."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact):
        raise ValueError(f"{text!r} is not a duration like 45s, 500ms, 90m, 1h30m or 1d")
    total = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_RE.findall(compact))
    if positive and total <= 0:
        raise ValueError("duration must be positive")
    return total

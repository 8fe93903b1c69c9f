"""The one backoff rule: capped exponential delay with jitter, for failing cycles, follower
restarts, outbox retries, idle senders and SQLITE_BUSY retries alike, so a fleet of daemons
never retries in lockstep. Pure (the jitter source is injected); standard library only."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    failures: int,
    base_s: float,
    cap_s: float,
    rand: Callable[[], float] | None = random.random,
    *,
    jitter: float = 0.2,
) -> float:
    """Delay before retrying after ``failures`` consecutive failures: ``base * 2^(n-1)``,
    capped at ``cap_s`` (never below ``base_s``), times a factor in ``1 ± jitter`` drawn from
    ``rand`` (``rand=None``: no jitter). ``failures <= 0`` gives ``base_s``."""
    if failures <= 0:
        return base_s
    raw = min(max(cap_s, base_s), base_s * (2 ** min(failures - 1, 30)))
    if rand is None or jitter <= 0:
        return float(raw)
    return float(raw * (1.0 - jitter + 2.0 * jitter * rand()))

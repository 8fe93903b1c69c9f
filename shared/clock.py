"""The one clock type: a callable returning Unix seconds, injected wherever time is read so
tests drive it instead of sleeping. Standard library only."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Clock", "MonotonicClock"]

#: wall-clock seconds since the epoch (``time.time``)
Clock = Callable[[], float]
#: monotonic seconds for intervals (``time.monotonic``)
MonotonicClock = Callable[[], float]

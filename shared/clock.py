"""The one clock type: a callable returning Unix seconds, injected wherever time is read so
tests drive it instead of sleeping; the monotonic clock for intervals; and ``boot_id()``, which
says whether a monotonic reading stored by another process is comparable with ours (the
monotonic clock restarts at boot). Standard library only."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["BOOT_ID_ENV", "Clock", "MonotonicClock", "boot_id"]

#: wall-clock seconds since the epoch (``time.time``)
Clock = Callable[[], float]
#: monotonic seconds for intervals (``time.monotonic``)
MonotonicClock = Callable[[], float]


_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
#: set by the system units (``%b``): their ProcSubset=pid hides /proc/sys
BOOT_ID_ENV = "ALAI_FLEET_BOOT_ID"


def boot_id() -> str:
    """This boot's identity: Linux's boot_id (from /proc, else as systemd passed it in
    $ALAI_FLEET_BOOT_ID, same format); elsewhere (macOS) the boot time the clocks imply, to the
    minute. The fallback moves when the wall clock is stepped, which makes readings stored
    before the step look like another boot's: callers then fall back to wall-clock time, as
    before, rather than compare readings of two different clocks."""
    try:
        return _BOOT_ID_FILE.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        pass
    try:
        return str(uuid.UUID(hex=os.environ[BOOT_ID_ENV]))
    except (KeyError, ValueError):
        return f"booted-at:{round((time.time() - time.monotonic()) / 60)}"

"""Heartbeat files: ``<root>/state/heartbeats/<daemon>.json``, written after every successful
cycle, read by ``fleet status`` and the heartbeat daemon's /health.

Plain data and a pure ``assess`` decision (``ok`` = last success younger than 3 expected
intervals, or not yet due). Reading never raises on a corrupt file: it reports it as stale.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_FACTOR",
    "Heartbeat",
    "HeartbeatStatus",
    "assess",
    "process_state",
    "read_heartbeat",
    "read_status",
    "write_heartbeat",
]

STALE_FACTOR = 3.0
#: a scheduled (cron) daemon is late this long after its run was due without a success
CRON_GRACE_S = 3600.0
#: how far the OS's start time of a pid may lie from the heartbeat's process_started_at and
#: still be that process (interpreter start and imports happen in between); beyond it the pid
#: was reused
START_SLACK_S = 120.0
#: when this process started, as near as Python can tell (this module loads at start-up)
PROCESS_STARTED_AT = time.time()
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z: beyond it datetime cannot render


@dataclass
class Heartbeat:
    daemon: str
    host: str
    pid: int
    version: str
    role: str
    last_ok_at: float | None
    last_duration_s: float | None
    cycles: int
    expected_interval_s: float
    started_at: float
    next_due_at: float | None = None  # cron daemons: when the first/next run is due
    process_started_at: float | None = None  # the writing process's start (a reload keeps it)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeartbeatStatus:
    daemon: str
    ok: bool
    last_ok_at: float | None
    age_s: float | None
    expected_interval_s: float | None
    cycles: int
    reason: str


def heartbeat_path(directory: Path, daemon: str) -> Path:
    return directory / f"{daemon}.json"


def write_heartbeat(directory: Path, beat: Heartbeat) -> None:
    from shared.files import atomic_write_json  # not at import: `fleet status` only reads

    atomic_write_json(heartbeat_path(directory, beat.daemon), beat.to_json())


def read_heartbeat(directory: Path, daemon: str) -> Heartbeat | None:
    try:
        raw = json.loads(heartbeat_path(directory, daemon).read_text(encoding="utf-8"))
        fields = {k: raw[k] for k in Heartbeat.__dataclass_fields__ if k in raw}
        beat = Heartbeat(**fields)
    except (OSError, ValueError, TypeError):
        return None

    # A hand-edited or foreign file must read as "no heartbeat", never crash a reader later:
    # numbers must be finite, and timestamps renderable (milliseconds are not seconds).
    def number(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def timestamp(v: object) -> bool:
        return number(v) and 0 <= v < MAX_TIMESTAMP  # type: ignore[operator]

    if not (number(beat.expected_interval_s) and beat.expected_interval_s > 0):
        return None
    if not timestamp(beat.started_at) or not isinstance(beat.cycles, int):
        return None
    if not all(
        v is None or timestamp(v)
        for v in (beat.last_ok_at, beat.next_due_at, beat.process_started_at)
    ):
        return None
    if beat.last_duration_s is not None and not number(beat.last_duration_s):
        return None
    return beat


def read_status(directory: Path, daemon: str, now: float) -> HeartbeatStatus:
    """``assess`` of the daemon's heartbeat file, telling a missing file from a bad one."""
    beat = read_heartbeat(directory, daemon)
    if beat is None and heartbeat_path(directory, daemon).exists():
        return HeartbeatStatus(daemon, False, None, None, None, 0, "unreadable heartbeat file")
    return assess(daemon, beat, now)


def _linux_start_time(pid: int) -> tuple[float, str] | None:
    """(start time as Unix seconds, state letter) from /proc, or None where there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
        with open("/proc/stat", encoding="ascii", errors="replace") as fh:
            btime = next(int(x.split()[1]) for x in fh if x.startswith("btime "))
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return btime + int(fields[19]) / ticks, fields[0]
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def process_state(pid: int, started_at: float | None) -> str:
    """``running``, ``stopped`` (no such process, a zombie, or the pid now belongs to a process
    started at another time than ``started_at``, the heartbeat's ``process_started_at``; None:
    not checked) or ``unknown`` (the OS would not say)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return "unknown"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "stopped"
    except PermissionError:
        pass  # it exists, under another account (a system unit's service user)
    except OSError:
        return "unknown"
    linux = _linux_start_time(pid)
    if linux is not None:
        start, state = linux
        if state in ("Z", "X"):
            return "stopped"
        if started_at is not None and abs(start - started_at) > START_SLACK_S:
            return "stopped"
    return "running"


def assess(daemon: str, beat: Heartbeat | None, now: float) -> HeartbeatStatus:
    """Is ``daemon`` healthy at ``now``? Stale after 3 expected intervals without a success;
    a daemon that has not succeeded yet is healthy until its first run is due (cron) or for
    3 intervals after it started."""
    if beat is None:
        return HeartbeatStatus(daemon, False, None, None, None, 0, "no heartbeat file")
    limit = STALE_FACTOR * beat.expected_interval_s
    if beat.last_ok_at is None:
        if beat.next_due_at is not None:
            ok = now <= beat.next_due_at + CRON_GRACE_S
        else:
            ok = now - beat.started_at <= limit
        return HeartbeatStatus(
            daemon,
            ok,
            None,
            None,
            beat.expected_interval_s,
            beat.cycles,
            "starting" if ok else "never succeeded",
        )
    age = max(0.0, now - beat.last_ok_at)
    if beat.next_due_at is not None and now <= beat.next_due_at + CRON_GRACE_S:
        ok = True
    else:
        ok = age <= limit
    return HeartbeatStatus(
        daemon,
        ok,
        beat.last_ok_at,
        age,
        beat.expected_interval_s,
        beat.cycles,
        "ok" if ok else f"no success for {age:.0f}s",
    )

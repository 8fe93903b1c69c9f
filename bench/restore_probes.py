"""Measuring helpers for bench/restore.py: CPU of a process tree from /proc, rows and staleness
of SQLite copies, and percentile summaries (the request counter is tests/fakes/azurite.py's
CountingProxy). Bench code: never imported by the
fleet, never used by tests.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from pathlib import Path

__all__ = [
    "daemon_counters",
    "newest_row_ts",
    "read_rows",
    "summary",
    "tree_cpu",
]


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of its reaped children) from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / ticks
    reaped = (int(fields[13]) + int(fields[14])) / ticks
    return int(fields[1]), own, reaped


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of ``root`` itself and of its descendants ("children": the live ones
    from /proc plus every reaped one, from the cumulative child times in /proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    reaped: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)], cpu[int(entry)], reaped[int(entry)] = st
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {
        "self": cpu.get(root, 0.0),
        "children": sum(cpu.get(p, 0.0) + reaped.get(p, 0.0) for p in tree if p != root)
        + reaped.get(root, 0.0),
        # children of root that have ended (listings, restores, restarted followers)
        "ended": reaped.get(root, 0.0),
    }


def daemon_counters(log: Path) -> dict[str, float]:
    """restore-loop's listing and restart counters, from its /metrics (the port is in its
    "daemon started" log line); {} when it cannot be read."""
    import json
    import urllib.request

    port = None
    try:
        for raw in log.read_text(errors="replace").splitlines():
            if '"daemon started"' in raw:
                port = json.loads(raw).get("metrics_port")
                break
        if not port:
            return {}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for row in text.splitlines():
        if row.startswith("fleet_restore_replica_listings_total"):
            out["listings"] = out.get("listings", 0.0) + float(row.split()[-1])
        elif row.startswith("fleet_restore_follower_restarts_total{"):
            reason = row.split('reason="', 1)[1].split('"', 1)[0]
            key = f"restarts:{reason}"
            out[key] = out.get(key, 0.0) + float(row.split()[-1])
    return out


def read_rows(path: Path) -> list[tuple[int, float]]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        return [(int(i), float(t)) for i, t in conn.execute("SELECT id, ts FROM t ORDER BY id")]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def newest_row_ts(path: Path) -> float | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT max(ts) FROM t").fetchone()
        return float(row[0]) if row and row[0] is not None else None
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        nan = float("nan")
        return {"n": 0, "min": nan, "median": nan, "p95": nan, "max": nan}
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def wait_for(predicate: object, timeout: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())

"""Measuring helpers for bench/restore.py: a counting TCP forwarder in front of Azurite (one per
client, so the primary's PUTs, restore-loop's LISTs and the raw followers' LISTs are counted
apart; the same request lines Azurite's debug log shows), CPU of a process tree from /proc, rows
and staleness of SQLite copies, and percentile summaries. Bench code: never imported by the
fleet, never used by tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

__all__ = [
    "CountingProxy",
    "newest_row_ts",
    "read_rows",
    "summary",
    "tree_cpu",
]

# An HTTP/1.1 request line (the client side of the stream, split at CRLF).
REQUEST = re.compile(rb"(GET|PUT|HEAD|DELETE|POST) (\S+) HTTP/1\.[01]\Z")


class CountingProxy:
    """Forwards 127.0.0.1:<port> to Azurite and counts the requests passing: LIST (a GET with
    ``comp=list``), PUT, GET (reads), other."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.port}/{account}"

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _count(self, lines: list[bytes]) -> None:
        with self._lock:
            for line in lines:
                m = REQUEST.search(line)  # a body may precede it on the line
                if m is None:
                    continue
                method, target = m.groups()
                if method == b"GET" and b"comp=list" in target:
                    self.counts["LIST"] += 1
                elif method in (b"PUT", b"GET"):
                    self.counts[method.decode()] += 1
                else:
                    self.counts["other"] += 1

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        pending = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    lines = (pending + data).split(b"\r\n")
                    pending = lines.pop()[-8192:]  # a request line is never that long
                    self._count(lines)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of ``root`` itself and of its live descendants ("children"), read
    from /proc (children that already exited are not in it: short-lived calls show up in the
    parent's wait4 figure instead)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents[int(entry)], cpu[int(entry)] = st
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
        "children": sum(cpu.get(p, 0.0) for p in tree if p != root),
    }


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

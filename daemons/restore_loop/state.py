"""restore-loop's own files: the status file the daemon writes and the CLI reads, the fence the
promote command raises, the promotion lock that keeps a second promote out, the promotion
record, and each DB's target paths.

Writes are atomic (temp + fsync + rename, 0600); reads tolerate a missing or torn file by
returning None. This module must never touch a standby copy's contents.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.files import append_jsonl, atomic_write_json, atomic_write_text, ensure_private_dir

__all__ = [
    "FENCE_MAX_AGE_S",
    "Fence",
    "PromotionLocked",
    "RestoreTarget",
    "StatePaths",
    "fsync_dir",
    "pid_alive",
    "process_cmdline",
    "read_fence_file",
    "read_json",
    "read_txid_file",
    "work_dir_for",
]

FENCE_MAX_AGE_S = 3600.0
STATUS_VERSION = 1


@dataclass(frozen=True)
class RestoreTarget:
    """One DB this standby keeps: its tier, where its copy lives, how it is restored."""

    name: str
    tier: str
    path: Path  # the standby copy (the dbs[].path of the litestream restore config)
    mode: str
    follow_interval_s: float
    rpo_target_s: float
    stale_threshold_s: float
    # The replica's "type:location": part of the identity, so a new replica URL restarts the
    # follower instead of following a different replica with the old copy.
    replica: str = ""
    # The primary's sync interval for this DB: changes it committed within that long before it
    # died may never have been uploaded, so it is the resolution of a promote's RPO.
    sync_interval_s: float = 1.0

    @property
    def file(self) -> str:
        return self.path.name


def work_dir_for(standby_dir: Path) -> Path:
    """Temporary restores live beside the copies (same filesystem, so a rename is atomic)."""
    return standby_dir / ".restore-loop"


@dataclass(frozen=True)
class StatePaths:
    dir: Path

    @classmethod
    def under(cls, state_dir: Path) -> StatePaths:
        return cls(state_dir / "restore-loop")

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def fence(self) -> Path:
        return self.dir / "fence.json"

    @property
    def promotions(self) -> Path:
        return self.dir / "promotions.jsonl"

    @property
    def promote_lock(self) -> Path:
        return self.dir / "promote.lock"

    @contextlib.contextmanager
    def promotion_lock(self) -> Iterator[None]:
        """Hold the promotion lock (``flock`` on ``promote.lock``, 0600, holding this pid) for
        the block; PromotionLocked at once when another process holds it. The kernel drops
        the lock when its holder dies, so a crashed promote never leaves it stuck; the file
        itself stays (unlinking a flock file lets two holders lock two different files)."""
        ensure_private_dir(self.dir)
        fd = os.open(self.promote_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PromotionLocked(self.promote_lock, _lock_holder(fd)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # no stale pid for the next reader
        finally:
            os.close(fd)  # releases the flock

    def write_status(self, data: dict[str, Any]) -> None:
        atomic_write_json(self.status, {"version": STATUS_VERSION, **data})

    def read_status(self) -> dict[str, Any] | None:
        return read_json(self.status)

    def write_fence(self, fence: Fence) -> None:
        atomic_write_json(self.fence, fence.to_json())

    def read_fence(self) -> Fence | None:
        return read_fence_file(self.fence)

    def clear_fence(self, fence_id: str) -> None:
        current = self.read_fence()
        if current is not None and current.id == fence_id:
            self.fence.unlink(missing_ok=True)

    def append_promotion(self, record: dict[str, Any]) -> None:
        append_jsonl(self.promotions, record, max_bytes=10_000_000, keep=5)


class PromotionLocked(Exception):
    """Another `fleet restore promote` holds the promotion lock."""

    def __init__(self, path: Path, holder: int | None) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder}" if holder is not None else "a process that has not written its pid"
        super().__init__(
            f"another promotion is running: {path} is held by {who}; wait for it to finish "
            "(`fleet restore status`), then check `fleet role show`"
        )


def _lock_holder(fd: int, wait_s: float = 2.0) -> int | None:
    """The pid the lock's holder wrote, or None. The holder writes it just after it takes
    the lock, so a reader that lost the race by a hair waits (at most ``wait_s``) for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
        except OSError:
            return None
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


@dataclass(frozen=True)
class Fence:
    """'Do not touch these DBs': raised by `fleet restore promote` while it works. Valid while
    the promoting process lives (and at most FENCE_MAX_AGE_S)."""

    id: str
    pid: int
    dbs: tuple[str, ...]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "dbs": list(self.dbs),
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fence:
        return cls(
            id=str(data["id"]),
            pid=int(data["pid"]),
            dbs=tuple(str(d) for d in data["dbs"]),
            created_at=float(data["created_at"]),
        )

    def active(self, now: float) -> bool:
        return now - self.created_at < FENCE_MAX_AGE_S and pid_alive(self.pid)

    def covers(self, db: str) -> bool:
        return db in self.dbs


def read_fence_file(path: Path) -> Fence | None:
    """The fence in ``path``; None when there is none or it is torn."""
    data = read_json(path)
    if data is None:
        return None
    try:
        return Fence.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_txid_file(path: Path) -> int | None:
    """A litestream ``-txid`` sidecar (or ours): 16 hex digits. None if absent or torn."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text or len(text) > 16:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def write_txid_file(path: Path, txid: int) -> None:
    atomic_write_text(path, f"{txid:016x}\n")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_cmdline(pid: int, timeout_s: float = 2.0) -> str | None:
    """The command line of ``pid`` (to check a recorded PID is still our follower)."""
    proc_file = Path(f"/proc/{pid}/cmdline")
    if sys.platform.startswith("linux"):
        try:
            return proc_file.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            return None
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_work_dir(path: Path) -> Path:
    return ensure_private_dir(path)


def now_iso(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def process_started_at() -> float | None:
    """Unix time this process started (Linux: /proc, 10 ms resolution), so an RTO counts the
    CLI's own start (interpreter, imports, config); None where it cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - started_after_boot)

"""The resumable step record and the shared steps of ``fleet dr switchover`` and ``failback``:
stop this host's writer daemons, compare a DB with what its replica restores to, write the
litestream configs of an epoch.

A step record (``<state>/dr/<name>.json``, atomic, 0600) lists the steps done with what each
found, so a command run again skips them and an interrupted one resumes. Nothing here changes a
role or an epoch, and nothing ever writes to a replica.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.config import FleetConfig
from shared.dr_record import DR_DIR
from shared.files import atomic_write_json, read_json
from shared.heartbeats import read_heartbeat
from shared.manifest import DaemonManifest
from shared.roles import Role

__all__ = ["StepRecord", "db_digest", "stop_writers", "write_litestream_configs", "writers"]


class StepRecord:
    """``<state>/dr/<name>.json``: {"key": ..., "steps": {step: {"at": ts, "detail": ...}}}.
    A record made for another ``key`` (another target host) is started afresh."""

    def __init__(self, state_dir: Path, name: str, key: str) -> None:
        self.path = state_dir / DR_DIR / f"{name}.json"
        raw = read_json(self.path)
        same = isinstance(raw, dict) and raw.get("key") == key
        steps = raw.get("steps") if same and isinstance(raw, dict) else None
        self.key = key
        self.steps: dict[str, Any] = dict(steps) if isinstance(steps, dict) else {}

    def done(self, step: str) -> bool:
        return step in self.steps

    def detail(self, step: str) -> Any:
        entry = self.steps.get(step)
        return entry.get("detail") if isinstance(entry, dict) else None

    def mark(self, step: str, detail: Any) -> None:
        self.steps[step] = {"at": time.time(), "detail": detail}
        atomic_write_json(self.path, {"key": self.key, "steps": self.steps})

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def writers(config: FleetConfig, manifests: Sequence[DaemonManifest]) -> list[str]:
    """The daemons that write replicated DBs here: refused on a standby, allowed on a primary."""
    out = []
    for m in manifests:
        section = config.daemon_section(m.section_name)
        if not section.enabled:
            continue
        if m.refuse_reason(section, Role.STANDBY) and not m.refuse_reason(section, Role.PRIMARY):
            out.append(m.name)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


def stop_writers(config: FleetConfig, names: Sequence[str], timeout_s: float = 30.0) -> list[str]:
    """SIGTERM each writer daemon still running here (its pid from its heartbeat file, checked
    to be a fleet process) and wait for it to exit. A clean exit is not restarted by systemd
    (Restart=on-failure) or launchd (SuccessfulExit=false); with the role file already saying
    standby, a restart would refuse anyway. Returns what it stopped ("name (pid N)")."""
    stopped: list[str] = []
    pids: list[int] = []
    for name in names:
        beat = read_heartbeat(config.heartbeat_dir, name)
        if beat is None or beat.pid == os.getpid() or not _alive(beat.pid):
            continue
        cmdline = _cmdline(beat.pid)
        if cmdline and "fleet" not in cmdline:
            continue  # the pid was reused by something else
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(beat.pid, signal.SIGTERM)
            stopped.append(f"{name} (pid {beat.pid})")
            pids.append(beat.pid)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if pids:
            time.sleep(0.1)
    if pids:
        raise RuntimeError(f"writer(s) still running after {timeout_s:g}s: pids {pids}")
    return stopped


def _table_rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    quoted = '"' + table.replace('"', '""') + '"'
    try:
        return [tuple(r) for r in conn.execute(f"SELECT * FROM {quoted} ORDER BY rowid")]
    except sqlite3.OperationalError:  # WITHOUT ROWID
        return sorted((tuple(r) for r in conn.execute(f"SELECT * FROM {quoted}")), key=repr)


def db_digest(path: Path) -> dict[str, Any]:
    """Row counts per table and one SHA-256 over every row of every table (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        digest = hashlib.sha256()
        counts: dict[str, int] = {}
        for name in names:
            rows = _table_rows(conn, name)
            counts[name] = len(rows)
            digest.update(name.encode() + b"\0")
            for row in rows:
                digest.update(repr(row).encode() + b"\n")
        return {"counts": counts, "sha256": digest.hexdigest()}
    finally:
        conn.close()


@dataclass(frozen=True)
class WrittenConfig:
    path: Path
    epoch: int


def write_litestream_configs(
    config: FleetConfig, role: Role, epoch: int, db_dir: Path | None = None
) -> list[Path]:
    """The litestream YAML for ``role`` under ``epoch``'s replica path, where the fleet reads
    it: a primary's replicate configs in ``<root>/config/`` (the units run them), a standby's
    restore config at ``[restore_loop] config_path``."""
    from daemons.restore_loop.catalog import load_tier_table
    from daemons.restore_loop.config import RestoreLoopSection
    from daemons.restore_loop.epoch_paths import with_epoch
    from daemons.restore_loop.litestream_yaml import render_primary, render_standby
    from shared.files import atomic_write_text

    section = config.section(RestoreLoopSection)
    table = with_epoch(load_tier_table(section.databases_file), epoch)
    directory = db_dir or section.standby_dir
    written: list[Path] = []
    if role is Role.PRIMARY:
        for f in render_primary(table, directory):
            if f.name.endswith(".yml"):
                path = config.fleet.root / "config" / f.name
                atomic_write_text(path, f.text)
                written.append(path)
    else:
        standby = render_standby(table, section.tiers, directory)
        atomic_write_text(section.config_path, standby.text)
        written.append(section.config_path)
    return written

"""One scan, end to end: walk the roots, load the registry, ask Mission Control, build the
report. Shared by the nightly daemon and ``fleet blueprint scan``.

Synchronous (the daemon runs it in a worker thread); standard library only. It reads and
never writes: writing the report and sending alerts are the caller's job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from daemons.blueprint_watchdog.approval import TaskLookup, TaskReader
from daemons.blueprint_watchdog.findings import Report, build_report
from daemons.blueprint_watchdog.registry import Registry, RegistryError, load_registry
from daemons.blueprint_watchdog.scanner import scan_tree
from daemons.blueprint_watchdog.schema import DocType
from shared.clock import MonotonicClock

__all__ = ["ScanSettings", "inspect_tree"]


@dataclass(frozen=True)
class ScanSettings:
    roots: tuple[Path, ...]
    doc_types: tuple[DocType, ...]
    registry_file: Path
    mission_control_db: Path | None
    exclude_dirs: tuple[str, ...] = ()
    max_file_bytes: int = 1_000_000
    max_entries: int = 1_000_000
    follow_symlinks: bool = True
    home: str | None = None  # what "~" in the registry means; None: this user's home
    follow_outside_roots: bool = False


def inspect_tree(
    settings: ScanSettings,
    *,
    now: float,
    host: str,
    monotonic: MonotonicClock = time.monotonic,
) -> Report:
    started = monotonic()
    tree = scan_tree(
        settings.roots,
        settings.doc_types,
        exclude_dirs=settings.exclude_dirs,
        max_file_bytes=settings.max_file_bytes,
        max_entries=settings.max_entries,
        follow_symlinks=settings.follow_symlinks,
        follow_outside_roots=settings.follow_outside_roots,
    )
    registry: Registry | RegistryError
    try:
        registry = load_registry(settings.registry_file, home=settings.home)
    except RegistryError as exc:
        registry = exc
    reader = TaskReader(settings.mission_control_db, busy_timeout_ms=2000)
    cache: dict[int, TaskLookup] = {}

    def lookup(task_id: int) -> TaskLookup:
        if task_id not in cache:
            cache[task_id] = reader.task_text(task_id)
        return cache[task_id]

    return build_report(
        scanned=tree.files,
        problems=tree.problems,
        doc_types=settings.doc_types,
        registry=registry,
        registry_path=settings.registry_file,
        lookup_task=lookup,
        now=now,
        duration_s=monotonic() - started,
        host=host,
        roots=settings.roots,
        truncated=tree.truncated,
        walked=tree.entries,
        existing=os.path.exists,
    )

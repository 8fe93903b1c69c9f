"""Copy Mission Control from a SQLite file to Postgres (``fleet mc migrate --from sqlite:PATH
--to postgresql://...``): every task with its lease, then compare counts and a checksum.

The source is opened read-only (``mode=ro``) and read in one statement (one consistent
snapshot); it is never written. The copy goes in batches by id, each its own transaction,
writing only rows that are missing or differ on the target: a run that stopped half-way
continues where it was, and a second run writes nothing. Timestamps in any form the Node tools
write are parsed to ``timestamptz``; a value nobody can read (or text with a NUL character,
which Postgres refuses) stops the migration before anything is written, naming the task ids (fix
or release them first: nothing is guessed). A target row holding a source id but another
``created_at`` is another task (created on Postgres after an earlier run): the migration refuses
before writing anything, naming it, rather than overwrite it. Columns of the SQLite table the
fleet does not know go, per row, into the ``extra`` jsonb column. The checksum is SHA-256 over
every row in id order in one canonical form, computed on each side from what that side holds. It
never prints a password (the URL shown is the redacted one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.mc_postgres import FLEET_COLUMNS, PostgresMissionControl
from shared.sqlite import StoreError, connect_sync, table_columns
from shared.timestamps import TimestampError, parse_timestamp

__all__ = [
    "ConflictingRows",
    "MigrationReport",
    "UnreadableRows",
    "migrate_sqlite_to_postgres",
    "source_path",
]

_TS_COLUMNS = ("created_at", "updated_at", "lease_until")
_COPIED = tuple(c for c in FLEET_COLUMNS if c != "extra")
BATCH = 1000
#: move the id sequence past every id in the source and the table, never back (a concurrent
#: creator's)
_BUMP_IDS = (
    "SELECT setval(seq, GREATEST(%s::bigint, (SELECT max(id) FROM tasks),"
    " coalesce(pg_sequence_last_value(seq), 0), 1))"
    " FROM (SELECT pg_get_serial_sequence('tasks', 'id')::regclass AS seq) AS s"
)

Row = tuple[Any, ...]  # in FLEET_COLUMNS order, timestamps as aware datetimes, extra as dict


class UnreadableRows(StoreError):
    """Source rows Postgres cannot take as they are (a timestamp no parser can read, text
    with a NUL character, which Postgres text and jsonb refuse): nothing was copied."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        super().__init__(f"unreadable timestamps or text in the source, nothing copied: {shown}")


class ConflictingRows(StoreError):
    """Target rows with a copied id that are other tasks (created on Postgres since the last
    run): nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        super().__init__(
            "tasks on the target that are not the source's (created on Postgres since the last"
            f" run?), nothing copied: {shown}; move or renumber them first"
        )


@dataclass
class MigrationReport:
    source: str
    target: str
    tasks: int = 0  # rows in the source
    leases: int = 0  # held leases in the source
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    target_tasks: int = 0
    target_leases: int = 0
    source_checksum: str = ""
    target_checksum: str = ""
    extra_columns: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return (
            self.tasks == self.target_tasks
            and self.leases == self.target_leases
            and self.source_checksum == self.target_checksum
        )

    @property
    def noop(self) -> bool:
        return self.inserted == 0 and self.updated == 0

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.source,
            "to": self.target,
            "tasks": self.tasks,
            "leases": self.leases,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "target_tasks": self.target_tasks,
            "target_leases": self.target_leases,
            "source_checksum": self.source_checksum,
            "target_checksum": self.target_checksum,
            "extra_columns": self.extra_columns,
            "matches": self.matches,
        }


def source_path(value: str) -> Path:
    """``sqlite:PATH`` (or a bare path) -> the path."""
    return Path(value.removeprefix("sqlite:")).expanduser()


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return value


def _read_source(path: Path) -> tuple[list[Row], list[str]]:
    """Every task of the SQLite file, converted; raises UnreadableRows, StoreError."""
    if not path.is_file():
        raise StoreError(f"{path}: no such database file")
    try:
        conn = connect_sync(path, create=False, readonly=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc
    try:
        have = table_columns(conn, "tasks")
        if "id" not in have:
            raise StoreError(f"{path}: no table tasks")
        extras = sorted(c for c in have if c not in FLEET_COLUMNS)
        wanted = [c for c in _COPIED if c in have] + extras
        names = ", ".join(f'"{c}"' for c in wanted)
        # One statement: one consistent snapshot of the whole table.
        raw = conn.execute(f"SELECT {names} FROM tasks ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from exc
    finally:
        conn.close()
    rows: list[Row] = []
    problems: list[str] = []
    for values in raw:
        got = dict(zip(wanted, values, strict=True))
        out: list[Any] = []
        for col in _COPIED:
            value = got.get(col)
            if col in _TS_COLUMNS and value not in (None, ""):
                try:
                    value = parse_timestamp(value)
                except TimestampError as exc:
                    problems.append(f"task {got['id']} {col} {value!r} ({exc.reason})")
            elif col in _TS_COLUMNS:
                value = None
            elif col != "id" and value is not None and not isinstance(value, str):
                # SQLite lets a TEXT column hold numbers or blobs; Postgres text holds text.
                value = (
                    value.decode("utf-8", "backslashreplace")
                    if isinstance(value, bytes)
                    else str(value)
                )
            if isinstance(value, str) and "\x00" in value:
                problems.append(f"task {got['id']} {col} holds a NUL character")
            out.append(value)
        problems.extend(
            f"task {got['id']} {c} holds a NUL character"
            for c in extras
            if isinstance(got[c], str) and "\x00" in got[c]
        )
        extra = {c: _json_value(got[c]) for c in extras}
        out.append(extra or None)
        rows.append(tuple(out))
    if problems:
        raise UnreadableRows(problems)
    return rows, extras


def _canonical(row: Row) -> str:
    def one(value: object) -> object:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return value

    return json.dumps([one(v) for v in row], sort_keys=True, default=str, separators=(",", ":"))


def checksum(rows: Iterable[Row]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(_canonical(row).encode())
        h.update(b"\n")
    return h.hexdigest()


def _held(rows: Sequence[Row]) -> int:
    holder, until = FLEET_COLUMNS.index("lease_holder"), FLEET_COLUMNS.index("lease_until")
    return sum(1 for r in rows if r[holder] and r[until] is not None)


def _target_rows(store: PostgresMissionControl, lo: int | None, hi: int | None) -> list[Row]:
    names = ", ".join(FLEET_COLUMNS)
    if lo is None or hi is None:
        cur = store.conn.execute(f"SELECT {names} FROM tasks ORDER BY id")
    else:
        cur = store.conn.execute(
            f"SELECT {names} FROM tasks WHERE id BETWEEN %s AND %s ORDER BY id", (lo, hi)
        )
    return [tuple(r) for r in cur.fetchall()]


def _write_batch(
    store: PostgresMissionControl, batch: Sequence[Row], report: MigrationReport
) -> None:
    from psycopg.types.json import Jsonb

    have = {r[0]: r for r in _target_rows(store, batch[0][0], batch[-1][0])}
    changed = [
        r for r in batch if have.get(r[0]) is None or _canonical(have[r[0]]) != _canonical(r)
    ]
    if not changed:
        report.unchanged += len(batch)
        return
    cols = ", ".join(FLEET_COLUMNS)
    marks = ", ".join(["%s"] * len(FLEET_COLUMNS))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in FLEET_COLUMNS if c != "id")
    conn = store.conn
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO tasks ({cols}) OVERRIDING SYSTEM VALUE VALUES ({marks})"
            f" ON CONFLICT (id) DO UPDATE SET {updates}",
            [(*r[:-1], Jsonb(r[-1]) if r[-1] is not None else None) for r in changed],
        )
    report.unchanged += len(batch) - len(changed)
    for r in changed:
        if r[0] in have:
            report.updated += 1
        else:
            report.inserted += 1


def _refuse_conflicts(target: PostgresMissionControl, rows: Sequence[Row]) -> None:
    """A target row with a source row's id but another creation time is another task (one a
    host on Postgres created after an earlier run): copying would overwrite it. Raises
    ConflictingRows naming them, before anything is written."""
    created = FLEET_COLUMNS.index("created_at")
    have = dict(
        target._retry(lambda: target.conn.execute("SELECT id, created_at FROM tasks").fetchall())
    )
    problems = [
        f"task {r[0]} (created {_when(have[r[0]])} on the target, {_when(r[created])} in the"
        " source)"
        for r in rows
        if r[0] in have and have[r[0]] != r[created]
    ]
    if problems:
        raise ConflictingRows(problems)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else "with no time"


def migrate_sqlite_to_postgres(
    source: Path,
    target: PostgresMissionControl,
    *,
    batch: int = BATCH,
    progress: Callable[[MigrationReport], None] | None = None,
) -> MigrationReport:
    """Copy (idempotently) and verify; ``target`` is opened (schema created if missing)."""
    rows, extras = _read_source(source)
    report = MigrationReport(str(source), target.shown, extra_columns=extras)
    report.tasks, report.leases = len(rows), _held(rows)
    report.source_checksum = checksum(rows)
    target.open()
    _refuse_conflicts(target, rows)
    # Before copying: a task a host creates on Postgres while this runs, or after it stopped
    # half-way, takes an id past every source id (not one a later batch copies).
    top = max((int(r[0]) for r in rows), default=0)
    if rows:
        target._retry(lambda: target.conn.execute(_BUMP_IDS, (top,)))
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        target._retry(lambda chunk=chunk: _write_batch(target, chunk, report))  # type: ignore[misc]
        if progress is not None:
            progress(report)
    if rows:
        # New tasks created on Postgres must not reuse a copied id.
        target._retry(lambda: target.conn.execute(_BUMP_IDS, (top,)))
    after = target._retry(lambda: _target_rows(target, None, None))
    report.target_tasks, report.target_leases = len(after), _held(after)
    report.target_checksum = checksum(after)
    return report

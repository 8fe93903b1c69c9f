"""Schema contracts for the tables the fleet shares with other tools.

``emails`` (email-agent.js), ``tasks`` (mc.js, the Node hooks, Mehanik) and HiveMind's
``messages`` belong to other programs, which keep writing them in their own layout. The fleet
does not guess that layout: it reads the live one (``PRAGMA table_info``) and checks it against
a ``TableContract``:

- a *required* column missing: the feature cannot work; the daemon refuses to start (exit 78)
  naming the DB, the table and the columns, or a running cycle fails with one #ops alert;
- an *optional* column missing: the feature it feeds is degraded, said once in the log and in
  ``fleet db check`` (and ``fleet email explain``);
- a ``NOT NULL`` column without a default that the fleet does not fill when it inserts a row:
  the insert is refused naming the column, unless the operator gives it a value (for
  ``tasks``: ``[mission_control] task_defaults``).

``PRAGMA schema_version`` changes with every schema change, so a caller re-checks only when it
moved. Pure standard library: manifests import this to declare their contracts.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ColumnInfo",
    "ContractReport",
    "ContractUse",
    "ContractViolation",
    "TableContract",
    "check_contract",
    "read_table_info",
    "schema_cookie",
    "valid_column_name",
]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def valid_column_name(name: str) -> bool:
    """A plain SQL identifier (what a config key may name as a column)."""
    return bool(_IDENTIFIER.match(name))


@dataclass(frozen=True)
class TableContract:
    """What the fleet needs of one shared table.

    ``optional`` maps a column to the feature that degrades without it. ``inserts`` lists the
    columns the fleet fills when it inserts a row (None: it never inserts into this table).
    ``indexes`` are (name, SQL) the fleet recommends for speed; only ``fleet db migrate``
    creates them."""

    db: str  # the file's usual name, for messages: "email-inbox.db"
    table: str
    owner: str  # who owns the table: "email-agent.js"
    required: tuple[str, ...]
    optional: Mapping[str, str] = field(default_factory=dict)
    inserts: tuple[str, ...] | None = None
    indexes: tuple[tuple[str, str], ...] = ()
    #: column -> declaration for ``fleet db migrate`` (default ``TEXT``)
    declarations: Mapping[str, str] = field(default_factory=dict)
    #: what fixes a NOT NULL column the fleet does not fill (said after the column names)
    unfilled_fix: str = "its owner must give each a default"

    def declaration(self, column: str) -> str:
        return self.declarations.get(column, "TEXT")


@dataclass(frozen=True)
class ContractUse:
    """A daemon's use of a contract on this host: the file, who uses it, what it refuses
    without it, and the values an operator configured for columns the fleet does not fill."""

    path: Path
    contract: TableContract
    used_by: str
    defaults: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnInfo:
    """One ``PRAGMA table_info`` row."""

    name: str
    type: str
    notnull: bool
    default: str | None
    pk: int


def read_table_info(conn: sqlite3.Connection, table: str) -> tuple[ColumnInfo, ...]:
    if not valid_column_name(table):
        raise ValueError(f"not a table name: {table!r}")
    return tuple(
        ColumnInfo(str(r[1]), str(r[2] or ""), bool(r[3]), r[4], int(r[5]))
        for r in conn.execute(f"PRAGMA table_info({table})")
    )


def schema_cookie(conn: sqlite3.Connection) -> int:
    """``PRAGMA schema_version``: moves whenever anyone changes the DB's schema."""
    row = conn.execute("PRAGMA schema_version").fetchone()
    return int(row[0]) if row else 0


def _rowid_alias(columns: tuple[ColumnInfo, ...]) -> str | None:
    pks = [c for c in columns if c.pk]
    if len(pks) == 1 and pks[0].type.upper() == "INTEGER":
        return pks[0].name
    return None


@dataclass(frozen=True)
class ContractReport:
    """The live table against its contract."""

    use: ContractUse
    columns: tuple[ColumnInfo, ...]
    missing_required: tuple[str, ...] = ()
    missing_optional: Mapping[str, str] = field(default_factory=dict)
    unfilled: tuple[str, ...] = ()  # NOT NULL, no default, not filled by the fleet or defaults
    unknown_defaults: tuple[str, ...] = ()  # configured defaults naming no column
    missing_indexes: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.columns)

    @property
    def ok(self) -> bool:
        """Nothing here makes the using daemon refuse."""
        return self.present and not self.missing_required and not self.unfilled

    @property
    def names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns)

    @property
    def where(self) -> str:
        return f"{self.use.path} table {self.use.contract.table}"

    def problems(self) -> list[str]:
        """Why the using daemon refuses, one line each, naming DB, table and columns."""
        c = self.use.contract
        if not self.present:
            return [f"{self.use.path}: no table {c.table} (owned by {c.owner})"]
        out = []
        if self.missing_required:
            out.append(
                f"{self.where} lacks required column(s) {', '.join(self.missing_required)} "
                f"({self.use.used_by} cannot work without them; `fleet db migrate` shows the "
                "change)"
            )
        if self.unfilled:
            out.append(
                f"{self.where} has NOT NULL column(s) without default that the fleet does not "
                f"fill: {', '.join(self.unfilled)} ({self.use.contract.unfilled_fix})"
            )
        return out

    def degraded(self) -> list[str]:
        """Features that work without a missing optional column, worse."""
        return [
            f"{self.where} has no column {col}: {feature}"
            for col, feature in sorted(self.missing_optional.items())
        ]

    def notes(self) -> list[str]:
        out = [
            f"task_defaults.{name}: {self.where} has no such column; ignored"
            for name in self.unknown_defaults
        ]
        if self.missing_indexes:
            out.append(
                f"{self.where} lacks recommended index(es) {', '.join(self.missing_indexes)} "
                "(slower queries; `fleet db migrate` adds them)"
            )
        return out

    def migration(self) -> list[str]:
        """The statements ``fleet db migrate`` would run (columns, then indexes). A NOT NULL
        column without default is not among them: only a value (task_defaults) fixes it."""
        if not self.present:
            return []
        c = self.use.contract
        missing = [*self.missing_required, *sorted(self.missing_optional)]
        out = [f"ALTER TABLE {c.table} ADD COLUMN {n} {c.declaration(n)}" for n in missing]
        return out + [sql for name, sql in c.indexes if name in self.missing_indexes]

    def fingerprint(self) -> str:
        """Stable text of what is wrong (an alert's dedup key part)."""
        return ";".join(self.problems())


class ContractViolation(Exception):
    """A shared table the fleet cannot use as it is laid out."""

    def __init__(self, report: ContractReport) -> None:
        self.report = report
        super().__init__("; ".join(report.problems()))


def _index_names(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA index_list({table})")}


def check_contract(conn: sqlite3.Connection, use: ContractUse) -> ContractReport:
    """Read the live table and compare it with ``use.contract`` (nothing is changed)."""
    c = use.contract
    columns = read_table_info(conn, c.table)
    if not columns:
        return ContractReport(use, columns)
    names = {col.name for col in columns}
    missing_required = tuple(n for n in c.required if n not in names)
    missing_optional = {n: f for n, f in c.optional.items() if n not in names}
    unfilled: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    if c.inserts is not None:
        filled = set(c.inserts) | {k for k in use.defaults if k in names}
        alias = _rowid_alias(columns)
        unfilled = tuple(
            col.name
            for col in columns
            if col.notnull and col.default is None and col.name not in filled and col.name != alias
        )
        unknown = tuple(sorted(k for k in use.defaults if k not in names))
    have_indexes = _index_names(conn, c.table)
    missing_indexes = tuple(name for name, _sql in c.indexes if name not in have_indexes)
    return ContractReport(
        use, columns, missing_required, missing_optional, unfilled, unknown, missing_indexes
    )

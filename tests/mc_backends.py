"""Mission Control on either backend for parametrised tests: ``McBackend`` names the store
(``target``: a SQLite path or a Postgres URL, what ``fleet mc --db`` takes), the environment a
``fleet`` subprocess needs to reach it (``env``: the password file for Postgres, or the
variables that select it without ``--db``), and reads leases with a connection of its own.
The ``mc_backend`` fixture (tests/conftest.py) runs a test once per backend."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.clock import Clock
from shared.mission_control import LeaseStore, McTarget, open_store
from shared.timestamps import format_sql_ts
from tests.pg_support import PgDatabase

__all__ = ["McBackend"]


@dataclass
class McBackend:
    name: str  # "sqlite" | "postgres"
    target: str  # for --db
    parent: Path  # a directory the test owns (cwd for subprocesses)
    env: dict[str, str] = field(default_factory=dict)  # reaches the store with --db
    select_env: dict[str, str] = field(default_factory=dict)  # selects it without --db
    pg: PgDatabase | None = None

    @classmethod
    def sqlite(cls, path: Path) -> McBackend:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls("sqlite", str(path), path.parent, {}, {"FLEET_MISSION_CONTROL__DB": str(path)})

    @classmethod
    def postgres(cls, pg: PgDatabase, parent: Path) -> McBackend:
        env = {"ALAI_MC_PASSWORD_FILE": str(pg.password_file)}
        return cls("postgres", pg.url, parent, env, {**env, "ALAI_MC_URL": pg.url}, pg)

    @property
    def mc_target(self) -> McTarget:
        if self.pg is not None:
            return McTarget(url=self.target, password_file=self.pg.password_file)
        return McTarget(path=Path(self.target))

    def store(self, clock: Clock = time.time, *, create: bool = True) -> LeaseStore:
        """An opened store (``with backend.store() as s``)."""
        return open_store(self.mc_target, clock=clock, create=create)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` (``?`` placeholders on both) on a connection of the test's own."""
        if self.pg is None:
            conn = sqlite3.connect(self.target)
            try:
                with conn:
                    return conn.execute(query, params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.pg.dsn, autocommit=True) as pconn:
            cur = pconn.execute(query.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def lease(self, task_id: int) -> tuple[str | None, str | None]:
        """(lease_holder, lease_until) as the canonical ``YYYY-MM-DD HH:MM:SS`` text (SQLite
        stores exactly that; a Postgres timestamptz is formatted to it)."""
        (row,) = self.sql("SELECT lease_holder, lease_until FROM tasks WHERE id = ?", (task_id,))
        until = row[1]
        if until is not None and not isinstance(until, str):
            until = format_sql_ts(until)
        return row[0], until

"""The outbox on either backend for parametrised tests: ``OutboxBackend`` opens a store (a
SQLite file in tmp_path, or a fresh database on the session's real Postgres server) and names
what ``tests.notify_support.rows`` reads (``ref``: the file, or the ``PgDatabase``).

Fixtures, both named ``outbox_backend`` (import one into a test module): ``sqlite_outbox_backend``
(tests/unit: no network) and ``postgres_outbox_backend`` (tests/system/test_notify_postgres.py
runs the unit tests' semantics again through it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from shared.clock import Clock, MonotonicClock
from shared.notify import OutboxStore
from shared.notify.outbox_postgres import PostgresOutbox
from shared.notify.outbox_sqlite import SqliteOutbox
from shared.sections import NotifySection
from tests.pg_support import PgDatabase

__all__ = ["OutboxBackend", "StoreRef", "postgres_outbox_backend", "sqlite_outbox_backend"]

#: what rows()/row_by_key() read: the SQLite file or the Postgres database
StoreRef = Path | PgDatabase


@dataclass
class OutboxBackend:
    name: str  # "sqlite" | "postgres"
    path: Path  # the SQLite file (unused on Postgres)
    pg: PgDatabase | None = None

    @property
    def ref(self) -> StoreRef:
        """What ``rows()``/``row_by_key()`` read."""
        return self.pg if self.pg is not None else self.path

    def settings(self, **notify: Any) -> NotifySection:
        """``[notify]`` selecting this backend (the password as the config loader fills it)."""
        if self.pg is None:
            return NotifySection(outbox_db=self.path, **notify)
        password = self.pg.password_file.read_text().strip()
        return NotifySection(
            outbox_db=self.path,
            url=self.pg.url,
            password_file=self.pg.password_file,
            password=SecretStr(password),
            **notify,
        )

    def store(
        self,
        clock: Clock = time.time,
        mono: MonotonicClock = time.monotonic,
        boot: str | None = None,
    ) -> OutboxStore:
        if self.pg is None:
            return SqliteOutbox(self.path, clock=clock, mono=mono, boot=boot)
        password = self.pg.password_file.read_text().strip()
        return PostgresOutbox(self.pg.url, password=password, clock=clock, mono=mono, boot=boot)

    async def open(
        self,
        clock: Clock = time.time,
        mono: MonotonicClock = time.monotonic,
        boot: str | None = None,
    ) -> OutboxStore:
        return await self.store(clock, mono, boot).open()


@pytest.fixture(name="outbox_backend")
def sqlite_outbox_backend(tmp_path: Path) -> OutboxBackend:
    """The outbox in a SQLite file (the unit tests: no network)."""
    return OutboxBackend("sqlite", tmp_path / "state" / "outbox.db")


@pytest.fixture(name="outbox_backend")
def postgres_outbox_backend(tmp_path: Path, pg_db: PgDatabase) -> OutboxBackend:
    """The outbox on a fresh database of the real Postgres server (tests/system)."""
    return OutboxBackend("postgres", tmp_path / "state" / "outbox.db", pg_db)

"""The Postgres fixture itself: a fresh database per test, and a restart keeps data and port."""

from __future__ import annotations

import psycopg

from tests.pg_support import PgDatabase


def test_fresh_database_survives_restart(pg_db: PgDatabase) -> None:
    with psycopg.connect(pg_db.dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t VALUES (1)")
    pg_db.server.restart()
    with psycopg.connect(pg_db.dsn) as c:
        assert c.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_each_test_gets_an_empty_database(pg_db: PgDatabase) -> None:
    with psycopg.connect(pg_db.dsn) as c:
        tables = c.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
    assert pg_db.password_file.stat().st_mode & 0o077 == 0

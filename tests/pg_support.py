"""A real PostgreSQL server for the tests (Debian ``postgresql``; ``.ci/run`` installs it).

API (small on purpose; the Mission Control and outbox tests both build on it):

- ``PgServer.start_new()``: ``initdb`` in a fresh temp dir, then ``postgres`` listening on
  127.0.0.1 on a free port and on a unix socket in that dir. Runs as the ``postgres`` system
  user (``runuser``) when the tests run as root: ``initdb`` refuses root.
- ``server.create_database() -> str``: a fresh, empty database; returns its name.
- ``server.url(db)``: ``postgresql://fleet@127.0.0.1:PORT/db``, no password in it (what a fleet
  config holds); ``server.write_password_file(path)`` writes the password there, 0600.
- ``server.dsn(db)``: the same with the password, for the test's own psycopg connections.
- ``server.stop(mode)``, ``server.start()``, ``server.restart(mode)``: same port, same data.
- ``server.ensure_running()``: start it if a test left it stopped.
- ``server.destroy()``: stop and delete the temp dir.

Fixtures in tests/conftest.py: ``pg_server`` (session) and ``pg_db`` (a fresh database per test,
yields ``PgDatabase(server, name, url, password_file)``).
The password is a fixed test value; the server listens only on 127.0.0.1 and a 0700 socket dir.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgDatabase", "PgServer", "pg_bin_dir"]

PG_USER = "fleet"
PG_PASSWORD = "test-only-password"  # a fixed fake for a throwaway server on 127.0.0.1
_counter = 0


def pg_bin_dir() -> Path | None:
    """The directory holding ``initdb``/``pg_ctl``/``postgres``, newest Debian version first."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(cand, "initdb"), os.X_OK):
            return Path(cand)
    found = shutil.which("pg_ctl")
    if found:
        real = Path(os.path.realpath(found)).parent
        if (real / "postgres").exists():
            return real
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgDatabase:
    server: PgServer
    name: str
    url: str  # no password: what goes in [mission_control] url
    password_file: Path  # 0600, holds the password

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)


class PgServer:
    def __init__(self, bin_dir: Path, base: Path, port: int, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data_dir = base / "data"
        self.socket_dir = base / "sock"
        self.log_file = base / "postgres.log"
        self.host = "127.0.0.1"
        self.port = port
        self.user = PG_USER
        self.password = PG_PASSWORD
        self.run_as = run_as

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def start_new(cls) -> PgServer:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        base = Path(tempfile.mkdtemp(prefix="pgt"))  # short: socket paths max ~107 bytes
        run_as = "postgres" if os.geteuid() == 0 else None
        server = cls(bin_dir, base, _free_port(), run_as)
        server._initdb()
        for _ in range(5):  # the free port may be taken between probe and bind
            try:
                server.start()
                return server
            except RuntimeError:
                server.port = _free_port()
        server.destroy()
        raise RuntimeError(f"postgres did not start; see {server.log_file}")

    def _cmd(self, *argv: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *argv]
        return list(argv)

    def _initdb(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            import pwd

            ent = pwd.getpwnam(self.run_as)
            for p in (self.base, self.socket_dir, pwfile):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        pwfile.unlink()
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write(
                "\n# tests/pg_support.py\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
                "shared_buffers = 32MB\n"
                "fsync = off\n"  # throwaway: commits survive a server crash, not an OS crash
                "full_page_writes = off\n"
            )

    def start(self) -> None:
        proc = subprocess.run(
            self._cmd(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {self.port}",
                "-w",
                "-t",
                "60",
                "start",
            ),
            capture_output=True,
            text=True,
            timeout=90,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}")
        if not self._wait_ready(30.0):
            raise RuntimeError("postgres started but does not accept connections")

    def stop(self, mode: str = "fast") -> None:
        """``mode``: smart, fast (rolls back open transactions) or immediate (like a crash)."""
        pg_ctl = str(self.bin_dir / "pg_ctl")
        argv = self._cmd(pg_ctl, "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        subprocess.run(argv, capture_output=True, timeout=90)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def ensure_running(self) -> None:
        if not self._wait_ready(0.5):
            self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-t",
                    "2",
                ],
                capture_output=True,
                timeout=10,
            )
            if ok.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    # -- databases -------------------------------------------------------------------------
    def url(self, db: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db}"

    def dsn(self, db: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def write_password_file(self, path: Path) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        os.chmod(path, 0o600)
        return path

    def create_database(self) -> str:
        import psycopg

        global _counter
        _counter += 1
        name = f"t{os.getpid()}_{_counter}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

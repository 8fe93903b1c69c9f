"""Shared fixtures: an isolated fleet root per test, the installed `fleet` script, free ports,
a real NOTIFY_SOCKET (an AF_UNIX datagram socket the test binds), and a real PostgreSQL server
(``pg_server``, one per session; ``pg_db``, a fresh database per test: tests/pg_support.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mc_backends import McBackend
from tests.pg_support import PgDatabase, PgServer, pg_bin_dir

FLEET_BIN = Path(sys.executable).parent / "fleet"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fleet_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def fleet_env(fleet_root: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for `fleet` subprocesses: everything under tmp_path, nothing inherited
    that could point at a real config, a real Slack or a real NOTIFY_SOCKET."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLEET_", "NOTIFY_SOCKET", "WATCHDOG_", "MC_LEASE"))
    }
    env["HOME"] = str(tmp_path / "home")
    env["FLEET_FLEET__ROOT"] = str(fleet_root)
    env["FLEET_FLEET__HOST"] = "testhost"
    env["FLEET_SLACK__BASE_URL"] = "http://127.0.0.1:9/api/"  # nothing listens: never real Slack
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def units_byte_code() -> None:
    """`fleet units install` byte-compiles this venv for the units' -OO (fleet.install): on a
    fresh venv that takes tens of seconds once, so it is done here, outside the commands'
    timeouts (later installs find it done: about a second)."""
    from fleet.install import compile_for_units
    from shared.units import PYTHON_OPTIMIZE

    compile_for_units(Path(sys.prefix), PYTHON_OPTIMIZE, timeout_s=900)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (127.0.0.1, free port). Skipped when the
    server binaries are missing, except under CI (``.ci/run`` installs them), where it fails."""
    if pg_bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing: .ci/run installs the postgresql package")
        pytest.skip("PostgreSQL binaries missing (apt-get install postgresql)")
    server = PgServer.start_new()
    yield server
    server.destroy()


@pytest.fixture
def pg_db(pg_server: PgServer, tmp_path: Path) -> Iterator[PgDatabase]:
    """A fresh, empty database on ``pg_server``; its password in a 0600 file under tmp_path."""
    pg_server.ensure_running()  # a test that stopped it and failed must not break the next
    name = pg_server.create_database()
    pw = pg_server.write_password_file(tmp_path / "pg.password")
    yield PgDatabase(pg_server, name, pg_server.url(name), pw)
    pg_server.ensure_running()
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def mc_backend(request: pytest.FixtureRequest, tmp_path: Path) -> McBackend:
    """Mission Control on each backend in turn: a SQLite file, then a fresh Postgres
    database (tests/mc_backends.py)."""
    if request.param == "sqlite":
        return McBackend.sqlite(tmp_path / "databases" / "mission-control.db")
    return McBackend.postgres(request.getfixturevalue("pg_db"), tmp_path)


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket. A reader thread drains it
    continuously (the kernel queues only a few datagrams, as systemd's manager would drain)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="ns")  # short path: AF_UNIX paths max ~107 bytes
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data)

    def wait_for(self, needle: str, timeout: float = 10.0) -> bool:
        """True once a datagram containing ``needle`` has arrived (bounded by ``timeout``)."""
        return wait_until(lambda: self.count(needle) > 0, timeout=timeout, interval=0.02)

    def count(self, needle: str) -> int:
        with self._lock:
            return sum(1 for m in self.messages if needle in m)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    ns = NotifySocket()
    yield ns
    ns.close()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def run_fleet(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLEET_BIN), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )

"""shared.pq_oneshot: its decoders of binary results (what libpq hands the hook fast path), and
its deadlines against a server on 127.0.0.1 that stops answering (before the login, and after
the query was sent)."""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.pq_oneshot import (
    PqError,
    decode_text,
    decode_timestamptz,
    fetch_one,
    load_libpq,
)


def micros(dt: datetime) -> bytes:
    delta = dt - datetime(2000, 1, 1, tzinfo=UTC)
    return struct.pack("!q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def test_timestamptz_is_microseconds_since_2000_utc() -> None:
    when = datetime(2026, 5, 8, 12, 0, 7, 250_000, tzinfo=UTC)
    assert decode_timestamptz(micros(when)) == when
    before = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert decode_timestamptz(micros(before)) == before
    assert decode_timestamptz(None) is None


@pytest.mark.parametrize(
    ("raw", "words"),
    [(2**63 - 1, "too large"), (-(2**63), "too small")],  # Postgres' +/-infinity
)
def test_infinite_timestamps_are_refused_in_psycopgs_words(raw: int, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        decode_timestamptz(struct.pack("!q", raw))


def test_text_is_utf8() -> None:
    assert decode_text("pi-orch:s\u00e9".encode()) == "pi-orch:s\u00e9"
    assert decode_text(None) is None


class SilentServer:
    """A PostgreSQL server on a unix socket in ``sock_dir`` (libpq's ``host=DIR``: no network
    in a unit test) that stops answering: ``at="startup"`` accepts connections (the kernel's
    backlog) and never reads them (a frozen postmaster);
    ``at="query"`` logs the client in (trust), then reads its query and never answers (a
    backend frozen mid-query). ``queries`` counts the queries received."""

    def __init__(self, sock_dir: Path, at: str) -> None:
        self.sock_dir = sock_dir
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(sock_dir / ".s.PGSQL.5432"))
        self.listener.listen(8)
        self.queries = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        if at == "query":
            self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            size = struct.unpack("!i", conn.recv(4, socket.MSG_WAITALL))[0]
            conn.recv(size - 4, socket.MSG_WAITALL)  # the startup packet
            # AuthenticationOk, BackendKeyData, ReadyForQuery (idle)
            conn.sendall(b"R\0\0\0\x08\0\0\0\0" + b"K\0\0\0\x0c" + bytes(8) + b"Z\0\0\0\x05I")
            if conn.recv(1):  # Parse (then Bind, Describe, Execute, Sync): never answered
                self.queries += 1
            self._done.wait(30)

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.listener.close()

    def params(self) -> dict[str, str]:
        return {
            "host": str(self.sock_dir),
            "port": "5432",
            "dbname": "mc",
            "user": "fleet",
            "password": "not-this-one",
            "sslmode": "disable",
            "gssencmode": "disable",
        }


def libpq() -> ctypes.CDLL:
    lib = load_libpq()
    assert lib is not None, "no libpq: neither the system's nor psycopg-binary's"
    return lib


def test_a_server_that_never_answers_the_startup_packet_is_a_lost_connection_in_time(
    tmp_path: Path,
) -> None:
    server = SilentServer(tmp_path, at="startup")
    try:
        with pytest.raises(PqError) as caught:
            fetch_one(
                libpq(), server.params(), "SELECT 1", [], connect_timeout_s=0.5, query_timeout_s=60
            )
    finally:
        server.close()
    assert str(caught.value) == "connection timeout expired"  # psycopg's words: the click verb's
    assert caught.value.lost


def test_a_query_that_gets_no_answer_is_a_lost_connection_naming_the_deadline(
    tmp_path: Path,
) -> None:
    server = SilentServer(tmp_path, at="query")
    try:
        with pytest.raises(PqError) as caught:
            fetch_one(
                libpq(),
                server.params(),
                "SELECT lease_holder FROM tasks WHERE id = $1",
                ["1"],
                connect_timeout_s=60,
                query_timeout_s=0.5,
            )
        assert server.queries == 1  # it was logged in and sent its query: no connect failure
    finally:
        server.close()
    assert str(caught.value) == "no answer from the server within 0.5 s"
    assert caught.value.lost and "not-this-one" not in str(caught.value)

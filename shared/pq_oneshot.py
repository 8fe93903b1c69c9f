"""One query on one fresh PostgreSQL connection through libpq (ctypes), for the hook verbs'
cold start: ``import psycopg`` alone costs ~6x a bare interpreter start (it registers every
type adapter and pulls in asyncio), far over the 150 ms budget of `fleet mc claim-status`;
libpq itself is the same C library psycopg drives, so URLs, unix sockets, ``sslmode``,
``~/.pgpass`` and the ``PG*`` variables mean what they mean everywhere else.

Loads the system ``libpq.so.5`` (Debian ``libpq5``, which the ``postgresql`` package brings),
else the copy inside the ``psycopg_binary`` wheel; ``load_libpq()`` returns None when neither is
there and the caller then takes the psycopg path. Results come in binary format (no DateStyle
or TimeZone dependence); only ``text`` and ``timestamptz`` columns are decoded. Standard library
only; it never prints, logs or keeps a password, and it never changes anything on the server
(the caller's SQL is one read).
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
import sys
from datetime import UTC, datetime, timedelta

__all__ = ["PqError", "decode_text", "decode_timestamptz", "fetch_one", "load_libpq"]

_CONNECTION_OK = 0
_PGRES_TUPLES_OK = 2
_DIAG_SQLSTATE = ord("C")
_DIAG_MESSAGE_PRIMARY = ord("M")
_SEVERITY = re.compile(r"^(?:DEBUG|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC):\s+")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_lib: ctypes.CDLL | None = None


class PqError(Exception):
    """A connection or query that failed. ``message`` is libpq's (severity stripped, as
    psycopg shows it), ``sqlstate`` the server's code when it sent one, ``lost`` whether the
    connection is gone (refused, reset, server shutting down)."""

    def __init__(self, message: str, sqlstate: str = "", *, lost: bool) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.lost = lost


def _candidates() -> list[str]:
    import glob  # only when the system has no libpq

    names = []
    for entry in sys.path:
        names += sorted(glob.glob(os.path.join(entry, "psycopg_binary.libs", "libpq-*.so*")))
    return names


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    arr = ctypes.POINTER(ctypes.c_char_p)
    for name, res, args in (
        ("PQconnectdbParams", p, [arr, arr, i]),
        ("PQstatus", i, [p]),
        ("PQerrorMessage", s, [p]),
        ("PQexecParams", p, [p, s, i, p, arr, p, p, i]),
        ("PQresultStatus", i, [p]),
        ("PQresultErrorField", s, [p, i]),
        ("PQresultErrorMessage", s, [p]),
        ("PQntuples", i, [p]),
        ("PQnfields", i, [p]),
        ("PQgetisnull", i, [p, i, i]),
        ("PQgetlength", i, [p, i, i]),
        ("PQgetvalue", p, [p, i, i]),
        ("PQclear", None, [p]),
        ("PQfinish", None, [p]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def load_libpq() -> ctypes.CDLL | None:
    """libpq, or None when no copy can be loaded (then use psycopg)."""
    global _lib
    if _lib is None:
        for name in ("libpq.so.5", "libpq.5.dylib", None):
            for path in [name] if name else _candidates():
                try:
                    _lib = _declare(ctypes.CDLL(path))
                    return _lib
                except (OSError, AttributeError):
                    continue
    return _lib


def _clean(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", "replace")
    return _SEVERITY.sub("", text).strip() or "no error details available"


def fetch_one(
    lib: ctypes.CDLL, params: dict[str, str], sql: str, args: list[str]
) -> list[bytes | None] | None:
    """Connect with libpq keyword ``params`` (``dbname`` may be a URL: it is expanded, and
    the other keywords override what it says), run ``sql`` once with text ``args`` ($1...,
    one extended-protocol round trip, unnamed statement), and return its first row's binary
    values (None for NULL), or None when there is no row. Raises PqError."""
    keys = [k.encode() for k in params] + [None]
    values = [v.encode() for v in params.values()] + [None]
    conn = lib.PQconnectdbParams(
        (ctypes.c_char_p * len(keys))(*keys), (ctypes.c_char_p * len(values))(*values), 1
    )
    if not conn:
        raise PqError("connection failed: out of memory", lost=True)
    try:
        if lib.PQstatus(conn) != _CONNECTION_OK:
            raise PqError(f"connection failed: {_clean(lib.PQerrorMessage(conn))}", lost=True)
        encoded = [a.encode() for a in args]
        res = lib.PQexecParams(
            conn,
            sql.encode(),
            len(encoded),
            None,
            (ctypes.c_char_p * max(1, len(encoded)))(*encoded),
            None,
            None,
            1,
        )
        try:
            if lib.PQresultStatus(res) != _PGRES_TUPLES_OK:
                state = (lib.PQresultErrorField(res, _DIAG_SQLSTATE) or b"").decode()
                lost = lib.PQstatus(conn) != _CONNECTION_OK
                primary = lib.PQresultErrorField(res, _DIAG_MESSAGE_PRIMARY) if res else None
                raw = primary or (lib.PQresultErrorMessage(res) if res else None)
                raise PqError(_clean(raw or lib.PQerrorMessage(conn)), state, lost=lost)
            if lib.PQntuples(res) == 0:
                return None
            row: list[bytes | None] = []
            for col in range(lib.PQnfields(res)):
                if lib.PQgetisnull(res, 0, col):
                    row.append(None)
                else:
                    size = lib.PQgetlength(res, 0, col)
                    row.append(ctypes.string_at(lib.PQgetvalue(res, 0, col), size))
            return row
        finally:
            if res:
                lib.PQclear(res)
    finally:
        lib.PQfinish(conn)


def decode_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


def decode_timestamptz(value: bytes | None) -> datetime | None:
    """A binary ``timestamptz`` (microseconds since 2000-01-01 UTC) as an aware UTC datetime;
    ValueError with psycopg's words for +/-infinity and years past 9999."""
    if value is None:
        return None
    (micros,) = struct.unpack("!q", value)
    try:
        return _PG_EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        after = micros > 0
        raise ValueError(
            "timestamp too large (after year 10K)"
            if after
            else "timestamp too small (before year 1)"
        ) from None

"""One query on one fresh PostgreSQL connection through libpq (ctypes), for the hook verbs'
cold start: ``import psycopg`` alone costs ~6x a bare interpreter start (it registers every
type adapter and pulls in asyncio), far over the 150 ms budget of `fleet mc claim-status`;
libpq itself is the same C library psycopg drives, so URLs, unix sockets, ``sslmode``,
``~/.pgpass`` and the ``PG*`` variables mean what they mean everywhere else.

Loads the system ``libpq.so.5`` (Debian ``libpq5``, which the ``postgresql`` package brings),
else the copy inside the ``psycopg_binary`` wheel; ``load_libpq()`` returns None when neither is
there and the caller then takes the psycopg path. Results come in binary format (no DateStyle
or TimeZone dependence); only ``text`` and ``timestamptz`` columns are decoded. Standard library
only; it never prints, logs or keeps a password, never lets libpq print the server's notices
(psycopg drops them too), and it never changes anything on the server (the caller's SQL is one
read). It never waits without a deadline: the connection and the query
run on libpq's asynchronous API, each phase bounded by the caller's timeout (a server that
accepts the connection and never answers, a backend frozen mid-query), so a hook cannot hang.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import struct
import sys
import time
from datetime import UTC, datetime, timedelta

__all__ = [
    "CONNECT_TIMEOUT_TEXT",
    "QUERY_DEADLINE_MARGIN_S",
    "PqError",
    "decode_text",
    "decode_timestamptz",
    "fetch_one",
    "load_libpq",
    "no_answer_text",
]

_CONNECTION_OK, _CONNECTION_BAD = 0, 1
_POLLING_FAILED, _POLLING_READING, _POLLING_WRITING, _POLLING_OK = 0, 1, 2, 3
_PGRES_TUPLES_OK = 2
#: psycopg's words for a connection attempt past its connect_timeout (the click verb's text)
CONNECT_TIMEOUT_TEXT = "connection timeout expired"
#: a statement's deadline on the client is the server's statement_timeout plus this: a live
#: server cancels the statement itself first (and says so); only a server that cannot answer
#: at all (a backend frozen mid-query) reaches it. The click verbs use it too (mc_postgres).
QUERY_DEADLINE_MARGIN_S = 1.0
_DIAG_SQLSTATE = ord("C")
_DIAG_MESSAGE_PRIMARY = ord("M")
_SEVERITY = re.compile(r"^(?:DEBUG|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC):\s+")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_lib: ctypes.CDLL | None = None
#: libpq's notice receiver: drops the server's NOTICE/WARNING messages, as psycopg does with no
#: handler (libpq's default prints them on stderr, which the click verb never shows)
_NoticeReceiver = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_IGNORE_NOTICES = _NoticeReceiver(lambda _arg, _res: None)


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
        ("PQconnectStartParams", p, [arr, arr, i]),
        ("PQconnectPoll", i, [p]),
        ("PQstatus", i, [p]),
        ("PQerrorMessage", s, [p]),
        ("PQsocket", i, [p]),
        ("PQsetnonblocking", i, [p, i]),
        ("PQsendQueryParams", i, [p, s, i, p, arr, p, p, i]),
        ("PQflush", i, [p]),
        ("PQconsumeInput", i, [p]),
        ("PQisBusy", i, [p]),
        ("PQgetResult", p, [p]),
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
        ("PQsetNoticeReceiver", p, [p, _NoticeReceiver, p]),
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


def no_answer_text(timeout_s: float) -> str:
    """What a statement past its client-side deadline fails with, on both paths."""
    return f"no answer from the server within {timeout_s:g} s"


def _clean(raw: bytes | None) -> str:
    text = (raw or b"").decode("utf-8", "replace")
    return _SEVERITY.sub("", text).strip() or "no error details available"


def _wait(lib: ctypes.CDLL, conn: int, events: int, deadline: float, late: str) -> int:
    """Wait until libpq's socket has ``events`` (select.POLLIN/POLLOUT), at most until
    ``deadline`` (time.monotonic()); PqError(``late``, lost) past it. Returns the events seen
    (0 when libpq has no socket any more: its next call reports why, without waiting)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PqError(late, lost=True)
    sock = lib.PQsocket(conn)
    if sock < 0:
        return 0
    poller = select.poll()
    poller.register(sock, events)
    ready = poller.poll(int(remaining * 1000) + 1)
    if not ready:
        raise PqError(late, lost=True)
    return ready[0][1]


def _connect(lib: ctypes.CDLL, params: dict[str, str], timeout_s: float) -> int:
    """A connection (PQconnectStartParams + PQconnectPoll), bounded by ``timeout_s`` whatever
    the server does (refuses, never answers the startup packet); the caller PQfinishes it."""
    keys = [k.encode() for k in params] + [None]
    values = [v.encode() for v in params.values()] + [None]
    conn = lib.PQconnectStartParams(
        (ctypes.c_char_p * len(keys))(*keys), (ctypes.c_char_p * len(values))(*values), 1
    )
    if not conn:
        raise PqError("connection failed: out of memory", lost=True)
    lib.PQsetNoticeReceiver(conn, _IGNORE_NOTICES, None)
    deadline = time.monotonic() + timeout_s
    state = _POLLING_WRITING  # libpq's protocol: behave as if the last poll said "writing"
    try:
        while lib.PQstatus(conn) != _CONNECTION_BAD and state != _POLLING_FAILED:
            if state == _POLLING_OK:
                return int(conn)
            want = select.POLLIN if state == _POLLING_READING else select.POLLOUT
            _wait(lib, conn, want, deadline, CONNECT_TIMEOUT_TEXT)
            state = lib.PQconnectPoll(conn)
        raise PqError(f"connection failed: {_clean(lib.PQerrorMessage(conn))}", lost=True)
    except BaseException:
        lib.PQfinish(conn)
        raise


def _execute(
    lib: ctypes.CDLL, conn: int, sql: str, args: list[str], timeout_s: float
) -> int | None:
    """Send ``sql`` and collect its result as PQexecParams would (the last one, None when
    nothing could be sent), without blocking past ``timeout_s`` on a server that stops
    answering (non-blocking connection: PQfinish cannot block on it either)."""
    late = no_answer_text(timeout_s)
    deadline = time.monotonic() + timeout_s
    encoded = [a.encode() for a in args]
    lib.PQsetnonblocking(conn, 1)
    sent = lib.PQsendQueryParams(
        conn,
        sql.encode(),
        len(encoded),
        None,
        (ctypes.c_char_p * max(1, len(encoded)))(*encoded),
        None,
        None,
        1,
    )
    if not sent:
        return None
    while lib.PQflush(conn) == 1:  # the query did not fit the socket's buffer yet
        seen = _wait(lib, conn, select.POLLIN | select.POLLOUT, deadline, late)
        if seen & select.POLLIN and not lib.PQconsumeInput(conn):
            break  # the connection is gone: PQgetResult reports it without waiting
    last = None
    try:
        while True:
            while lib.PQisBusy(conn):
                if not lib.PQconsumeInput(conn):
                    if lib.PQsocket(conn) >= 0:  # PQgetResult would wait on it: not ours
                        raise PqError(_clean(lib.PQerrorMessage(conn)), lost=True)
                    break  # no socket: PQgetResult returns the error at once
                if lib.PQisBusy(conn):
                    _wait(lib, conn, select.POLLIN, deadline, late)
            res = lib.PQgetResult(conn)
            if not res:
                return last
            if last:
                lib.PQclear(last)
            last = res
    except BaseException:
        if last:
            lib.PQclear(last)
        raise


def fetch_one(
    lib: ctypes.CDLL,
    params: dict[str, str],
    sql: str,
    args: list[str],
    *,
    connect_timeout_s: float,
    query_timeout_s: float,
) -> list[bytes | None] | None:
    """Connect with libpq keyword ``params`` (``dbname`` may be a URL: it is expanded, and
    the other keywords override what it says), run ``sql`` once with text ``args`` ($1...,
    one extended-protocol round trip, unnamed statement), and return its first row's binary
    values (None for NULL), or None when there is no row. The connection may take
    ``connect_timeout_s`` (then PqError ``connection timeout expired``), the query from its
    sending to its last result ``query_timeout_s`` (then PqError ``no answer from the server
    within N s``); both are ``lost``, and the connection is closed. Raises PqError."""
    conn = _connect(lib, params, connect_timeout_s)
    try:
        res = _execute(lib, conn, sql, args, query_timeout_s)
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

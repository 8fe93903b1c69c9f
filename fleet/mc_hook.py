"""The hook fast path of ``fleet mc claim-status`` against Postgres (``--db postgresql://...`` or
``$ALAI_MC_URL``): the same output, exit codes and stderr texts as the click verb in
``fleet.mc_cli`` (which the tests run on both backends), in a fraction of its cold start: no
click, no pydantic, no asyncio, no psycopg. One libpq connection (``shared.pq_oneshot``), one
read, reconnects with backoff for the hook budget (3 s), like ``shared.mc_postgres``. Every wait
has a deadline: a connection 3 s, the query 3 s on the server (statement_timeout) and 4 s on
this side (both as the click verb), so a server or backend that stops answering (frozen VM,
SIGSTOP) fails as a lost store (exit 3) instead of holding the hook.

Anything else (a SQLite target, ``--config``, an option or argument it does not know, no
libpq on the machine) goes to the click verb unchanged, so this path only ever answers
calls the click verb would answer the same way. Standard library and ``shared`` stdlib-only
modules only; it never prints a password (targets are shown redacted) and never writes.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime

from shared.mc_target import (
    CONNECT_OPTIONS,
    URL_ENV,
    McTarget,
    McTargetError,
    is_postgres_url,
    read_password,
)
from shared.pq_oneshot import (
    QUERY_DEADLINE_MARGIN_S,
    PqError,
    decode_text,
    decode_timestamptz,
    fetch_one,
    load_libpq,
)
from shared.timestamps import format_iso

__all__ = ["claim_status_main"]

EX_NO_TASK, EX_STORE, EX_CONFIG = 2, 3, 78  # shared.exitcodes.ExitCode (not imported: enum)
RETRY_S = 3.0  # shared.mission_control.open_store(hook=True)
CONNECT_TIMEOUT_S = 3  # shared.mc_postgres.PostgresMissionControl's default
STATEMENT_TIMEOUT_MS = 3000  # shared.mc_postgres: max(1000, retry_s * 1000) for the hook budget
#: a query's deadline on this side (the click verb's too): past the server's own cancel (which
#: says what the click verb says), it only fires when the server cannot answer at all
QUERY_TIMEOUT_S = STATEMENT_TIMEOUT_MS / 1000 + QUERY_DEADLINE_MARGIN_S
_BIGINT_MAX = 2**63 - 1
_SQL = "SELECT lease_holder, lease_until FROM tasks WHERE id = $1"
#: SQLSTATE classes psycopg raises as OperationalError (its transient kind)
_OPERATIONAL = ("08", "27", "28", "2F", "38", "39", "3B", "40", "53", "54", "55", "57", "58")
_PERMANENT_SQLSTATES = ("28", "3D")  # shared.mc_postgres: retrying cannot change these
_PERMANENT_TEXT = ("fe_sendauth", "authentication failed", "does not exist")


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parse(argv: list[str]) -> tuple[int, bool, str | None] | None:
    """(task id, --json, --db) for the plain forms; None for anything the click verb must
    read (usage errors, --config, --, repeated options)."""
    task: str | None = None
    as_json, db = False, None
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--json" and not as_json:
            as_json = True
        elif word == "--db" and db is None and i + 1 < len(argv):
            db, i = argv[i + 1], i + 1
        elif word.startswith("--db=") and db is None:
            db = word[5:]
        elif task is None and word.isascii() and word.isdigit():
            task = word
        else:
            return None
        i += 1
    if task is None or (db is not None and not db):
        return None
    return int(task), as_json, db


def _url(db: str | None) -> str | None:
    """The Postgres URL the click verb would use, or None when it would not use one."""
    if db is not None:
        return McTarget.from_value(db).url if is_postgres_url(db) else None
    if os.environ.get(URL_ENV, "").strip():
        return McTarget.resolve().url
    return None


def _transient(exc: PqError) -> bool:
    """shared.mc_postgres.is_transient, on libpq's terms."""
    if not (exc.lost or exc.sqlstate.startswith(_OPERATIONAL)):
        return False
    if exc.sqlstate.startswith(_PERMANENT_SQLSTATES):
        return False
    return not any(marker in str(exc) for marker in _PERMANENT_TEXT)


def _missing(shown: str, what: str) -> _Exit:
    """shared.leases.MissingColumns' text, as the click verb prints it."""
    return _Exit(
        EX_STORE,
        f"error: mission control store unavailable: {shown}: {what}; the fleet does not "
        f"change a shared schema on its own: `fleet mc migrate --db {shown}` shows the change,"
        " `--apply` makes it",
    )


def _read(url: str, shown: str, task_id: int) -> tuple[str | None, datetime | None]:
    password = read_password(None) or ""
    lib = load_libpq()
    assert lib is not None
    params = {"dbname": url, **CONNECT_OPTIONS, "client_encoding": "UTF8"}
    params["options"] += f" -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    if password:
        params["password"] = password
    deadline = time.monotonic() + RETRY_S
    failures = 0
    while True:
        try:
            row = fetch_one(
                lib,
                params,
                _SQL,
                [str(task_id)],
                connect_timeout_s=CONNECT_TIMEOUT_S,
                query_timeout_s=QUERY_TIMEOUT_S,
            )
            if row is None:
                raise _Exit(EX_NO_TASK, f"error: no such task: {task_id}")
            try:
                return decode_text(row[0]), decode_timestamptz(row[1])
            except ValueError as exc:  # psycopg: DataError, not transient
                raise PqError(str(exc), "22008", lost=False) from None
        except PqError as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0].strip()
            if exc.sqlstate == "42P01":
                raise _missing(shown, "no table tasks") from None
            if exc.sqlstate == "42703":
                raise _missing(shown, f"table tasks has no column {reason}") from None
            if not _transient(exc):
                raise _Exit(
                    EX_STORE, f"error: mission control store unavailable: {shown}: {reason}"
                ) from None
            from shared.backoff import backoff_delay  # (random) only when retrying

            failures += 1
            delay = backoff_delay(failures, 0.05, 1.0)
            if failures >= 2 and time.monotonic() + delay > deadline:
                raise _Exit(
                    EX_STORE,
                    f"error: mission control store unavailable: {shown}: {reason} (gave up"
                    f" after {failures} attempts)",
                ) from None
            time.sleep(delay)


def _answer(task_id: int, holder: str | None, until: datetime | None, as_json: bool) -> str:
    """shared.mc_postgres' LeaseInfo, printed as fleet.mc_cli.mc_claim_status prints it."""
    import json

    if not holder:
        doc: dict[str, object] = {"id": task_id, "holder": None, "lease_until": None}
        doc["expired"] = False
        return json.dumps(doc) if as_json else "available"
    now = datetime.fromtimestamp(time.time(), UTC).replace(microsecond=0)
    expired = until is None or until <= now
    if as_json:
        shown_until = format_iso(until) if until else None
        doc = {"id": task_id, "holder": holder, "lease_until": shown_until, "expired": expired}
        return json.dumps(doc)
    suffix = " (expired)" if expired else ""
    return f"held by {holder} until {format_iso(until) if until is not None else '-'}{suffix}"


def _click(argv: list[str]) -> int:
    from fleet.cli import main

    main(["mc", "claim-status", *argv])
    return 0


def claim_status_main(argv: list[str]) -> int:
    """``fleet mc claim-status ...`` (argv after the two verb words) -> exit code."""
    parsed = _parse(argv)
    if parsed is None:
        return _click(argv)
    task_id, as_json, db = parsed
    try:
        url = _url(db)
        if url is None or load_libpq() is None:  # SQLite: the click verb (no ctypes, no libpq)
            return _click(argv)
        shown = McTarget(url=url).shown()
        if task_id > _BIGINT_MAX:  # ids are bigint: psycopg finds no row, libpq would error
            raise _Exit(EX_NO_TASK, f"error: no such task: {task_id}")
        holder, until = _read(url, shown, task_id)
        print(_answer(task_id, holder, until, as_json))
        return 0
    except McTargetError as exc:
        return _fail(EX_CONFIG, f"error: {exc}", as_json)
    except _Exit as exc:
        return _fail(exc.code, str(exc), as_json)


def _fail(code: int, message: str, as_json: bool) -> int:
    """shared.cli.die: stderr, or under --json an error object on stdout."""
    if as_json:
        import json

        text = message.removeprefix("error: ").strip()
        print(json.dumps({"error": text, "code": code}))
    else:
        print(message, file=sys.stderr)
    return code

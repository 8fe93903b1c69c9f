"""Structured logging: one JSON object per line, with secrets and addresses redacted.

Every record carries timestamp, level, daemon, host, event and ``logger`` (the module that
logged, or a stdlib logger's name, unless the caller bound one). Where lines go and how they
look is decided once per ``configure_logging``: a log file the process owns (``log_file``,
reopened on SIGHUP and when rotated away: ``shared.logfile``) gets JSON; a stream that is the
journal (``JOURNAL_STREAM`` names its device and inode, as sd_journal(3) says to check) gets
JSON behind a ``<N>`` syslog priority prefix, so ``journalctl -p warning`` works; a terminal
gets structlog's console renderer; any other stream (a pipe, a file) gets JSON.

Email addresses become ``hash_email(addr)``: 8 hex chars of an HMAC-SHA256 keyed with the
host's secret ``<root>/state/log-hash.key`` (0600, made at the first start: without the key a
dictionary of addresses cannot reverse it; ``fleet email hash ADDRESS`` computes it for
grepping); values under secret-looking keys, SecretStr values and bearer/Slack tokens become
``[redacted]``. Redaction is a pure structlog processor; this module must never let a raw
secret or address reach the output, including through stdlib loggers of our libraries.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO

import structlog
from pydantic import SecretStr

from shared.envfile import secret_mode_problem
from shared.logfile import LogFile, LogFileError

__all__ = [
    "HASH_KEY_FILE",
    "HashKeyError",
    "LogFileError",
    "add_logger_name",
    "configure_logging",
    "describe_error",
    "error_leaves",
    "get_logger",
    "hash_email",
    "is_journal_stream",
    "load_hash_key",
    "log_tracebacks",
    "redact_event",
    "redact_text",
    "reopen_log_file",
    "use_hash_key",
]

#: the per-host key's file name under ``<root>/state``
HASH_KEY_FILE = "log-hash.key"
_KEY_BYTES = 32
# Until use_hash_key: a key of this process alone (stable within it, meaningless outside),
# so an address is never logged as a bare, dictionary-reversible sha256.
_hash_key = os.urandom(_KEY_BYTES)

EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
TOKEN_RE = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{6,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+)"
)
SECRET_KEY_RE = re.compile(
    r"(token|secret|password|passwd|authorization|api[_-]?key|cookie|credential)", re.IGNORECASE
)
REDACTED = "[redacted]"
_MAX_DEPTH = 6
#: the longest exception message a log line carries (a message may quote input)
MAX_ERROR_CHARS = 300


class HashKeyError(Exception):
    """The host's log-hash key cannot be used. ``permanent``: the file is there but not
    private or not a key (an operator must fix it); else it could not be read or made (an
    I/O error, which a restart may outlive)."""

    def __init__(self, path: Path, reason: str, *, permanent: bool = False) -> None:
        self.path = path
        self.permanent = permanent
        super().__init__(f"{path}: {reason}")


def hash_email(addr: str) -> str:
    """The loggable stand-in for an email address (trimmed, case-folded): the first 8 hex
    chars of its HMAC-SHA256 under the host's key (``use_hash_key``)."""
    data = addr.strip().lower().encode("utf-8")
    return hmac.new(_hash_key, data, hashlib.sha256).hexdigest()[:8]


def use_hash_key(key: bytes) -> None:
    """Key ``hash_email`` with ``key`` (the host's, from ``load_hash_key``) from now on."""
    global _hash_key
    _hash_key = bytes(key)


def _read_key(path: Path) -> bytes:
    try:
        problem = secret_mode_problem(path)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise HashKeyError(path, f"cannot read it: {reason}") from None
    if problem is not None:
        raise HashKeyError(path, problem.removeprefix(f"{path} "), permanent=True)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise HashKeyError(
            path, f"is not a {_KEY_BYTES}-byte hex key; remove it to make a new one", permanent=True
        )
    return key


def load_hash_key(path: Path, *, create: bool = True) -> bytes | None:
    """The host's log-hash key at ``path``. When missing: made (random, hex, 0600, in a 0700
    directory) if ``create``, else None. Two processes starting at once get the same key (the
    file is linked into place only if absent). HashKeyError when it cannot be used."""
    if path.exists() or not create:
        return _read_key(path) if path.exists() else None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (os.urandom(_KEY_BYTES).hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another daemon made it first: use theirs
        finally:
            temp.unlink(missing_ok=True)
    except OSError as exc:
        raise HashKeyError(path, f"cannot create it: {exc.strerror or exc}") from None
    return _read_key(path)


def redact_text(text: str) -> str:
    text = TOKEN_RE.sub(REDACTED, text)
    return EMAIL_RE.sub(lambda m: hash_email(m.group(0)), text)


def error_leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions that actually happened: ``exc`` itself, or for an ExceptionGroup (a
    failing TaskGroup) every non-group exception inside it, depth first."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in error_leaves(inner)]
    return [exc]


def _one(exc: BaseException) -> str:
    message = str(exc)
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + f"... ({len(message)} chars)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for a log line, each message cut to ``MAX_ERROR_CHARS``; a group is
    described by its leaves joined with ``; `` (never by "unhandled errors in a TaskGroup")."""
    return "; ".join(_one(leaf) for leaf in error_leaves(exc))


def log_tracebacks(log: Any, event: str, exc: BaseException, **fields: Any) -> None:
    """One debug line per leaf of ``exc`` with its traceback (only at debug: a traceback
    quotes source lines and messages, which the error line already summarizes)."""
    for leaf in error_leaves(exc):
        text = "".join(traceback.format_exception(leaf))
        log.debug(event, error=_one(leaf), traceback=text[-8000:], **fields)


def _redact_value(key: str, value: Any, depth: int = 0) -> Any:
    if isinstance(value, SecretStr):
        return REDACTED
    # "token_file" names a path, not a secret; keep it visible.
    if (
        key
        and SECRET_KEY_RE.search(key)
        and value not in (None, "", 0, False)
        and not key.endswith(("_file", "_count", "_total"))
    ):
        return REDACTED
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value("", v, depth + 1) for v in value]
    if isinstance(value, BaseException):
        return redact_text(describe_error(value))
    return value


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact every value of the event dict in place."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


# Modules whose frames are the logging machinery, not the code that logged.
_MACHINERY = ("structlog", "logging")


def _caller_module() -> str:
    """The module of the first frame outside the logging machinery (and this module)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name != __name__ and name.partition(".")[0] not in _MACHINERY:
            return name
        frame = frame.f_back
    return "unknown"


def add_logger_name(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: ``logger`` = a bound ``logger=`` if any, else the stdlib record's
    logger name, else the module the logging call was made in."""
    if "logger" not in event_dict:
        record = event_dict.get("_record")
        event_dict["logger"] = record.name if record is not None else _caller_module()
    return event_dict


def _shared_processors(static: Mapping[str, str]) -> list[Any]:
    def add_static(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for k, v in static.items():
            event_dict.setdefault(k, v)
        return event_dict

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_static,
        structlog.processors.format_exc_info,
        redact_event,
    ]


def is_journal_stream(stream: Any) -> bool:
    """Is ``stream`` the journal? True when ``$JOURNAL_STREAM`` (``<dev>:<ino>``, which systemd
    sets for a service whose stdout or stderr is the journal) names the file ``stream`` is
    open on; a stream redirected elsewhere by the service keeps the variable but not the
    match."""
    dev, sep, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (sep and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


Style = Literal["json", "journal", "console"]
# syslog priorities (sd-daemon(3)'s SD_ERR ... SD_DEBUG) for the journal's line prefix
_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


class _Output:
    """Where this process's log lines go and how they look. One object for the process's
    life, read at each line, so loggers bound before a reconfiguration (SIGHUP) follow it."""

    def __init__(self) -> None:
        self.stream: Any = sys.stdout
        self.file: LogFile | None = None
        self.style: Style = "json"
        self._json = structlog.processors.JSONRenderer(sort_keys=False)
        self._console = structlog.dev.ConsoleRenderer(colors=False)

    def use(self, stream: Any, log_file: Path | None) -> None:
        """Write to ``log_file`` (opened now: LogFileError leaves everything as it was), or
        to ``stream`` (a LogFile passed as the stream is owned like one opened here)."""
        owned: LogFile | None = stream if isinstance(stream, LogFile) else None
        if log_file is not None:
            same = self.file is not None and self.file.path == log_file
            owned = self.file if same else LogFile(log_file)
        old, self.file = self.file, owned
        self.stream = owned if owned is not None else stream
        if old is not None and old is not owned:
            old.close()
        if owned is not None:
            self.style = "json"
        elif is_journal_stream(stream):
            self.style = "journal"
        elif _isatty(stream):
            self.style = "console"
            # https://no-color.org: any non-empty NO_COLOR turns colours off
            colors = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
            self._console = structlog.dev.ConsoleRenderer(colors=colors)
        else:
            self.style = "json"

    def render(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        """The last processor: the event as this output's line (no newline)."""
        if self.style == "console":
            return str(self._console(logger, method, event_dict))
        priority = _PRIORITY.get(str(event_dict.get("level", "")), 6)
        line = str(self._json(logger, method, event_dict))
        return f"<{priority}>{line}" if self.style == "journal" else line

    def write_line(self, line: str) -> None:
        stream = self.stream
        stream.write(line + "\n")
        stream.flush()


_OUTPUT = _Output()


class _LineLogger:
    """structlog's wrapped logger: each rendered event is one line on the output."""

    def msg(self, message: str) -> None:
        _OUTPUT.write_line(message)

    log = debug = info = warn = warning = error = err = critical = fatal = exception = msg


class _LineHandler(logging.Handler):
    """The stdlib side: library records, rendered like ours, on the same output."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _OUTPUT.write_line(self.format(record))
        except Exception:
            self.handleError(record)


def reopen_log_file() -> bool:
    """Open the log file again (its path may name a new file after a rotation): the SIGHUP
    hook. False when logging goes to a stream, or the file cannot be opened (the open one is
    kept)."""
    return _OUTPUT.file.reopen() if _OUTPUT.file is not None else False


def configure_logging(
    *,
    host: str,
    level: str = "info",
    daemon: str = "fleet",
    stream: TextIO | None = None,
    log_file: Path | None = None,
) -> None:
    """Send structlog and stdlib logging, redacted, to ``log_file`` (appended to, reopened
    when rotated) or else ``stream`` (stdout), in the style that place wants (module doc).
    LogFileError, with nothing changed, when ``log_file`` cannot be opened."""
    _OUTPUT.use(stream or sys.stdout, log_file)
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    static = {"host": host, "daemon": daemon}
    shared = _shared_processors(static)
    structlog.configure(
        processors=[*shared, _OUTPUT.render],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: _LineLogger(),
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _OUTPUT.render,
            ],
            foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))
    # Library chatter (apscheduler job runs, aiohttp access logs) stays below our own.
    for noisy in ("apscheduler", "aiohttp.access", "slack_sdk", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(**bound: Any) -> Any:
    """A logger with ``bound`` fields; ``logger=NAME`` names the component instead of the
    calling module."""
    return structlog.get_logger().bind(**bound)

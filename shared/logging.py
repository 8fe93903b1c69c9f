"""Structured JSON logging: one object per line on stdout, with secrets and addresses redacted.

Every record carries timestamp, level, daemon, host and event. Email addresses become
``sha256(addr)[:8]``; values under secret-looking keys, SecretStr values and bearer/Slack tokens
become ``[redacted]``. Redaction is a pure structlog processor; this module must never let a
raw secret or address reach stdout, including through stdlib loggers of our libraries.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr

__all__ = ["configure_logging", "get_logger", "hash_email", "redact_event", "redact_text"]

EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
TOKEN_RE = re.compile(
    r"(xox[abposr]-[A-Za-z0-9-]{6,}|Bearer\s+[A-Za-z0-9._~+/=-]{8,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+)"
)
SECRET_KEY_RE = re.compile(
    r"(token|secret|password|passwd|authorization|api[_-]?key|cookie|credential)", re.IGNORECASE
)
REDACTED = "[redacted]"
_MAX_DEPTH = 6


def hash_email(addr: str) -> str:
    """The loggable stand-in for an email address: first 8 hex chars of its sha256."""
    return hashlib.sha256(addr.strip().lower().encode("utf-8")).hexdigest()[:8]


def redact_text(text: str) -> str:
    text = TOKEN_RE.sub(REDACTED, text)
    return EMAIL_RE.sub(lambda m: hash_email(m.group(0)), text)


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
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact every value of the event dict in place."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
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
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_static,
        structlog.processors.format_exc_info,
        redact_event,
    ]


def configure_logging(
    *, host: str, level: str = "info", daemon: str = "fleet", stream: TextIO | None = None
) -> None:
    """Send structlog and stdlib logging as redacted JSON lines to ``stream`` (stdout)."""
    out = stream or sys.stdout
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    static = {"host": host, "daemon": daemon}
    shared = _shared_processors(static)
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
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
    return structlog.get_logger().bind(**bound)

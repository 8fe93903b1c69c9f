"""The tier table (``databases_file``): which DBs exist, their tier and retention class, and where
their replicas live. Parsing is pure (``parse_tier_table`` over a dict); ``load_tier_table`` only
adds the file read. Errors name their dotted path. This module must never touch a database.
"""

from __future__ import annotations

import math
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemons.restore_loop.config import KNOWN_TIERS
from shared.durations import parse_duration_s

__all__ = [
    "CatalogError",
    "DatabaseEntry",
    "ReplicaSpec",
    "RetentionClass",
    "TierTable",
    "load_tier_table",
    "parse_tier_table",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REPLICA_TYPES = ("abs", "file", "s3", "gs", "sftp", "webdav", "nats", "oss")


class CatalogError(Exception):
    """The tier table is invalid. ``errors`` holds ``(dotted_path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "") -> None:
        self.errors = errors
        self.source = source
        head = f"invalid tier table ({source})" if source else "invalid tier table"
        super().__init__("\n".join([head, *(f"  {p}: {m}" for p, m in errors)]))


def go_duration_s(text: str) -> float:
    """``text`` in seconds when litestream (Go's ``time.ParseDuration``) accepts it: the fleet's
    duration parser, minus what Go refuses (days, upper case, inner spaces)."""
    compact = text.strip()
    if compact.lower() != compact or " " in compact or "d" in compact:
        raise ValueError(f"{text!r} is not a duration like 1s, 500ms or 168h")
    try:
        return parse_duration_s(compact)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 1s, 500ms or 168h") from None


@dataclass(frozen=True)
class RetentionClass:
    """One `litestream replicate` process on the primary: a tier, a retention, a sync interval."""

    name: str
    tier: str
    retention: str
    sync_interval: str


@dataclass(frozen=True)
class ReplicaSpec:
    """Where replicas live; string values may be ``${ENV}`` references (never literal keys)."""

    type: str
    bucket: str = ""
    path_prefix: str = ""
    endpoint: str = ""
    account_name: str = ""
    account_key: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def replica_path(self, replica_name: str) -> str:
        prefix = self.path_prefix.rstrip("/")
        return f"{prefix}/{replica_name}" if prefix else replica_name


@dataclass(frozen=True)
class DatabaseEntry:
    name: str  # the file is <name>.db
    klass: str
    tier: str
    sync_interval: str
    retention: str
    size: str = ""
    writes: str = ""
    purpose: str = ""
    follow_interval_s: float | None = None
    mode: str | None = None
    replica_name: str = ""

    @property
    def file(self) -> str:
        return f"{self.name}.db"


@dataclass(frozen=True)
class TierTable:
    classes: dict[str, RetentionClass]
    replica: ReplicaSpec
    databases: tuple[DatabaseEntry, ...]

    def by_file(self) -> dict[str, DatabaseEntry]:
        return {db.file: db for db in self.databases}

    def in_tiers(self, tiers: list[str] | tuple[str, ...]) -> list[DatabaseEntry]:
        return [db for db in self.databases if db.tier in tiers]


def _str(value: Any, path: str, errors: list[tuple[str, str]], *, required: bool = True) -> str:
    if value is None:
        if required:
            errors.append((path, "required"))
        return ""
    if not isinstance(value, str):
        errors.append((path, f"must be a string, got {type(value).__name__}"))
        return ""
    return value


def _duration(value: Any, path: str, errors: list[tuple[str, str]]) -> str:
    text = _str(value, path, errors)
    if text:
        try:
            if go_duration_s(text) <= 0:
                errors.append((path, "must be > 0"))
        except ValueError as exc:
            errors.append((path, str(exc)))
    return text


def parse_tier_table(data: dict[str, Any], source: str = "") -> TierTable:
    """Validate the parsed TOML of a tier table; raise CatalogError naming every bad key."""
    errors: list[tuple[str, str]] = []
    known_top = {"classes", "replica", "databases"}
    for key in data:
        if key not in known_top:
            errors.append((key, f"unknown key; expected one of {sorted(known_top)}"))

    classes: dict[str, RetentionClass] = {}
    raw_classes = data.get("classes")
    if not isinstance(raw_classes, dict) or not raw_classes:
        errors.append(("classes", "required: a table of retention classes"))
        raw_classes = {}
    for cname, body in raw_classes.items():
        path = f"classes.{cname}"
        if not isinstance(body, dict):
            errors.append((path, "must be a table"))
            continue
        for key in body:
            if key not in ("tier", "retention", "sync_interval"):
                errors.append((f"{path}.{key}", "unknown key"))
        tier = _str(body.get("tier"), f"{path}.tier", errors)
        if tier and tier not in KNOWN_TIERS:
            errors.append((f"{path}.tier", f"must be one of {list(KNOWN_TIERS)}"))
        classes[cname] = RetentionClass(
            name=cname,
            tier=tier,
            retention=_duration(body.get("retention"), f"{path}.retention", errors),
            sync_interval=_duration(body.get("sync_interval"), f"{path}.sync_interval", errors),
        )

    raw_replica = data.get("replica")
    replica = ReplicaSpec(type="file")
    if not isinstance(raw_replica, dict):
        errors.append(("replica", "required: a table describing where replicas live"))
    else:
        values = {str(k): v for k, v in raw_replica.items()}
        rtype = _str(values.pop("type", None), "replica.type", errors)
        if rtype and rtype not in REPLICA_TYPES:
            errors.append(("replica.type", f"must be one of {list(REPLICA_TYPES)}"))
        fields: dict[str, str] = {}
        for key in ("bucket", "path_prefix", "endpoint", "account_name", "account_key"):
            fields[key] = _str(values.pop(key, None), f"replica.{key}", errors, required=False)
        extra = {k: _str(v, f"replica.{k}", errors) for k, v in values.items()}
        if rtype == "file" and not fields["path_prefix"]:
            errors.append(("replica.path_prefix", "required for a file replica (a directory)"))
        if rtype not in ("file", "") and not fields["bucket"]:
            errors.append(("replica.bucket", f"required for a {rtype} replica"))
        replica = ReplicaSpec(type=rtype or "file", extra=extra, **fields)

    databases: list[DatabaseEntry] = []
    raw_dbs = data.get("databases")
    if not isinstance(raw_dbs, list) or not raw_dbs:
        errors.append(("databases", "required: an array of [[databases]] tables"))
        raw_dbs = []
    seen: dict[str, int] = {}
    allowed = {
        "name",
        "class",
        "size",
        "writes",
        "purpose",
        "note",
        "sync_interval",
        "follow_interval_s",
        "mode",
        "replica_name",
    }
    for index, body in enumerate(raw_dbs):
        path = f"databases[{index}]"
        if not isinstance(body, dict):
            errors.append((path, "must be a table"))
            continue
        for key in body:
            if key not in allowed:
                errors.append((f"{path}.{key}", "unknown key"))
        name = _str(body.get("name"), f"{path}.name", errors)
        if name.endswith(".db"):
            name = name[:-3]
        if name and not _NAME_RE.match(name):
            errors.append((f"{path}.name", "use letters, digits, '.', '_' and '-' only"))
        if name in seen:
            errors.append((f"{path}.name", f"duplicate of databases[{seen[name]}]"))
        seen.setdefault(name, index)
        cname = _str(body.get("class"), f"{path}.class", errors)
        klass = classes.get(cname)
        if cname and klass is None:
            errors.append((f"{path}.class", f"unknown class {cname!r}; known: {sorted(classes)}"))
        sync = body.get("sync_interval")
        sync_text = (
            _duration(sync, f"{path}.sync_interval", errors)
            if sync is not None
            else (klass.sync_interval if klass else "")
        )
        follow = body.get("follow_interval_s")
        if follow is not None and (
            not isinstance(follow, int | float)
            or isinstance(follow, bool)
            or not math.isfinite(follow)
            or follow <= 0
        ):
            errors.append((f"{path}.follow_interval_s", "must be a number > 0"))
            follow = None
        mode = body.get("mode")
        if mode is not None and mode not in ("follow", "snapshot"):
            errors.append((f"{path}.mode", "must be 'follow' or 'snapshot'"))
            mode = None
        replica_name = _str(
            body.get("replica_name"), f"{path}.replica_name", errors, required=False
        )
        databases.append(
            DatabaseEntry(
                name=name,
                klass=cname,
                tier=klass.tier if klass else "",
                sync_interval=sync_text,
                retention=klass.retention if klass else "",
                size=_str(body.get("size"), f"{path}.size", errors, required=False),
                writes=_str(body.get("writes"), f"{path}.writes", errors, required=False),
                purpose=_str(body.get("purpose"), f"{path}.purpose", errors, required=False),
                follow_interval_s=float(follow) if follow is not None else None,
                mode=mode,
                replica_name=replica_name or name,
            )
        )
    if errors:
        raise CatalogError(errors, source)
    return TierTable(classes=classes, replica=replica, databases=tuple(databases))


def load_tier_table(path: Path) -> TierTable:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CatalogError(
            [
                (
                    "<file>",
                    f"tier table not found: {path} (start from the example: "
                    f"fleet litestream tables-example > {shlex.quote(str(path))})",
                )
            ],
            str(path),
        ) from None
    except OSError as exc:
        raise CatalogError([("<file>", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError([("<file>", f"not valid TOML: {exc}")], str(path)) from None
    return parse_tier_table(data, str(path))

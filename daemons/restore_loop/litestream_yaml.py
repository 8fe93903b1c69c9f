"""Litestream 0.5 YAML: read the DBs a restore config names, lint a config for keys 0.5 silently
ignores, and render the configs for both hosts from the tier table.

Pure text in, text out (plus one file read in ``read_restore_config``). Secrets stay ``${ENV}``
references: rendering never expands them and linting flags literal ones. It must never write a
file or start litestream.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemons.restore_loop.catalog import DatabaseEntry, ReplicaSpec, TierTable

__all__ = [
    "ConfiguredDB",
    "Finding",
    "GeneratedFile",
    "LitestreamConfigError",
    "lint_config",
    "parse_restore_config",
    "read_restore_config",
    "render_primary",
    "render_standby",
]

# Keys litestream 0.5 reads (cmd/litestream Config, DBConfig, ReplicaConfig + ReplicaSettings).
_REPLICA_SETTINGS = {
    "sync-interval",
    "validation-interval",
    "access-key-id",
    "secret-access-key",
    "region",
    "bucket",
    "endpoint",
    "force-path-style",
    "sign-payload",
    "require-content-md5",
    "skip-verify",
    "part-size",
    "concurrency",
    "account-name",
    "account-key",
    "host",
    "user",
    "password",
    "key-path",
    "concurrent-writes",
    "host-key",
    "webdav-url",
    "webdav-username",
    "webdav-password",
    "jwt",
    "seed",
    "creds",
    "nkey",
    "username",
    "token",
    "tls",
    "root-cas",
    "client-cert",
    "client-key",
    "max-reconnects",
    "reconnect-wait",
    "timeout",
    "age",
}
TOP_KEYS = _REPLICA_SETTINGS | {
    "addr",
    "levels",
    "snapshot",
    "l0-retention",
    "l0-retention-check-interval",
    "dbs",
    "exec",
    "logging",
    "mcp-addr",
    "shutdown-sync-timeout",
    "shutdown-sync-interval",
}
DB_KEYS = {
    "path",
    "dir",
    "pattern",
    "recursive",
    "watch",
    "meta-path",
    "monitor-interval",
    "checkpoint-interval",
    "busy-timeout",
    "min-checkpoint-page-count",
    "truncate-page-n",
    "replica",
    "replicas",
}
REPLICA_KEYS = _REPLICA_SETTINGS | {"type", "name", "path", "url"}
SECRET_KEYS = {
    "account-key",
    "secret-access-key",
    "password",
    "webdav-password",
    "token",
    "jwt",
    "seed",
    "nkey",
}
# Keys of 0.3/0.4 that 0.5 drops without a word, with what to do instead.
_OLD_KEY_HINTS = {
    "retention": "0.3/0.4 per-replica retention; 0.5 has only the global snapshot.retention "
    "(one config, i.e. one replicate process, per retention class)",
    "retention-check-interval": "0.3/0.4 key; 0.5 prunes on its own schedule",
    "snapshot-interval": "0.3/0.4 per-replica key; 0.5 uses the global snapshot.interval",
    "max-checkpoint-page-count": "0.3/0.4 key; 0.5 has truncate-page-n",
    "generation": "0.3/0.4 generations do not exist in 0.5 (LTX files)",
}


class LitestreamConfigError(Exception):
    """A litestream config that cannot be used: unreadable, not YAML, or without usable dbs."""


@dataclass(frozen=True)
class ConfiguredDB:
    """One ``dbs[]`` entry of a restore config: the local (standby) path and its replica."""

    path: Path
    replica_type: str
    replica_location: str

    @property
    def file(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Finding:
    path: str
    severity: str  # "error": litestream 0.5 refuses or loses data; "warning": ignored or unsafe
    message: str


@dataclass(frozen=True)
class GeneratedFile:
    name: str
    text: str
    databases: tuple[DatabaseEntry, ...]
    retention_class: str = ""


def _expand_path(raw: str) -> Path:
    return Path(os.path.expanduser(raw))


def _replica_of(entry: dict[str, Any]) -> dict[str, Any] | None:
    replica = entry.get("replica")
    if isinstance(replica, dict):
        return replica
    replicas = entry.get("replicas")
    if isinstance(replicas, list) and len(replicas) == 1 and isinstance(replicas[0], dict):
        return replicas[0]
    return None


def parse_restore_config(text: str, source: str = "") -> list[ConfiguredDB]:
    """The DBs of a litestream 0.5 config, each with its one replica. Entries 0.5 would reject
    (no replica, several replicas, a ``dir`` pattern) raise LitestreamConfigError."""
    where = f" ({source})" if source else ""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LitestreamConfigError(f"litestream config{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("dbs"), list):
        raise LitestreamConfigError(f"litestream config{where} has no `dbs:` list")
    out: list[ConfiguredDB] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for index, entry in enumerate(data["dbs"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            problems.append(f"dbs[{index}]: needs a `path:` (dir patterns are not restorable)")
            continue
        path = _expand_path(entry["path"])
        replica = _replica_of(entry)
        if replica is None:
            problems.append(f"dbs[{entry['path']}]: needs exactly one `replica:`")
            continue
        if path in seen:
            problems.append(f"dbs[{entry['path']}]: listed twice")
            continue
        seen.add(path)
        rtype = str(replica.get("type") or "")
        location = str(replica.get("url") or replica.get("path") or "")
        if not rtype and "://" in location:
            rtype = location.split("://", 1)[0]
        out.append(ConfiguredDB(path=path, replica_type=rtype or "file", replica_location=location))
    if problems:
        raise LitestreamConfigError(
            f"litestream config{where}: "
            + "; ".join(problems[:5])
            + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    return out


def read_restore_config(path: Path) -> list[ConfiguredDB]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LitestreamConfigError(
            f"litestream config not found: {path} "
            "(generate it with `fleet litestream config --role standby --out DIR`)"
        ) from None
    except OSError as exc:
        raise LitestreamConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_restore_config(text, str(path))


# lint ----------------------------------------------------------------------------------------
def _unknown(keys: Any, known: set[str], path: str) -> list[Finding]:
    findings = []
    for key in keys:
        if key in known:
            continue
        hint = _OLD_KEY_HINTS.get(str(key))
        message = (
            f"ignored by litestream 0.5: {hint}"
            if hint
            else "unknown key, ignored by litestream 0.5"
        )
        findings.append(Finding(f"{path}.{key}" if path else str(key), "warning", message))
    return findings


def _lint_replica(replica: Any, path: str) -> list[Finding]:
    if not isinstance(replica, dict):
        return [Finding(path, "error", "must be a mapping")]
    findings = _unknown(replica, REPLICA_KEYS, path)
    if "name" in replica:
        findings.append(
            Finding(f"{path}.name", "warning", "deprecated in 0.5 (one replica per DB)")
        )
    for key in sorted(SECRET_KEYS & set(replica)):
        value = replica[key]
        if isinstance(value, str) and value and "$" not in value:
            findings.append(
                Finding(f"{path}.{key}", "warning", "secret in plain text; use a ${ENV} reference")
            )
    return findings


def lint_config(text: str) -> list[Finding]:
    """Findings for a litestream config: keys 0.5 ignores (0.3/0.4 retention and friends),
    multi-replica entries (0.5 refuses them), the deprecated ``replicas:`` form, literal secrets."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [Finding("<file>", "error", f"not valid YAML: {exc}")]
    if not isinstance(data, dict):
        return [Finding("<file>", "error", "top level must be a mapping with `dbs:`")]
    findings = _unknown(data, TOP_KEYS, "")
    for key in sorted(SECRET_KEYS & set(data)):
        value = data[key]
        if isinstance(value, str) and value and "$" not in value:
            findings.append(Finding(key, "warning", "secret in plain text; use a ${ENV} reference"))
    dbs = data.get("dbs")
    if not isinstance(dbs, list):
        findings.append(Finding("dbs", "error", "missing: no databases are configured"))
        return findings
    for index, entry in enumerate(dbs):
        if not isinstance(entry, dict):
            findings.append(Finding(f"dbs[{index}]", "error", "must be a mapping"))
            continue
        ident = entry.get("path") or entry.get("dir") or index
        path = f"dbs[{ident}]"
        findings += _unknown(entry, DB_KEYS, path)
        has_one = "replica" in entry
        many = entry.get("replicas")
        if has_one and many is not None:
            findings.append(
                Finding(path, "error", "both `replica` and `replicas`: litestream 0.5 refuses this")
            )
        if isinstance(many, list):
            if len(many) > 1:
                findings.append(
                    Finding(
                        f"{path}.replicas",
                        "error",
                        f"{len(many)} replicas: litestream 0.5 supports exactly one per DB "
                        "and refuses to start",
                    )
                )
            elif len(many) == 1:
                findings.append(
                    Finding(
                        f"{path}.replicas",
                        "warning",
                        "deprecated list form; write the one replica as `replica:`",
                    )
                )
            for r_index, replica in enumerate(many):
                findings += _lint_replica(replica, f"{path}.replicas[{r_index}]")
        elif many is not None:
            findings.append(Finding(f"{path}.replicas", "error", "must be a list"))
        if has_one:
            findings += _lint_replica(entry["replica"], f"{path}.replica")
        if not has_one and not many:
            findings.append(Finding(path, "error", "no replica: litestream 0.5 refuses to start"))
    return findings


# render --------------------------------------------------------------------------------------
def _q(value: str) -> str:
    # JSON strings are valid YAML double-quoted scalars; ${ENV} stays as written for litestream.
    return json.dumps(value)


def _replica_lines(spec: ReplicaSpec, db: DatabaseEntry, *, with_sync: bool) -> list[str]:
    lines = [f"      type: {_q(spec.type)}"]
    if spec.type == "file":
        lines.append(f"      path: {_q(spec.replica_path(db.replica_name))}")
    else:
        for key, value in (
            ("account-name", spec.account_name),
            ("account-key", spec.account_key),
            ("endpoint", spec.endpoint),
            ("bucket", spec.bucket),
        ):
            if value:
                lines.append(f"      {key}: {_q(value)}")
        for key, value in sorted(spec.extra.items()):
            lines.append(f"      {key.replace('_', '-')}: {_q(value)}")
        lines.append(f"      path: {_q(spec.replica_path(db.replica_name))}")
    if with_sync:
        lines.append(f"      sync-interval: {_q(db.sync_interval)}")
    return lines


def _db_block(spec: ReplicaSpec, db: DatabaseEntry, db_dir: Path, *, with_sync: bool) -> list[str]:
    return [
        f"  # {db.file}: {db.tier} ({db.klass})" + (f", {db.size}" if db.size else ""),
        f"  - path: {_q(str(db_dir / db.file))}",
        "    replica:",
        *_replica_lines(spec, db, with_sync=with_sync),
    ]


def render_standby(
    table: TierTable, tiers: list[str], db_dir: Path, *, header: str = ""
) -> GeneratedFile:
    """The restore-only config for the standby: the DBs of ``tiers`` at ``db_dir``, reading the
    same replica paths the primary writes."""
    dbs = tuple(table.in_tiers(tiers))
    skipped = sorted({db.tier for db in table.databases} - set(tiers))
    lines = [
        "# litestream 0.5 restore config for the warm standby. Restore only: never run",
        "# `litestream replicate` with it (the standby must not write to the replicas).",
        f"# {len(dbs)} DBs, tiers {', '.join(tiers)}"
        + (f"; {', '.join(skipped)} omitted" if skipped else ""),
    ]
    if header:
        lines += [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append("dbs:")
    for db in dbs:
        lines += _db_block(table.replica, db, db_dir, with_sync=False)
    return GeneratedFile(name="litestream-restore.yml", text="\n".join(lines) + "\n", databases=dbs)


def render_primary(table: TierTable, db_dir: Path, *, header: str = "") -> list[GeneratedFile]:
    """One config per retention class (0.5 has only a global snapshot.retention), each run by
    its own `litestream replicate` process."""
    files = []
    for cname, klass in table.classes.items():
        dbs = tuple(db for db in table.databases if db.klass == cname)
        if not dbs:
            continue
        lines = [
            f"# litestream 0.5 replicate config for the primary: retention class {cname}",
            f"# ({klass.tier}, retention {klass.retention}, {len(dbs)} DBs). Run it as its own",
            f"# `litestream replicate -config litestream-{cname}.yml` process.",
        ]
        if header:
            lines += [f"# {line}" if line else "#" for line in header.splitlines()]
        lines += [
            "snapshot:",
            '  interval: "24h"',
            f"  retention: {_q(klass.retention)}",
            "dbs:",
        ]
        for db in dbs:
            lines += _db_block(table.replica, db, db_dir, with_sync=True)
        files.append(
            GeneratedFile(
                name=f"litestream-{cname}.yml",
                text="\n".join(lines) + "\n",
                databases=dbs,
                retention_class=cname,
            )
        )
    return files

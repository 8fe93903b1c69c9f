"""The fail-closed pre-write gates: ``fleet zakon validate FILE`` and
``fleet blueprint validate FILE [--stdin]``.

Exit codes: 0 pass (or not a gated document), 2 blocked (reason on stderr), 3 cannot judge:
registry missing or unparseable, config unreadable, file unreadable (fail closed, with the
fix), 64 usage error (never 2: 2 means "blocked"). ``BLUEPRINT_OVERRIDE=ceo-approved-<MC_ID>``
waives a blueprint's schema/liveness findings, never the ZAKON registry, and every use is
appended to the audit JSONL first (no audit line, no override). Standard library only
(shared/entry.py dispatches here without importing click or pydantic): this runs before every
write an agent makes and must stay well under 200 ms. It must never write anything but the
audit log.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from daemons.blueprint_watchdog.approval import TaskReader
from daemons.blueprint_watchdog.gate_settings import (
    GateConfigError,
    GateSettings,
    resolve_gate_settings,
)
from daemons.blueprint_watchdog.registry import (
    Approval,
    RegistryError,
    judge_entry,
    judge_task_text,
    load_registry,
    normalize_path,
)
from daemons.blueprint_watchdog.scanner import read_document
from daemons.blueprint_watchdog.schema import DocType, judge_document, parse_document
from shared.exitcodes import ExitCode
from shared.files import append_jsonl

__all__ = [
    "EX_BLOCKED",
    "EX_ERROR",
    "EX_OK",
    "EX_USAGE",
    "blueprint_validate_main",
    "doc_type_for",
    "zakon_validate_main",
]

EX_OK, EX_USAGE = ExitCode.OK, ExitCode.USAGE
# The gate's own protocol (a pre-write hook): 2 blocks the write, 3 cannot judge (fail closed).
EX_BLOCKED, EX_ERROR = 2, 3
OVERRIDE_ENV = "BLUEPRINT_OVERRIDE"
_OVERRIDE_RE = re.compile(r"^ceo-approved-(\d{1,12})$")
_ZAKON_NAME_RE = re.compile(r"^zakon-.*\.md$")
MAX_DOCUMENT_BYTES = 1_000_000


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that exits 64 on usage errors (its default 2 would read as "blocked")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _Usage(message)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="fleet root (default: [fleet] root)")
    parser.add_argument(
        "--registry", help="ZAKON registry JSON (default: [blueprint_watchdog] registry_file)"
    )
    parser.add_argument(
        "--config",
        help="config file (default: $FLEET_CONFIG, ./fleet.toml, ~/.config/alai-fleet/"
        "fleet.toml, /etc/alai-fleet/fleet.toml, else embedded defaults)",
    )
    parser.add_argument("--mc-db", help="mission-control.db (default: [mission_control] db)")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(list(argv))
    except _Usage:
        return EX_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code) if isinstance(exc.code, int) else EX_OK


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> GateSettings:
    return resolve_gate_settings(
        root=args.root, registry=args.registry, config=args.config, mc_db=args.mc_db, env=env
    )


def _is_zakon_name(path: str) -> bool:
    return bool(_ZAKON_NAME_RE.match(os.path.basename(path)))


def doc_type_for(path: str, settings: GateSettings) -> DocType | None:
    """The document type whose globs match ``path`` (root-relative when under the root, else
    any trailing part of it, so ``**/BUILD-BLUEPRINT.md`` matches wherever it lives)."""
    candidates: list[str] = []
    root = os.path.normpath(str(settings.root))
    if path.startswith(root + os.sep):
        candidates.append(path[len(root) + 1 :].replace(os.sep, "/"))
    parts = Path(path).parts
    candidates += ["/".join(parts[i:]) for i in range(1, len(parts))]
    for doc_type in settings.doc_types:
        if any(doc_type.matches(c) for c in candidates):
            return doc_type
    return None


# --- ZAKON registry gate -------------------------------------------------------------------


def _registry_approval(path: str, settings: GateSettings, err: IO[str]) -> Approval | RegistryError:
    try:
        registry = load_registry(settings.registry_file, home=settings.home)
    except RegistryError as exc:
        return exc
    entry = registry.find(path)
    approval = judge_entry(entry)
    if approval.ok and entry is not None and entry.mc_task is not None:
        task = TaskReader(settings.mission_control_db).task_text(entry.mc_task)
        if task.available:
            approval = judge_task_text(entry, task.text)
        else:
            print(
                f"note: Mission Control not readable ({task.problem}); the text of task "
                f"#{entry.mc_task} was not checked for [CEO_APPROVED]",
                file=err,
            )
    return approval


def _guarded(main: Any, argv: Sequence[str], kwargs: dict[str, Any]) -> int:
    """A bug in the gate must not read as "pass": any unexpected error exits 3."""
    try:
        return int(main(argv, **kwargs))
    except Exception as exc:
        print(
            f"BLUEPRINT_GATE_ERROR: internal error ({type(exc).__name__}: {exc}); failing closed",
            file=kwargs.get("err") or sys.stderr,
        )
        return EX_ERROR


def zakon_validate_main(argv: Sequence[str], **kwargs: Any) -> int:
    """``fleet zakon validate FILE``: may FILE (a ZAKON rule) be written?"""
    return _guarded(_zakon_validate, argv, kwargs)


def blueprint_validate_main(argv: Sequence[str], **kwargs: Any) -> int:
    """``fleet blueprint validate FILE [--stdin]``: does FILE (or the content about to be
    written to it, on stdin) meet its schema and liveness rules?"""
    return _guarded(_blueprint_validate, argv, kwargs)


def _zakon_validate(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    env = os.environ if env is None else env
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _Parser(
        prog="fleet zakon validate",
        description="ZAKON registry gate: exit 0 pass, 2 blocked, 3 registry missing or "
        "unparseable (fail closed), 64 usage error.",
    )
    parser.add_argument("file", metavar="FILE", help="the zakon-*.md file about to be written")
    _common_options(parser)
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        settings = _settings(args, env)
    except GateConfigError as exc:
        print(
            f"ZAKON_REGISTRY_ERROR: {exc}\nFIX: fix the config file, or pass --registry.", file=err
        )
        return EX_ERROR
    path = normalize_path(args.file, home=settings.home)
    doc_type = doc_type_for(path, settings)
    if not _is_zakon_name(path) and (doc_type is None or not doc_type.registry):
        print(f"{args.file}: not a ZAKON rule file (zakon-*.md); not gated", file=out)
        return EX_OK
    approval = _registry_approval(path, settings, err)
    if isinstance(approval, RegistryError):
        print(approval.render(), file=err)
        return EX_ERROR
    if not approval.ok:
        print(f"ZAKON_REGISTRY_BLOCK: {args.file}: {approval.describe()}", file=err)
        return EX_BLOCKED
    print(f"ZAKON_REGISTRY_PASS: {args.file}: {approval.describe()}", file=out)
    return EX_OK


# --- blueprint schema gate -----------------------------------------------------------------


def _user_name(env: Mapping[str, str]) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return env.get("USER") or env.get("LOGNAME") or str(os.getuid())


def _audit(settings: GateSettings, record: dict[str, Any], err: IO[str]) -> bool:
    try:
        append_jsonl(
            settings.override_log, record, max_bytes=settings.log_max_bytes, keep=settings.log_keep
        )
        return True
    except OSError as exc:
        print(
            f"BLUEPRINT_OVERRIDE refused: cannot write the audit log {settings.override_log} "
            f"({exc.strerror or exc})",
            file=err,
        )
        return False


def _override(
    value: str,
    *,
    path: str,
    doc_type: DocType,
    waived: list[tuple[str, str]],
    score: str | None,
    settings: GateSettings,
    now: float,
    env: Mapping[str, str],
    err: IO[str],
) -> bool:
    """Judge and audit-log a BLUEPRINT_OVERRIDE; True when it lets the write through."""
    match = _OVERRIDE_RE.match(value.strip())
    mc_task = int(match.group(1)) if match else None
    refused = ""
    if mc_task is None:
        refused = "value must be ceo-approved-<MC_ID>"
    else:
        task = TaskReader(settings.mission_control_db).task_text(mc_task)
        if task.available and task.text is None:
            refused = f"Mission Control task #{mc_task} does not exist"
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "event": "blueprint_override",
        "accepted": not refused,
        "refused_reason": refused or None,
        "override": value[:80],
        "mc_task": mc_task,
        "file": path,
        "doc_type": doc_type.name,
        "score": score,
        "waived": [reason for reason, _ in waived],
        "user": _user_name(env),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "host": socket.gethostname().split(".")[0],
    }
    if not _audit(settings, record, err):
        return False
    if refused:
        print(f"BLUEPRINT_OVERRIDE ignored: {refused} (logged)", file=err)
        return False
    if waived:
        print(
            f"BLUEPRINT_OVERRIDE accepted for MC #{mc_task}; waived: "
            + ", ".join(reason for reason, _ in waived)
            + f" (logged to {settings.override_log})",
            file=err,
        )
    return True


def _blueprint_validate(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    now: float | None = None,
) -> int:
    env = os.environ if env is None else env
    out = out or sys.stdout
    err = err or sys.stderr
    now = time.time() if now is None else now
    parser = _Parser(
        prog="fleet blueprint validate",
        description="Blueprint schema gate: exit 0 pass (or not a gated document), 2 blocked "
        "(schema below full score, stale or missing Last-Verified; a ZAKON file also "
        "needs its registry entry), 3 cannot judge, 64 usage error. "
        "BLUEPRINT_OVERRIDE=ceo-approved-<MC_ID> waives schema/liveness (audit-logged).",
    )
    parser.add_argument("file", metavar="FILE", help="the document (its path decides its type)")
    parser.add_argument(
        "--stdin", action="store_true", help="judge the content on stdin (about to be written)"
    )
    parser.add_argument(
        "--type", dest="doc_type", help="document type (blueprint, deploy-map, zakon)"
    )
    _common_options(parser)
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        settings = _settings(args, env)
    except GateConfigError as exc:
        print(f"BLUEPRINT_GATE_ERROR: {exc}", file=err)
        return EX_ERROR
    path = normalize_path(args.file, home=settings.home)
    if args.doc_type:
        by_name = {t.name: t for t in settings.doc_types}
        if args.doc_type not in by_name:
            parser.print_usage(err)
            print(
                f"fleet blueprint validate: error: --type must be one of {', '.join(by_name)}",
                file=err,
            )
            return EX_USAGE
        doc_type: DocType | None = by_name[args.doc_type]
    else:
        doc_type = doc_type_for(path, settings)
        if doc_type is None and _is_zakon_name(path):
            doc_type = next((t for t in settings.doc_types if t.registry), None)
    if doc_type is None:
        print(f"{args.file}: not a blueprint, DEPLOY-MAP or ZAKON document; not gated", file=out)
        return EX_OK

    # Content: the bytes about to be written, or the file as it is.
    if args.stdin:
        source = stdin if stdin is not None else sys.stdin.buffer
        data = source.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            reasons = [("too_large", f"over {MAX_DOCUMENT_BYTES} bytes")]
            text: str | None = None
        else:
            try:
                text = data.decode("utf-8").removeprefix("\ufeff")
                reasons = []
            except UnicodeDecodeError as exc:
                text, reasons = None, [("not_utf8", f"invalid UTF-8 at byte {exc.start}")]
    else:
        scanned = read_document(Path(path), doc_type.name, MAX_DOCUMENT_BYTES)
        if scanned.problem in ("unreadable", "symlink_loop"):
            print(
                f"BLUEPRINT_GATE_ERROR: cannot read {args.file}: {scanned.detail}\n"
                "FIX: pass the content with --stdin (pre-write hooks), or fix the file.",
                file=err,
            )
            return EX_ERROR
        text = scanned.text
        reasons = [(scanned.problem, scanned.detail)] if scanned.problem else []

    score: str | None = None
    if text is not None:
        today = datetime.fromtimestamp(now, UTC).date()
        verdict = judge_document(parse_document(text), doc_type, today)
        score = verdict.score
        reasons = list(verdict.reasons)

    # The registry is never waived by an override.
    if doc_type.registry:
        approval = _registry_approval(path, settings, err)
        if isinstance(approval, RegistryError):
            print(approval.render(), file=err)
            return EX_ERROR
        if not approval.ok:
            print(f"ZAKON_REGISTRY_BLOCK: {args.file}: {approval.describe()}", file=err)
            return EX_BLOCKED

    override = env.get(OVERRIDE_ENV, "")
    if override and _override(
        override,
        path=path,
        doc_type=doc_type,
        waived=reasons,
        score=score,
        settings=settings,
        now=now,
        env=env,
        err=err,
    ):
        print(f"BLUEPRINT_PASS (override): {args.file}", file=out)
        return EX_OK
    if reasons:
        label = f" ({doc_type.name}, {score})" if score else f" ({doc_type.name})"
        lines = [f"BLUEPRINT_BLOCK: {args.file}{label}"]
        lines += [f"  - {detail}" for _reason, detail in reasons]
        today_iso = time.strftime("%Y-%m-%d", time.gmtime(now))
        lines.append(
            "FIX: add the missing sections (##-level headings) and a current "
            f"'Last-Verified: {today_iso}' line; with CEO approval, "
            f"export {OVERRIDE_ENV}=ceo-approved-<MC_ID> (audit-logged)."
        )
        print("\n".join(lines), file=err)
        return EX_BLOCKED
    print(f"BLUEPRINT_PASS: {args.file} ({doc_type.name}, {score})", file=out)
    return EX_OK

"""The fail-closed pre-write gates: ``fleet zakon validate FILE`` and
``fleet blueprint validate FILE [--stdin]``.

Exit codes: 0 pass (or not a gated document), 2 blocked (reason on stderr), 3 cannot judge:
registry missing or unparseable, config unreadable, Mission Control unreadable where an
approval must be checked, file unreadable (fail closed, with the fix), 64 usage error (never
2: 2 means "blocked"). ``BLUEPRINT_OVERRIDE=ceo-approved-<MC_ID>`` waives a blueprint's
schema/liveness findings, never the ZAKON registry, only when task MC_ID carries
``[CEO_APPROVED]`` and was not created from mail, and every use is appended to the audit JSONL
first (no audit line, no override).

Hostile callers: the settings come from the system config only (gate_settings.py: never the
caller's ``FLEET_*`` variables or working directory; explicit command-line choices are logged).
A path is judged as given and as it resolves (a symlink ``notes.md -> zakon-x.md`` is a ZAKON
write), names and globs compared case-folded (case-insensitive APFS), and the registry file is
itself gated (gate_registry.py). Standard library only (fleet/entry.py dispatches here without
importing click or pydantic): this runs before every write an agent makes and must stay well
under 200 ms. It must never write anything but the audit log.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn

from daemons.blueprint_watchdog.approval import TaskReader
from daemons.blueprint_watchdog.gate_audit import audit, log_overrides, who
from daemons.blueprint_watchdog.gate_registry import (
    CannotJudge,
    file_approval,
    registry_change_problems,
)
from daemons.blueprint_watchdog.gate_settings import (
    SYSTEM_CONFIG,
    GateConfigError,
    GateSettings,
    resolve_gate_settings,
)
from daemons.blueprint_watchdog.registry import CEO_TOKEN, Approval, RegistryError, normalize_path
from daemons.blueprint_watchdog.scanner import read_document
from daemons.blueprint_watchdog.schema import (
    DocType,
    glob_regex,
    judge_document,
    parse_document,
)
from shared.exitcodes import ExitCode

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
_ZAKON_NAME_RE = re.compile(r"zakon-.*\.md", re.DOTALL)  # fullmatch on a case-folded name
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
        help=f"config file instead of the system config ({SYSTEM_CONFIG}, else embedded "
        "defaults); logged. $FLEET_* and ./fleet.toml are never read",
    )
    parser.add_argument("--mc-db", help="mission-control.db (default: [mission_control] db)")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(list(argv))
    except _Usage:
        return EX_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code) if isinstance(exc.code, int) else EX_OK


def _settings(args: argparse.Namespace, ctx: Mapping[str, Any]) -> GateSettings:
    return resolve_gate_settings(
        root=args.root,
        registry=args.registry,
        config=args.config,
        mc_db=args.mc_db,
        system_config=ctx.get("system_config"),
        home=ctx.get("home"),
    )


def _names(path: str) -> tuple[str, ...]:
    """``path`` as given and as it resolves: a write through a symlink lands on its target."""
    real = os.path.realpath(path)
    return (path,) if real == path else (path, real)


def _is_zakon_name(names: Sequence[str]) -> bool:
    return any(_ZAKON_NAME_RE.fullmatch(os.path.basename(n).casefold()) for n in names)


def _folded_globs(doc_type: DocType) -> tuple[re.Pattern[str], ...]:
    return tuple(glob_regex(g.casefold()) for g in doc_type.globs)


def doc_type_for(path: str, settings: GateSettings) -> DocType | None:
    """The document type whose globs match ``path`` or the file it resolves to (root-relative
    when under the root, else any trailing part, so ``**/BUILD-BLUEPRINT.md`` matches wherever
    it lives), compared case-folded."""
    roots = {os.path.normpath(str(settings.root)), os.path.realpath(settings.root)}
    prefixes = {r.casefold() + os.sep for r in roots}
    candidates: list[str] = []
    for name in _names(path):
        folded = name.casefold()
        candidates += [folded[len(p) :] for p in prefixes if folded.startswith(p)]
        parts = Path(folded).parts
        candidates += ["/".join(parts[i:]) for i in range(1, len(parts))]
    candidates = [c.replace(os.sep, "/") for c in candidates]
    for doc_type in settings.doc_types:
        if any(r.fullmatch(c) for r in _folded_globs(doc_type) for c in candidates):
            return doc_type
    return None


def _same_file(names: Sequence[str], path: Path, *, rotated: bool = False) -> bool:
    """Is one of ``names`` ``path`` (as given or resolved, case-folded; with ``rotated`` also
    its rotations ``path.1`` ...)?"""
    targets = {os.path.normpath(str(path)).casefold(), os.path.realpath(path).casefold()}
    for name in (n.casefold() for n in names):
        if name in targets or (rotated and any(name.startswith(t + ".") for t in targets)):
            return True
    return False


def _is_registry_file(names: Sequence[str], settings: GateSettings) -> bool:
    return _same_file(names, settings.registry_file)


def _own_file_block(names: Sequence[str], settings: GateSettings, file: str, err: IO[str]) -> bool:
    """The gates' own config file and audit log are never written through an agent's hook
    (a session that could rewrite them would choose what the gates read and what they log)."""
    label = None
    if settings.config_file is not None and _same_file(names, settings.config_file):
        label = "config file"
    elif _same_file(names, settings.override_log, rotated=True):
        label = "override audit log"
    if label is None:
        return False
    print(
        f"GATE_BLOCK: {file} is the pre-write gates' {label}; it is not written through an "
        "agent session.\nFIX: change it from an operator shell, outside the agent.",
        file=err,
    )
    return True


# --- ZAKON registry gate -------------------------------------------------------------------


def _registry_approval(path: str, settings: GateSettings) -> Approval | RegistryError | CannotJudge:
    return file_approval(
        path,
        registry_file=settings.registry_file,
        mission_control_db=settings.mission_control_db,
        home=settings.home,
    )


def _registry_verdict(
    approval: Approval | RegistryError | CannotJudge, file: str, err: IO[str]
) -> Approval | int:
    """The approval when it lets the write through, else the exit code (reason printed)."""
    if isinstance(approval, RegistryError | CannotJudge):
        print(approval.render(), file=err)
        return EX_ERROR
    if not approval.ok:
        print(f"ZAKON_REGISTRY_BLOCK: {file}: {approval.describe()}", file=err)
        return EX_BLOCKED
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
    system_config: str | os.PathLike[str] | None = None,
    home: str | None = None,
) -> int:
    ctx = {"system_config": system_config, "home": home}
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
        settings = _settings(args, ctx)
    except GateConfigError as exc:
        print(f"ZAKON_REGISTRY_ERROR: {exc}\nFIX: fix the system config file.", file=err)
        return EX_ERROR
    path = normalize_path(args.file, home=settings.home)
    log_overrides(settings, gate="zakon", path=path, ctx=ctx, env=env, err=err, now=time.time())
    names = _names(path)
    if _own_file_block(names, settings, args.file, err):
        return EX_BLOCKED
    if _is_registry_file(names, settings):
        print(
            f"ZAKON_REGISTRY_BLOCK: {args.file} is the ZAKON registry itself; a change to it is "
            "judged on its content.\nFIX: pipe the new content to "
            f"`fleet blueprint validate {args.file} --stdin`.",
            file=err,
        )
        return EX_BLOCKED
    doc_type = doc_type_for(path, settings)
    if not _is_zakon_name(names) and (doc_type is None or not doc_type.registry):
        print(f"{args.file}: not a ZAKON rule file (zakon-*.md); not gated", file=out)
        return EX_OK
    approval = _registry_verdict(_registry_approval(path, settings), args.file, err)
    if isinstance(approval, int):
        return approval
    print(f"ZAKON_REGISTRY_PASS: {args.file}: {approval.describe()}", file=out)
    return EX_OK


# --- blueprint schema gate -----------------------------------------------------------------


def _override_problem(value: str, settings: GateSettings) -> tuple[int | None, str, bool]:
    """(MC id, why the override is refused or "", whether Mission Control was unreadable)."""
    match = _OVERRIDE_RE.match(value.strip())
    if not match:
        return None, "value must be ceo-approved-<MC_ID>", False
    mc_task = int(match.group(1))
    task = TaskReader(settings.mission_control_db).task_text(mc_task)
    if not task.available:
        return mc_task, f"Mission Control not readable ({task.problem})", True
    if task.text is None:
        return mc_task, f"Mission Control task #{mc_task} does not exist", False
    if task.from_mail:
        return mc_task, f"Mission Control task #{mc_task} was created from mail", False
    if CEO_TOKEN not in task.text:
        return mc_task, f"Mission Control task #{mc_task} does not carry {CEO_TOKEN}", False
    return mc_task, "", False


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
) -> int | None:
    """Judge and audit-log a BLUEPRINT_OVERRIDE: EX_OK when it lets the write through,
    EX_ERROR when Mission Control cannot tell whether it may, None when refused."""
    mc_task, refused, unreadable = _override_problem(value, settings)
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
        **who(env),
    }
    if not audit(settings, record, err):
        return None
    if refused and unreadable and waived:
        print(
            f"BLUEPRINT_GATE_ERROR: BLUEPRINT_OVERRIDE cannot be checked: {refused}; failing "
            "closed (logged).\nFIX: restore mission-control.db or correct [mission_control] db "
            "in the system config.",
            file=err,
        )
        return EX_ERROR
    if refused:
        print(f"BLUEPRINT_OVERRIDE ignored: {refused} (logged)", file=err)
        return None
    if waived:
        print(
            f"BLUEPRINT_OVERRIDE accepted for MC #{mc_task}; waived: "
            + ", ".join(reason for reason, _ in waived)
            + f" (logged to {settings.override_log})",
            file=err,
        )
    return EX_OK


def _read_stdin(stdin: IO[bytes] | None) -> tuple[str | None, list[tuple[str, str]]]:
    source = stdin if stdin is not None else sys.stdin.buffer
    data = source.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        return None, [("too_large", f"over {MAX_DOCUMENT_BYTES} bytes")]
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), []
    except UnicodeDecodeError as exc:
        return None, [("not_utf8", f"invalid UTF-8 at byte {exc.start}")]


def _registry_change(
    file: str,
    use_stdin: bool,
    stdin: IO[bytes] | None,
    settings: GateSettings,
    out: IO[str],
    err: IO[str],
) -> int:
    """The registry file itself: judged on the content about to be written."""
    if not use_stdin:
        print(
            f"ZAKON_REGISTRY_BLOCK: {file} is the ZAKON registry itself; a change to it is judged "
            "on its content.\nFIX: pass the new content with --stdin.",
            file=err,
        )
        return EX_BLOCKED
    text, reasons = _read_stdin(stdin)
    if text is None:
        print(f"ZAKON_REGISTRY_BLOCK: {file}: {reasons[0][1]}", file=err)
        return EX_BLOCKED
    problems = registry_change_problems(
        text,
        registry_file=settings.registry_file,
        mission_control_db=settings.mission_control_db,
        home=settings.home,
    )
    if isinstance(problems, CannotJudge):
        print(problems.render(), file=err)
        return EX_ERROR
    if problems:
        lines = [f"ZAKON_REGISTRY_BLOCK: {file}: this change to the ZAKON registry is refused"]
        lines += [f"  - {problem}" for problem in problems]
        lines.append(
            "FIX: each added or changed entry that approves writes needs a Mission Control task "
            f"(not created from mail) carrying {CEO_TOKEN}, named in its mc_task."
        )
        print("\n".join(lines), file=err)
        return EX_BLOCKED
    print(f"ZAKON_REGISTRY_PASS: {file}: registry change approved", file=out)
    return EX_OK


def _blueprint_validate(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    now: float | None = None,
    system_config: str | os.PathLike[str] | None = None,
    home: str | None = None,
) -> int:
    ctx = {"system_config": system_config, "home": home}
    env = os.environ if env is None else env
    out = out or sys.stdout
    err = err or sys.stderr
    now = time.time() if now is None else now
    parser = _Parser(
        prog="fleet blueprint validate",
        description="Blueprint schema gate: exit 0 pass (or not a gated document), 2 blocked "
        "(schema below full score, stale or missing Last-Verified; a ZAKON file also "
        "needs its registry entry, the registry file an approved change), 3 cannot judge, "
        "64 usage error. BLUEPRINT_OVERRIDE=ceo-approved-<MC_ID> waives schema/liveness "
        "(audit-logged; task MC_ID must carry [CEO_APPROVED]).",
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
        settings = _settings(args, ctx)
    except GateConfigError as exc:
        print(f"BLUEPRINT_GATE_ERROR: {exc}\nFIX: fix the system config file.", file=err)
        return EX_ERROR
    path = normalize_path(args.file, home=settings.home)
    log_overrides(settings, gate="blueprint", path=path, ctx=ctx, env=env, err=err, now=now)
    names = _names(path)
    if _own_file_block(names, settings, args.file, err):
        return EX_BLOCKED
    if _is_registry_file(names, settings):
        return _registry_change(args.file, args.stdin, stdin, settings, out, err)
    by_path = doc_type_for(path, settings)
    registry_gated = _is_zakon_name(names) or (by_path is not None and by_path.registry)
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
        doc_type = by_path
        if doc_type is None and registry_gated:
            doc_type = next((t for t in settings.doc_types if t.registry), None)
    if doc_type is None:
        print(f"{args.file}: not a blueprint, DEPLOY-MAP or ZAKON document; not gated", file=out)
        return EX_OK

    # Content: the bytes about to be written, or the file as it is.
    if args.stdin:
        text, reasons = _read_stdin(stdin)
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

    # The registry is never waived by an override, nor skipped by --type.
    if doc_type.registry or registry_gated:
        approval = _registry_verdict(_registry_approval(path, settings), args.file, err)
        if isinstance(approval, int):
            return approval

    override = env.get(OVERRIDE_ENV, "")
    if override:
        code = _override(
            override,
            path=path,
            doc_type=doc_type,
            waived=reasons,
            score=score,
            settings=settings,
            now=now,
            env=env,
            err=err,
        )
        if code == EX_OK:
            print(f"BLUEPRINT_PASS (override): {args.file}", file=out)
        if code is not None:
            return code
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

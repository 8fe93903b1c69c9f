"""Findings and the report: turns scanned files, the registry and Mission Control answers
into one finding per file (schema score, missing sections, Last-Verified age, registry status,
reasons), the JSON report, and the one-per-run alert text.

Pure functions of data and ``now`` (the Mission Control lookup is passed in as a callable).
Standard library only. It must never do I/O itself, and never call a file compliant when it
could not be read.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from daemons.blueprint_watchdog.approval import TaskLookup
from daemons.blueprint_watchdog.registry import (
    Registry,
    RegistryError,
    judge_entry,
    judge_task_text,
    sha256_matches,
)
from daemons.blueprint_watchdog.scanner import ScannedFile, ScanProblem
from daemons.blueprint_watchdog.schema import (
    DOC_TYPE_NAMES,
    DocType,
    judge_document,
    parse_document,
)
from shared.notify.escape import slack_text

__all__ = [
    "REPORT_VERSION",
    "FileFinding",
    "Report",
    "alert_text",
    "assess_file",
    "build_report",
    "utc_today",
]

REPORT_VERSION = 1
TaskLookupFn = Callable[[int], TaskLookup]

_REASON_WORDS = {
    "schema": "schema below full score",
    "stale": "stale Last-Verified",
    "missing_last_verified": "no Last-Verified",
    "invalid_last_verified": "bad Last-Verified",
    "unregistered": "unregistered ZAKON",
    "not_approved": "ZAKON not approved",
    "changed": "changed since publication",
    "registry_error": "registry unusable",
    "unreadable": "unreadable",
    "not_utf8": "not UTF-8",
    "symlink_loop": "symlink loop",
    "too_large": "too large",
    "outside_root": "symlink out of the scan roots",
}


def utc_today(now: float) -> date:
    return datetime.fromtimestamp(now, UTC).date()


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


@dataclass(frozen=True)
class FileFinding:
    path: str
    doc_type: str
    score: str | None  # "4/5"; None when the file could not be read
    missing_sections: tuple[str, ...]
    last_verified: str | None
    age_days: int | None
    registry: str | None  # registry status line (ZAKON files), None for other types
    sha256: str | None
    reasons: tuple[tuple[str, str], ...]

    @property
    def compliant(self) -> bool:
        return not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.doc_type,
            "compliant": self.compliant,
            "score": self.score,
            "missing_sections": list(self.missing_sections),
            "last_verified": self.last_verified,
            "age_days": self.age_days,
            "registry": self.registry,
            "sha256": self.sha256,
            "reasons": [reason for reason, _ in self.reasons],
            "details": [detail for _, detail in self.reasons],
        }


def assess_file(
    scanned: ScannedFile,
    doc_type: DocType,
    today: date,
    registry: Registry | RegistryError | None,
    lookup_task: TaskLookupFn | None,
) -> FileFinding:
    """One file's finding. ``registry`` only matters for types with ``registry=True``."""
    reasons: list[tuple[str, str]] = []
    score: str | None = None
    missing: tuple[str, ...] = ()
    verified: str | None = None
    age: int | None = None
    if scanned.text is None:
        reasons.append((scanned.problem or "unreadable", scanned.detail or "cannot be read"))
    else:
        verdict = judge_document(parse_document(scanned.text), doc_type, today)
        score = verdict.score
        missing = verdict.missing
        verified = verdict.last_verified.isoformat() if verdict.last_verified else None
        age = verdict.age_days
        reasons.extend(verdict.reasons)
    status: str | None = None
    if doc_type.registry:
        status, registry_reasons = _registry_status(scanned, registry, lookup_task)
        reasons.extend(registry_reasons)
    return FileFinding(
        path=str(scanned.path),
        doc_type=doc_type.name,
        score=score,
        missing_sections=missing,
        last_verified=verified,
        age_days=age,
        registry=status,
        sha256=scanned.sha256,
        reasons=tuple(reasons),
    )


def _registry_status(
    scanned: ScannedFile,
    registry: Registry | RegistryError | None,
    lookup_task: TaskLookupFn | None,
) -> tuple[str, list[tuple[str, str]]]:
    if registry is None:
        return "not checked", []
    if isinstance(registry, RegistryError):
        return f"registry {registry.kind}", [
            ("registry_error", f"ZAKON registry {registry.kind}: {registry.problem}")
        ]
    entry = registry.find(scanned.path)
    approval = judge_entry(entry)
    if approval.ok and entry is not None and entry.mc_task is not None and lookup_task:
        task = lookup_task(entry.mc_task)
        if task.available:
            approval = judge_task_text(entry, task.text, from_mail=task.from_mail)
    reasons: list[tuple[str, str]] = []
    if not approval.ok:
        reasons.append((approval.reason, approval.describe()))
    if entry is None:
        return "unregistered", reasons
    status = entry.status or "(no status)"
    if entry.mc_task:
        status += f", MC #{entry.mc_task}"
    if scanned.sha256 is not None and sha256_matches(entry, scanned.sha256) is False:
        reasons.append(
            (
                "changed",
                f"changed since publication: sha256 {scanned.sha256[:12]}... differs from "
                f"published {(entry.published_sha256 or '')[:12]}...",
            )
        )
    return status, reasons


@dataclass
class Report:
    generated_at: float
    host: str
    roots: list[str]
    duration_s: float
    findings: list[FileFinding]
    problems: list[ScanProblem]
    registry_path: str
    registry_ok: bool
    registry_error: str | None
    registry_kind: str | None  # RegistryError.kind when not ok
    registry_entries: int
    registry_by_status: dict[str, int]
    entries_without_file: list[str] = field(default_factory=list)
    truncated: bool = False
    walked: int = 0

    @property
    def run_date(self) -> str:
        return utc_today(self.generated_at).isoformat()

    def files_by_type(self) -> dict[str, int]:
        counts = Counter(f.doc_type for f in self.findings)
        return {name: counts.get(name, 0) for name in DOC_TYPE_NAMES}

    def noncompliant(self) -> list[FileFinding]:
        return [f for f in self.findings if not f.compliant]

    def by_type_reason(self) -> dict[tuple[str, str], int]:
        counts: Counter[tuple[str, str]] = Counter()
        for finding in self.findings:
            for reason in {r for r, _ in finding.reasons}:
                counts[(finding.doc_type, reason)] += 1
        return dict(counts)

    def by_reason(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for finding in self.findings:
            for reason in {r for r, _ in finding.reasons}:
                counts[reason] += 1
        return dict(sorted(counts.items()))

    @property
    def registry_alarm(self) -> bool:
        """The registry is unusable in a way that matters: broken, or missing while ZAKON
        files exist (a machine with neither has nothing to protect yet)."""
        if self.registry_ok:
            return False
        if self.registry_kind != "missing":
            return True
        return any(f.doc_type == "zakon" for f in self.findings)

    @property
    def needs_alert(self) -> bool:
        return bool(self.noncompliant()) or self.registry_alarm

    def summary(self) -> dict[str, Any]:
        bad = self.noncompliant()
        return {
            "files": self.files_by_type(),
            "total": len(self.findings),
            "compliant": len(self.findings) - len(bad),
            "noncompliant": len(bad),
            "by_reason": self.by_reason(),
            "problems": len(self.problems),
            "registry_ok": self.registry_ok,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "generated_at": _iso(self.generated_at),
            "run_date": self.run_date,
            "host": self.host,
            "roots": self.roots,
            "duration_s": round(self.duration_s, 3),
            "walked_entries": self.walked,
            "truncated": self.truncated,
            "summary": self.summary(),
            "registry": {
                "path": self.registry_path,
                "ok": self.registry_ok,
                "alarm": self.registry_alarm,
                "problem": self.registry_kind,
                "error": self.registry_error,
                "entries": self.registry_entries,
                "by_status": self.registry_by_status,
                "entries_without_file": self.entries_without_file,
            },
            "files": [f.to_json() for f in self.findings],
            "problems": [p.to_json() for p in self.problems],
        }


def build_report(
    *,
    scanned: Sequence[ScannedFile],
    problems: Sequence[ScanProblem],
    doc_types: Sequence[DocType],
    registry: Registry | RegistryError,
    registry_path: Path,
    lookup_task: TaskLookupFn | None,
    now: float,
    duration_s: float,
    host: str,
    roots: Sequence[Path],
    truncated: bool = False,
    walked: int = 0,
    existing: Callable[[str], bool] | None = None,
) -> Report:
    """Assess every scanned file on the UTC date of ``now``. ``existing`` tells whether a
    registered path exists (for the report's ``entries_without_file``)."""
    types = {t.name: t for t in doc_types}
    today = utc_today(now)
    findings = [
        assess_file(s, types[s.doc_type], today, registry, lookup_task)
        for s in scanned
        if s.doc_type in types
    ]
    if isinstance(registry, RegistryError):
        ok, error, entries, by_status, orphans = False, registry.render(), 0, {}, []
        kind: str | None = registry.kind
    else:
        ok, error, kind = True, None, None
        entries = len(registry.entries)
        by_status = registry.by_status()
        orphans = [
            e.file_path
            for e in registry.entries
            if existing is not None
            and e.status != "approved-pending-author"
            and not existing(e.path)
        ]
    return Report(
        generated_at=now,
        host=host,
        roots=[str(r) for r in roots],
        duration_s=duration_s,
        findings=findings,
        problems=list(problems),
        registry_path=str(registry_path),
        registry_ok=ok,
        registry_error=error,
        registry_kind=kind,
        registry_entries=entries,
        registry_by_status=by_status,
        entries_without_file=orphans,
        truncated=truncated,
        walked=walked,
    )


def alert_text(report: Report, *, report_path: str, max_files: int = 10) -> str:
    """The one message per run: counts, reasons, the first few files, where the report is."""
    bad = report.noncompliant()
    total = len(report.findings)
    types = ", ".join(
        f"{name} {count}" for name, count in sorted(Counter(f.doc_type for f in bad).items())
    )
    lines = [
        f"[blueprint-watchdog@{report.host}] nightly scan {report.run_date}: "
        f"{len(bad)} of {total} file(s) non-compliant" + (f" ({types})" if types else "")
    ]
    if report.registry_alarm:
        first = (report.registry_error or "").splitlines()
        lines.append(
            "ZAKON registry unusable: every ZAKON write is blocked (fail closed). "
            + (slack_text(first[2], 300) if len(first) > 2 else "")
        )
    reasons = report.by_reason()
    if reasons:
        lines.append("; ".join(f"{_REASON_WORDS.get(r, r)}: {n}" for r, n in reasons.items()))
    for finding in bad[:max_files]:
        detail = finding.reasons[0][1] if finding.reasons else ""
        more = f" (+{len(finding.reasons) - 1} more)" if len(finding.reasons) > 1 else ""
        score = f" [{finding.score}]" if finding.score and finding.doc_type != "zakon" else ""
        lines.append(f"• {slack_text(finding.path, 300)}{score}: {slack_text(detail, 200)}{more}")
    if len(bad) > max_files:
        lines.append(f"…and {len(bad) - max_files} more")
    lines.append(f"Report: {report_path} (`fleet blueprint report`)")
    return "\n".join(lines)

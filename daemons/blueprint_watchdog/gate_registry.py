"""The registry side of the pre-write gates: may a ZAKON file be written (its registry entry and
the Mission Control task that carries the CEO's approval), and may the registry itself be
rewritten (``fleet blueprint validate REGISTRY --stdin``)?

Approval lives in a Mission Control task whose text carries ``[CEO_APPROVED]`` and that was
not created from mail (a stranger's subject line is no approval). When a decision needs that
task and mission-control.db cannot be read, the answer is ``CannotJudge`` (exit 3), never a
pass. A registry change passes when every entry it adds or changes that would approve writes
is backed by such a task; removing entries, or making them approve less, needs nothing; no
change can grandfather a file. Standard library only (the hook path imports it). It must
never write anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemons.blueprint_watchdog.approval import TaskReader
from daemons.blueprint_watchdog.registry import (
    CEO_TOKEN,
    Approval,
    RegistryEntry,
    RegistryError,
    judge_entry,
    judge_task_text,
    load_registry,
    parse_registry,
)

__all__ = ["CannotJudge", "file_approval", "registry_change_problems"]


@dataclass(frozen=True)
class CannotJudge:
    """Mission Control could not be read where a decision needs it: fail closed (exit 3)."""

    db: Path | None
    task: int
    problem: str

    def render(self) -> str:
        return (
            f"ZAKON_REGISTRY_ERROR: Mission Control not readable: {self.problem}\n"
            f"Cannot check task #{self.task} for {CEO_TOKEN}.\n"
            f"FIX: restore mission-control.db ({self.db}) or correct [mission_control] db in the "
            "system config; until then every write that needs a task's approval is blocked "
            "(fail closed)."
        )


def _task_approval(
    entry: RegistryEntry, reader: TaskReader, approval: Approval
) -> Approval | CannotJudge:
    if not approval.ok or entry.mc_task is None:
        return approval
    task = reader.task_text(entry.mc_task)
    if not task.available:
        return CannotJudge(reader.db, entry.mc_task, task.problem)
    return judge_task_text(entry, task.text, from_mail=task.from_mail)


def file_approval(
    path: str, *, registry_file: Path, mission_control_db: Path | None, home: str
) -> Approval | RegistryError | CannotJudge:
    """The registry gate's answer for writing ``path`` (compared as given, then resolved)."""
    try:
        registry = load_registry(registry_file, home=home)
    except RegistryError as exc:
        return exc
    entry = registry.find(path)
    approval = judge_entry(entry)
    if entry is None:
        return approval
    return _task_approval(entry, TaskReader(mission_control_db), approval)


def _grant(entry: RegistryEntry) -> tuple[object, ...]:
    """What about an entry decides which writes it approves."""
    return (entry.mc_task, entry.token, entry.status, entry.problems)


def registry_change_problems(
    new_text: str, *, registry_file: Path, mission_control_db: Path | None, home: str
) -> list[str] | CannotJudge:
    """Why the registry may not become ``new_text`` (empty: it may)."""
    try:
        new = parse_registry(new_text, registry_file, home=home)
    except RegistryError as exc:
        return [f"the new content is not a valid ZAKON registry: {exc.problem}"]
    try:
        old = {entry.path: entry for entry in load_registry(registry_file, home=home).entries}
    except RegistryError:
        old = {}  # created or repaired: every entry that approves anything must be backed
    reader = TaskReader(mission_control_db)
    problems: list[str] = []
    for entry in new.entries:
        before = old.get(entry.path)
        if before is not None and _grant(before) == _grant(entry):
            continue
        approval = judge_entry(entry)
        if not approval.ok:
            continue  # approves nothing (revoked, malformed...): no approval needed
        if entry.token != CEO_TOKEN or entry.mc_task is None:
            problems.append(
                f"registry entry {entry.zakon_id!r} ({entry.file_path}): a new or changed "
                f"entry needs ceo_approved_token {CEO_TOKEN} and an mc_task; files are never "
                "grandfathered after the fact"
            )
            continue
        verdict = _task_approval(entry, reader, approval)
        if isinstance(verdict, CannotJudge):
            return verdict
        if not verdict.ok:
            problems.append(
                f"registry entry {entry.zakon_id!r} ({entry.file_path}): {verdict.detail}"
            )
    return problems

"""Performing a plan: one step at a time, skipping the steps already done (so a second run
does nothing), checking each step took effect, appending one audit line per step done (or
failed) to ``<root>/state/cutover/audit.jsonl`` (0600), and stopping at the first failure with
the commands that undo the steps done so far, newest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.cutover.runner import CommandError, CommandRunner
from fleet.cutover.steps import Step, StepFailed
from shared.files import append_jsonl

__all__ = ["ApplyResult", "apply_plan"]

_AUDIT_MAX_BYTES = 5_000_000
_AUDIT_KEEP = 5


@dataclass
class ApplyResult:
    done: list[Step] = field(default_factory=list)  # performed in this run
    skipped: list[Step] = field(default_factory=list)
    failed: Step | None = None
    reason: str = ""

    def rollback(self) -> list[str]:
        """Undo for the steps this run performed, newest first."""
        return [cmd for step in reversed(self.done) for cmd in step.rollback()]


def _audit(path: Path, context: Mapping[str, Any], step: Step, outcome: str, **extra: Any) -> None:
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **context,
        "step": step.key,
        "title": step.title,
        "outcome": outcome,
        "commands": step.commands(),
        "rollback": step.rollback(),
        **step.record(),
        **extra,
    }
    append_jsonl(path, record, max_bytes=_AUDIT_MAX_BYTES, keep=_AUDIT_KEEP)


def apply_plan(
    steps: Sequence[Step],
    runner: CommandRunner,
    audit_file: Path,
    context: Mapping[str, Any],
    echo: Callable[[str], None],
) -> ApplyResult:
    result = ApplyResult()
    for number, step in enumerate(steps, start=1):
        try:
            if step.done(runner):
                result.skipped.append(step)
                echo(f"{number}. {step.title}: already done")
                continue
            echo(f"{number}. {step.title}")
            for command in step.commands():
                echo(f"     {command}")
            step.perform(runner)
            if not step.done(runner):
                raise StepFailed("it ran but did not take effect (check its output above)")
        except (StepFailed, CommandError, OSError) as exc:
            reason = str(exc)
            result.failed, result.reason = step, reason
            _audit(audit_file, context, step, "failed", error=reason)
            return result
        result.done.append(step)
        _audit(audit_file, context, step, "done")
    return result

"""The litestream configs around a cutover: the old replicate config (``~/system/config/
litestream.yml`` and whatever ``-config`` the legacy job ran), linted through ``fleet litestream
lint`` (restore-loop's command: the app runs it, it does not import the daemon), and the
configs the fleet's own litestream processes will run, which ``fleet litestream config``
generates from the tier table when they are missing.

Reading and running the lint command only; the steps that move or generate files are in
``fleet.cutover.steps``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.cutover.runner import CommandError, CommandRunner
from shared.units import ServiceSpec

__all__ = ["LintResult", "config_args", "lint_old_config", "missing_configs"]


@dataclass(frozen=True)
class LintResult:
    path: Path
    findings: tuple[str, ...] = ()  # "severity: path: message"
    error: str | None = None


def config_args(argv: Iterable[str]) -> list[Path]:
    """The files a litestream command line names with ``-config FILE`` / ``-config=FILE``."""
    words = [w for arg in argv for w in arg.split()]
    found: list[Path] = []
    for index, word in enumerate(words):
        if word in ("-config", "--config") and index + 1 < len(words):
            found.append(Path(words[index + 1]).expanduser())
        elif word.startswith(("-config=", "--config=")):
            found.append(Path(word.split("=", 1)[1]).expanduser())
    return found


def lint_old_config(runner: CommandRunner, path: Path) -> LintResult:
    """``fleet litestream lint --json PATH``: exit 0 clean, 1 findings, else unusable."""
    try:
        result = runner.run(["fleet", "litestream", "lint", "--json", str(path)])
    except CommandError as exc:
        return LintResult(path, error=str(exc))
    if result.returncode not in (0, 1):
        return LintResult(path, error=result.why())
    try:
        raw = json.loads(result.stdout or "[]")
    except ValueError:
        return LintResult(path, error=f"`fleet litestream lint` printed no JSON ({result.why()})")
    findings = tuple(
        f"{f.get('severity')}: {f.get('path')}: {f.get('message')}"
        for f in raw
        if isinstance(f, dict)
    )
    return LintResult(path, findings)


def missing_configs(specs: Sequence[ServiceSpec], restore_config: Path | None) -> list[Path]:
    """Configs the fleet's litestream processes will read that do not exist yet: the
    replicate services' ``-config`` files (primary) and restore-loop's ``config_path``
    (``restore_config``, when restore-loop runs here)."""
    wanted: list[Path] = []
    for spec in specs:
        if not spec.fleet_daemon and spec.argv and Path(spec.argv[0]).name == "litestream":
            wanted += config_args(spec.argv)
    if restore_config is not None:
        wanted.append(restore_config)
    return [p for p in dict.fromkeys(wanted) if not p.exists()]

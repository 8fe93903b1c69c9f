"""The ordered switch for one host, from its Survey: secrets first (the fleet's services need
them to start), then the fleet's files (written, not started), then each legacy job stopped and
its file moved aside, the old litestream.yml retired, ops-watchdog pointed at the fleet's
labels, and only then the fleet's services started. Stopping the old jobs before starting the
new ones means there is never a moment with two reactors or two replicators; the watchdog is
edited after the old plists are gone, so it cannot reload one in between.

Pure over the Survey: building a plan changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from fleet.cutover.steps import (
    ChmodStep,
    FleetUnitsStep,
    GenerateStep,
    LegacyLaunchdStep,
    LegacySystemdStep,
    RetireFileStep,
    SecretsFileStep,
    Step,
    WatchdogStep,
)
from fleet.cutover.survey import Survey, conflicts, generate_argv

__all__ = ["blockers", "build_plan", "verify_command"]


def build_plan(s: Survey) -> list[Step]:
    steps: list[Step] = []
    for state in s.env_files:
        # another owner, unparseable lines: by hand (apply refuses, see blockers)
        if not state.ok and not (state.owner or state.bad_lines or state.unreadable):
            steps.append(SecretsFileStep(state, s.env_sources))
    if s.slack.token_mode is not None and s.slack.token_file is not None:
        steps.append(ChmodStep(s.slack.token_file, s.slack.token_mode, "Slack token file"))
    by_command: dict[tuple[str, ...], list[Path]] = {}
    for path in s.missing_configs:
        argv = generate_argv(s, path)
        if argv is not None:
            by_command.setdefault(tuple(argv), []).append(path)
    for command, files in by_command.items():
        steps.append(GenerateStep(command, files, "the fleet's litestream configs"))
    write = FleetUnitsStep(s.host, start=False)
    steps.append(write)
    for svc in s.legacy:
        if svc.manager == "launchd":
            steps.append(LegacyLaunchdStep(s.host, svc))
        else:
            steps.append(LegacySystemdStep(svc))
    for lint in s.litestream:
        if lint.findings and not lint.error:
            steps.append(RetireFileStep(lint.path, "the old litestream replicate config"))
    if s.watchdog_legacy:
        steps.append(WatchdogStep(s.watchdog_path, s.label_replacements()))
    steps.append(FleetUnitsStep(s.host, start=True, after=write))
    return steps


def blockers(s: Survey) -> list[str]:
    """Conflicts apply cannot fix: it refuses to start while any remains."""
    return [f"{c.subject}: {c.problem}; fix: {c.fix}" for c in conflicts(s) if not c.apply_fixes]


def verify_command(s: Survey) -> str:
    config = f" --config {s.host.config_file}" if s.host.config_file else ""
    return f"fleet status{config}"

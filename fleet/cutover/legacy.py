"""The legacy jobs the fleet replaces, and how to recognise one on a host: a LaunchAgent plist
or a systemd unit, by its label or unit name, or by the script it runs (the health-server.js
and ollama-health-monitor.js agents have no known label). Found on a host, each becomes a
``LegacyService``.

This is the app's knowledge of the hosts' history (seed: "ANVIL SPOF Elimination Plan",
"Email-Reactor"); it names fleet services by name. Reading and parsing only: a plist or unit
that cannot be parsed is reported, never fatal, and an environment value read from one is
kept in memory for the secrets file and never shown.
"""

from __future__ import annotations

import plistlib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.parsers.expat import ExpatError

__all__ = [
    "LEGACY_JOBS",
    "LegacyJob",
    "LegacyService",
    "Manager",
    "read_plist",
    "read_unit",
]

Manager = Literal["launchd", "systemd-user", "systemd-system"]
FLEET_LABEL_PREFIX = "no.alai.fleet."
FLEET_UNIT_PREFIX = "alai-fleet-"


@dataclass(frozen=True)
class LegacyJob:
    """One legacy job: what it did, which fleet service replaces it (``"litestream-*"``: the
    restore-loop manifest's ``litestream-<class>`` replicate companions), and how to know it."""

    name: str
    replaced_by: str
    what: str
    labels: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()  # file names it runs (node X.js, bash X.sh)
    programs: tuple[tuple[str, ...], ...] = ()  # every word present in its command line
    units: tuple[str, ...] = ()  # systemd unit file names

    def replacements(self, services: Iterable[str]) -> list[str]:
        """The fleet services among ``services`` that replace this job."""
        if self.replaced_by.endswith("*"):
            return [s for s in services if s.startswith(self.replaced_by[:-1])]
        return [s for s in services if s == self.replaced_by]

    def runs(self, argv: Sequence[str]) -> bool:
        """Does this command line run the job (by script or program words)?"""
        words: set[str] = set()
        for arg in argv:
            try:
                tokens = shlex.split(arg)
            except ValueError:
                tokens = arg.split()
            words.update(Path(t).name for t in tokens)
        if any(script in words for script in self.scripts):
            return True
        return any(all(w in words for w in program) for program in self.programs)


LEGACY_JOBS: tuple[LegacyJob, ...] = (
    LegacyJob(
        "inbox-watcher",
        "email-reactor",
        "inbox-watcher.js: triage new mail into Mission Control tasks every 5 minutes",
        labels=("no.alai.inbox-watcher",),
        scripts=("inbox-watcher.js",),
        units=("inbox-watcher.service", "inbox-watcher.timer"),
    ),
    LegacyJob(
        "email-reactor-digest",
        "email-reactor",
        "email-reactor-digest.js: the 08:00 #ceo digest",
        labels=("com.john.email-reactor-digest",),
        scripts=("email-reactor-digest.js",),
        units=("email-reactor-digest.service", "email-reactor-digest.timer"),
    ),
    LegacyJob(
        "litestream",
        "litestream-*",
        "litestream replicate with the old litestream.yml (a second replicator on the same DBs)",
        labels=("com.alai.litestream",),
        programs=(("litestream", "replicate"),),
        units=("litestream.service",),
    ),
    LegacyJob(
        "litestream-restore",
        "restore-loop",
        "litestream-restore-loop.sh: the standby's restore shell loop",
        labels=("com.alai.litestream-restore",),
        scripts=("litestream-restore-loop.sh", "litestream-restore.sh"),
        units=("litestream-restore.service",),
    ),
    LegacyJob(
        "health-server",
        "heartbeat",
        "health-server.js: the host health endpoint on :8099",
        scripts=("health-server.js",),
        units=("health-server.service",),
    ),
    LegacyJob(
        "ollama-health-monitor",
        "ollama-health",
        "ollama-health-monitor.js: the Ollama health/routing file",
        scripts=("ollama-health-monitor.js",),
        units=("ollama-health-monitor.service",),
    ),
)


@dataclass(frozen=True)
class LegacyService:
    """A legacy job found on this host: its file, its launchd label or unit name, the command
    line, and (for the secrets file) its environment. ``unreadable`` says why the file could
    not be parsed (it was recognised by its name)."""

    job: LegacyJob
    manager: Manager
    path: Path
    name: str
    argv: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    unreadable: str | None = None

    @property
    def shown(self) -> str:
        return f"{self.name} ({self.path})"


def _job_named(name: str, attribute: str) -> LegacyJob | None:
    for job in LEGACY_JOBS:
        if name in getattr(job, attribute):
            return job
    return None


def _job_running(argv: Sequence[str]) -> LegacyJob | None:
    for job in LEGACY_JOBS:
        if job.runs(argv):
            return job
    return None


def read_plist(path: Path) -> LegacyService | str | None:
    """The legacy job a LaunchAgent plist runs (a LegacyService), None when it runs none (or
    is one of the fleet's own), or a warning when it cannot be parsed and its file name is no
    legacy label (launchd cannot load it either)."""
    label = path.name.removesuffix(".plist")
    if label.startswith(FLEET_LABEL_PREFIX):
        return None
    try:
        data = plistlib.loads(path.read_bytes())
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror}"
        data = None
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError) as exc:
        problem = f"not a valid plist: {str(exc)[:120]}"
        data = None
    else:
        problem = "" if isinstance(data, dict) else "not a plist dictionary"
    if not isinstance(data, dict):
        job = _job_named(label, "labels")
        if job is None:
            return f"{path}: {problem}; cannot tell what it runs"
        return LegacyService(job, "launchd", path, label, unreadable=problem)
    if isinstance(data.get("Label"), str):
        label = data["Label"]
    if label.startswith(FLEET_LABEL_PREFIX):
        return None
    raw_args = data.get("ProgramArguments")
    argv = [a for a in raw_args if isinstance(a, str)] if isinstance(raw_args, list) else []
    if isinstance(data.get("Program"), str):
        argv.insert(0, data["Program"])
    job = _job_named(label, "labels") or _job_running(argv)
    if job is None:
        return None
    env = data.get("EnvironmentVariables")
    environment = (
        {k: v for k, v in env.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(env, dict)
        else {}
    )
    return LegacyService(job, "launchd", path, label, tuple(argv), environment)


def _unit_assignments(text: str) -> tuple[list[str], dict[str, str]]:
    """ExecStart= command lines and Environment= variables of a unit's text."""
    commands: list[str] = []
    environment: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key == "ExecStart":
            commands.append(value.strip().lstrip("-@:+!"))
        elif key == "Environment":
            try:
                pairs = shlex.split(value)
            except ValueError:
                continue
            for pair in pairs:
                name, eq, val = pair.partition("=")
                if eq and name:
                    environment[name] = val
    return commands, environment


def read_unit(path: Path, manager: Manager) -> LegacyService | str | None:
    """The legacy job a systemd unit runs (by unit name, or by the script in ExecStart=),
    None for other units and the fleet's own, or a warning for an unreadable unit."""
    name = path.name
    if name.startswith(FLEET_UNIT_PREFIX):
        return None
    by_name = _job_named(name, "units")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = f"cannot read it: {getattr(exc, 'strerror', None) or exc}"
        if by_name is None:
            return f"{path}: {why}; cannot tell what it runs"
        return LegacyService(by_name, manager, path, name, unreadable=why)
    commands, environment = _unit_assignments(text)
    job = by_name or _job_running(commands)
    if job is None:
        return None
    return LegacyService(job, manager, path, name, tuple(commands), environment)

"""The steps of a cutover. Each says what it does and how to undo it (as commands an operator
can run), knows whether it is already done (so ``apply`` can be run again and skips what is
done), and performs itself through the ``CommandRunner``. A step raises ``StepFailed`` with
the reason; it never leaves a half-written file (atomic writes) and keeps a backup of any file
it rewrites. Nothing here prints or records a secret's value.
"""

from __future__ import annotations

import json
import shutil
import stat
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet.cutover.host import DISABLED_DIR, Host
from fleet.cutover.legacy import LegacyService
from fleet.cutover.runner import CommandRunner, shown
from fleet.cutover.secrets import EnvFileState
from fleet.cutover.watchdog import legacy_labels_in, read_watchdog, replace_labels
from shared.envfile import parse_env_text, private_file_problem, render_env_text
from shared.files import atomic_write_text, ensure_private_dir
from shared.units import generate

__all__ = [
    "ChmodStep",
    "FleetUnitsStep",
    "GenerateStep",
    "LegacyLaunchdStep",
    "LegacySystemdStep",
    "RetireFileStep",
    "SecretsFileStep",
    "Step",
    "StepFailed",
    "WatchdogStep",
]

BACKUP_SUFFIX = ".pre-cutover"


class StepFailed(Exception):
    """A step could not be done; the message says why."""


class Step(ABC):
    """One step: ``key`` (stable, for the audit file), a title, the commands it runs and the
    commands that undo it."""

    key: str
    title: str

    @abstractmethod
    def commands(self) -> list[str]: ...

    @abstractmethod
    def rollback(self) -> list[str]: ...

    @abstractmethod
    def done(self, runner: CommandRunner) -> bool: ...

    @abstractmethod
    def perform(self, runner: CommandRunner) -> None: ...

    def record(self) -> dict[str, Any]:
        """Extra audit fields (names and paths, never values)."""
        return {}


def _run(runner: CommandRunner, argv: Sequence[str]) -> None:
    result = runner.run(argv)
    if not result.ok:
        raise StepFailed(result.why())


def _move(source: Path, target: Path) -> None:
    if target.exists():
        raise StepFailed(f"{target} already exists; move it away first")
    ensure_private_dir(target.parent)
    try:
        source.rename(target)
    except OSError as exc:
        raise StepFailed(f"cannot move {source} to {target}: {exc.strerror}") from None


def disabled_place(path: Path) -> Path:
    """Where a retired file goes: ``<its dir>/disabled-by-fleet/<name>`` (``.1``, ``.2`` ...
    when an earlier cutover left one there)."""
    directory = path.parent / DISABLED_DIR
    target = directory / path.name
    index = 1
    while target.exists():
        target = directory / f"{path.name}.{index}"
        index += 1
    return target


class SecretsFileStep(Step):
    """Write the missing variables into a secrets file (0600), copied from the legacy jobs'
    environment, or only tighten its mode."""

    def __init__(self, state: EnvFileState, sources: Mapping[str, tuple[str, Path]]) -> None:
        self.state = state
        self.path = state.path
        self.additions = {v: sources[v][0] for v in state.missing if v in sources}
        self.origins = sorted({str(sources[v][1]) for v in self.additions})
        self.backup = self.path.with_name(self.path.name + BACKUP_SUFFIX)
        self.key = f"secrets-file:{self.path}"
        self.title = f"secrets file for {', '.join(state.services)}: {self.path}"

    def commands(self) -> list[str]:
        if self.additions:
            return [
                f"copy {', '.join(self.additions)} from {', '.join(self.origins)} into "
                f"{self.path} (mode 0600)"
            ]
        return [f"chmod 600 {self.path}"]

    def rollback(self) -> list[str]:
        if not self.state.exists:
            return [f"rm {self.path}"]
        if self.additions:
            return [f"cp -p {self.backup} {self.path}"]
        return [f"chmod {self.state.mode or 0o600:04o} {self.path}"]

    def done(self, runner: CommandRunner) -> bool:
        if private_file_problem(self.path) is not None:
            return False
        try:
            values, _problems = parse_env_text(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return False
        return all(v in values for v in self.state.variables)

    def perform(self, runner: CommandRunner) -> None:
        if not self.additions:
            self.path.chmod(0o600)
            return
        existing = ""
        if self.path.exists():
            try:
                existing = self.path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise StepFailed(f"{self.path} is not UTF-8 text; repair it by hand") from None
            if not self.backup.exists():
                shutil.copy2(self.path, self.backup)
                self.backup.chmod(0o600)
        values, _problems = parse_env_text(existing)
        todo = {k: v for k, v in self.additions.items() if k not in values}
        try:
            text = render_env_text(existing, todo)
        except ValueError as exc:
            raise StepFailed(f"{self.path}: {exc}") from None
        atomic_write_text(self.path, text, mode=0o600)

    def record(self) -> dict[str, Any]:
        return {"variables": sorted(self.additions), "from": self.origins}


class ChmodStep(Step):
    """Make a secret's file private (the Slack token file)."""

    def __init__(self, path: Path, old_mode: int, what: str) -> None:
        self.path = path
        self.old_mode = old_mode
        self.key = f"chmod:{path}"
        self.title = f"make the {what} private: {path}"

    def commands(self) -> list[str]:
        return [f"chmod 600 {self.path}"]

    def rollback(self) -> list[str]:
        return [f"chmod {self.old_mode:04o} {self.path}"]

    def done(self, runner: CommandRunner) -> bool:
        try:
            return stat.S_IMODE(self.path.stat().st_mode) & 0o077 == 0
        except OSError:
            return False

    def perform(self, runner: CommandRunner) -> None:
        self.path.chmod(0o600)


class FleetUnitsStep(Step):
    """``fleet units install`` for this host: write the fleet's units / plists (``start``:
    also enable and start them, ``--now``)."""

    def __init__(self, host: Host, *, start: bool, after: FleetUnitsStep | None = None) -> None:
        self.host = host
        self.start = start
        # the write step before this start step: when it rewrote files in this run, the
        # services must be (re)started even if the old definitions are loaded
        self.after = after
        self.wrote = False
        self.key = "fleet-units:start" if start else "fleet-units:write"
        where = host.fleet_unit_dir
        self.title = (
            f"start the fleet's services ({host.target})"
            if start
            else f"write the fleet's {host.target} files into {where}"
        )

    def _common(self) -> list[str]:
        h = self.host
        return ["--target", h.target, "--mode", h.mode, "--dest", str(h.fleet_unit_dir)]

    def argv(self) -> list[str]:
        h = self.host
        argv = ["fleet", "units", "install", *self._common(), "--prefix", str(h.prefix)]
        if h.mode == "system" and h.service_user:
            argv += ["--user", h.service_user]
        if h.config_file is not None:
            argv += ["--config", str(h.config_file)]
        return [*argv, "--now"] if self.start else argv

    def commands(self) -> list[str]:
        return [shown(self.argv())]

    def rollback(self) -> list[str]:
        return [shown(["fleet", "units", "uninstall", "--now", *self._common()])]

    def _expected(self) -> dict[str, bytes]:
        h = self.host
        return generate(h.config, h.manifests, h.target, h.layout()).files

    def _written(self) -> bool:
        for name, data in self._expected().items():
            try:
                if (self.host.fleet_unit_dir / name).read_bytes() != data:
                    return False
            except OSError:
                return False
        return True

    def _running(self, runner: CommandRunner) -> bool:
        h = self.host
        names = sorted(self._expected())
        if not names:
            return True
        if h.target == "launchd":
            return all(
                runner.run(
                    ["launchctl", "print", f"{h.fleet_domain}/{n.removesuffix('.plist')}"]
                ).ok
                for n in names
            )
        sc = ["systemctl"] if h.mode == "system" else ["systemctl", "--user"]
        # one unit per call: with several, `is-active` succeeds when ANY of them is active
        return all(runner.run([*sc, "is-active", "--quiet", n]).ok for n in names)

    def done(self, runner: CommandRunner) -> bool:
        if not self._written():
            return False
        if not self.start:
            return True
        if self.after is not None and self.after.wrote and not self.wrote:
            return False
        return self._running(runner)

    def perform(self, runner: CommandRunner) -> None:
        rewritten = self.start and self.after is not None and self.after.wrote
        h = self.host
        names = sorted(self._expected())
        if rewritten and h.target == "launchd":
            # `install --now` sees the files written by the write step as unchanged and
            # only bootstraps: unload the loaded ones so the new definitions are loaded
            for label in (n.removesuffix(".plist") for n in names):
                if runner.run(["launchctl", "print", f"{h.fleet_domain}/{label}"]).ok:
                    _run(runner, ["launchctl", "bootout", f"{h.fleet_domain}/{label}"])
        sc = ["systemctl"] if h.mode == "system" else ["systemctl", "--user"]
        active: list[str] = []
        if rewritten and h.target == "systemd":
            active = [n for n in names if runner.run([*sc, "is-active", "--quiet", n]).ok]
        _run(runner, self.argv())
        if active:  # those running the old definitions restart with the new ones
            _run(runner, [*sc, "try-restart", *active])
        self.wrote = True

    def record(self) -> dict[str, Any]:
        return {"files": sorted(self._expected())}


class LegacyLaunchdStep(Step):
    """Stop a legacy LaunchAgent and move its plist aside, so launchd never loads it again."""

    def __init__(self, host: Host, service: LegacyService) -> None:
        self.host = host
        self.service = service
        self.path = service.path
        self.target = disabled_place(service.path)
        self.key = f"legacy:{service.name}"
        self.title = f"stop the legacy {service.job.name}: {service.name}"

    def commands(self) -> list[str]:
        return [
            f"launchctl bootout {self.host.domain} {self.path}",
            f"mkdir -p {self.target.parent} && mv {self.path} {self.target}",
        ]

    def rollback(self) -> list[str]:
        return [
            f"mv {self.target} {self.path}",
            f"launchctl bootstrap {self.host.domain} {self.path}",
        ]

    def done(self, runner: CommandRunner) -> bool:
        return not self.path.exists()

    def perform(self, runner: CommandRunner) -> None:
        loaded = runner.run(["launchctl", "print", f"{self.host.domain}/{self.service.name}"])
        if loaded.ok:
            _run(runner, ["launchctl", "bootout", self.host.domain, str(self.path)])
        _move(self.path, self.target)

    def record(self) -> dict[str, Any]:
        return {"moved_to": str(self.target)}


class LegacySystemdStep(Step):
    """Stop and disable a legacy systemd unit and move its file aside."""

    def __init__(self, service: LegacyService) -> None:
        self.service = service
        self.path = service.path
        self.target = disabled_place(service.path)
        self.systemctl = (
            ["systemctl", "--user"] if service.manager == "systemd-user" else ["systemctl"]
        )
        self.key = f"legacy:{service.manager}:{service.name}"
        self.title = f"stop the legacy {service.job.name}: {service.name}"

    def commands(self) -> list[str]:
        sc = shown(self.systemctl)
        return [
            f"{sc} disable --now {self.service.name}",
            f"mkdir -p {self.target.parent} && mv {self.path} {self.target}",
            f"{sc} daemon-reload",
        ]

    def rollback(self) -> list[str]:
        sc = shown(self.systemctl)
        return [
            f"mv {self.target} {self.path}",
            f"{sc} daemon-reload",
            f"{sc} enable --now {self.service.name}",
        ]

    def done(self, runner: CommandRunner) -> bool:
        return not self.path.exists()

    def perform(self, runner: CommandRunner) -> None:
        _run(runner, [*self.systemctl, "disable", "--now", self.service.name])
        _move(self.path, self.target)
        _run(runner, [*self.systemctl, "daemon-reload"])

    def record(self) -> dict[str, Any]:
        return {"moved_to": str(self.target)}


class RetireFileStep(Step):
    """Move a legacy config file aside (the old litestream.yml)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.target = disabled_place(path)
        self.key = f"retire-file:{path}"
        self.title = f"retire {what}: {path}"

    def commands(self) -> list[str]:
        return [f"mkdir -p {self.target.parent} && mv {self.path} {self.target}"]

    def rollback(self) -> list[str]:
        return [f"mv {self.target} {self.path}"]

    def done(self, runner: CommandRunner) -> bool:
        return not self.path.exists()

    def perform(self, runner: CommandRunner) -> None:
        _move(self.path, self.target)


class GenerateStep(Step):
    """Run a ``fleet`` command that writes generated files (``fleet litestream config``)."""

    def __init__(self, argv: Sequence[str], files: Sequence[Path], what: str) -> None:
        self.argv = list(argv)
        self.files = list(files)
        self.key = f"generate:{','.join(str(f) for f in self.files)}"
        self.title = f"generate {what}"

    def commands(self) -> list[str]:
        return [shown(self.argv)]

    def rollback(self) -> list[str]:
        return ["rm " + " ".join(shown([str(f)]) for f in self.files)]

    def done(self, runner: CommandRunner) -> bool:
        return all(f.exists() for f in self.files)

    def perform(self, runner: CommandRunner) -> None:
        _run(runner, self.argv)


class WatchdogStep(Step):
    """Point ops-watchdog.json's critical_services at the fleet's labels (backup first)."""

    def __init__(self, path: Path, replacements: Mapping[str, Sequence[str]]) -> None:
        self.path = path
        self.replacements = {k: list(v) for k, v in replacements.items()}
        self.backup = path.with_name(path.name + BACKUP_SUFFIX)
        self.key = f"ops-watchdog:{path}"
        self.title = f"point ops-watchdog at the fleet: {path}"

    def _listed(self) -> list[str] | None:
        wd = read_watchdog(self.path)
        return None if wd.data is None else legacy_labels_in(wd.data, list(self.replacements))

    def commands(self) -> list[str]:
        listed = self._listed() or list(self.replacements)
        changes = "; ".join(f"{old} -> {', '.join(self.replacements[old])}" for old in listed)
        return [f"cp -p {self.path} {self.backup}", f"critical_services: {changes}"]

    def rollback(self) -> list[str]:
        return [f"cp -p {self.backup} {self.path}"]

    def done(self, runner: CommandRunner) -> bool:
        return self._listed() == []

    def perform(self, runner: CommandRunner) -> None:
        wd = read_watchdog(self.path)
        if wd.data is None:
            raise StepFailed(f"{self.path}: {wd.problem or 'missing'}")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if not self.backup.exists():
            shutil.copy2(self.path, self.backup)
        text = json.dumps(replace_labels(wd.data, self.replacements), indent=2) + "\n"
        atomic_write_text(self.path, text, mode=mode)  # other tools read it: keep its mode

    def record(self) -> dict[str, Any]:
        return {"backup": str(self.backup), "replaced": self.replacements}

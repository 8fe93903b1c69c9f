"""Putting generated service files in place: the install layout (venv, service account and its
group), where the service manager reads the files (/etc/systemd/system, ~/.config/systemd/user,
/Library/LaunchDaemons, ~/Library/LaunchAgents), the plan of ``systemctl``/``launchctl``
commands that makes it run exactly the installed set, and running that plan (or only printing
it, or, for ``--dry-run``, the diff of each file it would write). Files are written only when
their content changed, at 0644 (units and plists hold no secrets); nothing here removes a file
the generator did not write.
"""

from __future__ import annotations

import difflib
import getpass
import grp
import json
import os
import pwd
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from shared.config import FleetConfig
from shared.config_files import find_config_file
from shared.exitcodes import ExitCode
from shared.files import atomic_write_text
from shared.units import InstallLayout, Mode, Target

__all__ = [
    "LAUNCH_DAEMONS",
    "Step",
    "account_group",
    "dest_dir",
    "execute",
    "file_diff",
    "install_layout",
    "install_plan",
    "launchd_domain",
    "make_write_dirs",
    "print_dry_run",
    "uninstall_plan",
    "write_if_changed",
]


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically (0644: generated files hold no secrets); True when the
    content changed."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_text(path, data.decode("utf-8"), mode=0o644)
    return True


def file_diff(path: Path, data: bytes) -> str | None:
    """The unified diff from the file at ``path`` (or nothing) to ``data``; None when equal."""
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as exc:
        return f"--- {path} (unreadable: {exc.strerror})\n+++ {path}\n"
    if old == data:
        return None
    before = old.decode("utf-8", "replace").splitlines(keepends=True) if old is not None else []
    lines = difflib.unified_diff(
        before,
        data.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=str(path) if old is not None else "/dev/null",
        tofile=str(path),
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass(frozen=True)
class Step:
    """One thing install/uninstall does after writing files: a command, or removing a file.
    ``check``: a failure stops the plan (unchecked steps may fail harmlessly)."""

    argv: tuple[str, ...] = ()
    remove: Path | None = None
    check: bool = True

    def render(self) -> str:
        if self.remove is not None:
            return f"rm -f {shlex.quote(str(self.remove))}"
        text = " ".join(shlex.quote(a) for a in self.argv)
        return text if self.check else f"{text} || true"


#: where LaunchDaemons live: launchd loads them at boot (root-owned, not group/other-writable)
LAUNCH_DAEMONS = Path("/Library/LaunchDaemons")


def account_group(user: str) -> str | None:
    """The primary group of ``user`` on this machine, None when either is unknown here."""
    try:
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except KeyError:
        return None


def install_layout(
    config: FleetConfig,
    config_path: str | None,
    mode: Mode,
    prefix: str | None,
    service_user: str | None,
    group: str | None = None,
) -> InstallLayout:
    """The layout ``fleet units`` renders for: the venv (``prefix``, else ``[fleet]
    install_prefix``, else this one), the config file found, and in system mode the account
    (``service_user``, else ``[fleet] service_user``, else $SUDO_USER, else whoever runs this)
    with its group (``group``, else the account's primary group here)."""
    venv = prefix or config.fleet.install_prefix or sys.prefix
    config_file = find_config_file(config_path)
    user: str | None = None
    if mode == "system":
        user = (
            service_user
            or config.fleet.service_user
            or os.environ.get("SUDO_USER")
            or getpass.getuser()
        )
    return InstallLayout(
        mode=mode,
        prefix=Path(os.path.abspath(Path(venv).expanduser())),
        config_file=Path(os.path.abspath(config_file)) if config_file else None,
        user=user,
        home=Path.home(),
        group=(group or account_group(user)) if user else None,
    )


def dest_dir(target: Target, mode: Mode, dest: str | None, destdir: str | None = None) -> Path:
    """Where generated files are written: ``dest``, else the directory the service manager
    reads them from (see ``service_dir``), under ``destdir`` when given (staging)."""
    if dest:
        return Path(dest).expanduser()
    standard = service_dir(target, mode)
    if destdir:
        return Path(destdir).expanduser() / standard.relative_to(standard.anchor)
    return standard


def service_dir(target: Target, mode: Mode) -> Path:
    """Where the service manager reads generated files on this host."""
    if target == "launchd":
        return LAUNCH_DAEMONS if mode == "system" else Path.home() / "Library" / "LaunchAgents"
    if mode == "system":
        return Path("/etc/systemd/system")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def _systemctl(mode: Mode) -> tuple[str, ...]:
    return ("systemctl",) if mode == "system" else ("systemctl", "--user")


def launchd_domain(mode: Mode = "user") -> str:
    """``system`` for LaunchDaemons, else the invoking user's ``gui/<uid>``."""
    return "system" if mode == "system" else f"gui/{os.getuid()}"


def install_plan(
    target: Target,
    mode: Mode,
    dest: Path,
    new: Sequence[str],
    changed: Sequence[str],
    unchanged: Sequence[str],
    stale: Sequence[str],
    loaded_from: Path | None = None,
) -> list[Step]:
    """The commands that make the service manager run exactly the installed set: stop and
    remove stale generated files, reload, enable/start everything, restart what changed.
    ``loaded_from``: the directory launchctl is told the plists are in, when they are written
    somewhere else first (staging under --destdir); default ``dest``."""
    steps: list[Step] = []
    if target == "systemd":
        sc = _systemctl(mode)
        if stale:
            steps.append(Step(argv=(*sc, "disable", "--now", *stale), check=False))
            steps += [Step(remove=dest / name) for name in stale]
        steps.append(Step(argv=(*sc, "daemon-reload")))
        names = {*new, *changed, *unchanged}
        # A scheduled job's service is started by its timer, never by install.
        timed = {n[: -len(".timer")] + ".service" for n in names if n.endswith(".timer")}
        every = sorted(names - timed)
        if every:
            steps.append(Step(argv=(*sc, "enable", "--now", *every)))
        restart = sorted(set(changed) - timed)
        if restart:
            steps.append(Step(argv=(*sc, "try-restart", *restart)))
        return steps
    domain = launchd_domain(mode)
    shown = loaded_from or dest
    for name in stale:
        steps.append(Step(argv=("launchctl", "bootout", f"{domain}/{name[:-6]}"), check=False))
        steps.append(Step(remove=dest / name))
    for name in sorted([*new, *changed, *unchanged]):
        label = name[: -len(".plist")]
        steps.append(Step(argv=("launchctl", "enable", f"{domain}/{label}")))
        if name in changed or name in new:
            steps.append(Step(argv=("launchctl", "bootout", f"{domain}/{label}"), check=False))
            steps.append(Step(argv=("launchctl", "bootstrap", domain, str(shown / name))))
        else:  # already loaded is fine; not loaded gets loaded
            steps.append(
                Step(argv=("launchctl", "bootstrap", domain, str(shown / name)), check=False)
            )
    return steps


def uninstall_plan(target: Target, mode: Mode, dest: Path, installed: Sequence[str]) -> list[Step]:
    steps: list[Step] = []
    if target == "systemd":
        sc = _systemctl(mode)
        if installed:
            steps.append(Step(argv=(*sc, "disable", "--now", *installed), check=False))
        steps += [Step(remove=dest / name) for name in installed]
        steps.append(Step(argv=(*sc, "daemon-reload")))
        if installed:
            steps.append(Step(argv=(*sc, "reset-failed", *installed), check=False))
        return steps
    domain = launchd_domain(mode)
    for name in installed:
        steps.append(Step(argv=("launchctl", "bootout", f"{domain}/{name[:-6]}"), check=False))
        steps.append(Step(remove=dest / name))
    return steps


def execute(steps: Sequence[Step], now: bool, runner: Callable[..., Any] = subprocess.run) -> int:
    """Run the plan (``now``), stopping at the first failing checked step, or print it."""
    if not now:
        if steps:
            click.echo("run these (or pass --now):")
        for step in steps:
            click.echo(f"  {step.render()}")
        return ExitCode.OK
    for step in steps:
        click.echo(f"$ {step.render()}")
        if step.remove is not None:
            step.remove.unlink(missing_ok=True)
            continue
        try:
            proc = runner(list(step.argv), capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            if step.check:
                click.echo(f"error: {step.argv[0]}: {exc}", err=True)
                return ExitCode.FAILURE
            continue
        if proc.stdout.strip():
            click.echo(proc.stdout.rstrip())
        if proc.returncode != 0 and step.check:
            click.echo(proc.stderr.rstrip(), err=True)
            click.echo(f"error: exit {proc.returncode}: {step.render()}", err=True)
            return ExitCode.FAILURE
    return ExitCode.OK


def make_write_dirs(dirs: Sequence[Path], owner: str | None) -> None:
    """Create the dirs a service writes (0700): under ProtectSystem=strict it cannot create
    them itself, and launchd needs the log dir to open StandardOutPath. Created as root for a
    system unit, they are handed to the service account."""
    ids: tuple[int, int] | None = None
    if owner and os.geteuid() == 0 and owner != "root":
        try:
            entry = pwd.getpwnam(owner)
            ids = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            click.echo(f"warning: no account {owner!r}; create it before starting", err=True)
    for directory in dirs:
        missing = [p for p in (directory, *directory.parents) if not p.exists()]
        if not missing:
            continue
        try:
            directory.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            click.echo(f"warning: cannot create {directory}: {exc.strerror}", err=True)
            continue
        click.echo(f"created {directory}")
        if ids is not None:
            for path in missing:
                os.chown(path, *ids)


def print_dry_run(layout: InstallLayout, gen: Any, directory: Path) -> None:
    """``units install --dry-run`` for one generated set: the diff of each file install would
    write, the generated files it would remove, the directories it would create and the
    commands ``--now`` would run. Changes nothing."""
    from shared.units import is_generated_file

    new: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []
    for name, data in sorted(gen.files.items()):
        diff = file_diff(directory / name, data)
        if diff is None:
            unchanged.append(name)
            click.echo(f"unchanged {directory / name}")
            continue
        (changed if (directory / name).exists() else new).append(name)
        click.echo(diff, nl=False)
    stale = sorted(
        p.name for p in directory.glob("*") if is_generated_file(p) and p.name not in gen.files
    )
    for name in stale:
        click.echo(f"would remove {directory / name} (generated, no longer wanted)")
    for wanted in gen.write_dirs:
        if not wanted.exists():
            click.echo(f"would create {wanted} (0700)")
    steps = install_plan(gen.target, layout.mode, directory, new, changed, unchanged, stale)
    click.echo("then, with --now, these would run:")
    for step in steps:
        click.echo(f"  {step.render()}")
    click.echo(
        f"dry run: {len(new)} new, {len(changed)} changed, {len(stale)} to remove in "
        f"{directory}; nothing was written"
    )


# Run by the install's own interpreter (it may be another venv than this process's): compile
# its site-packages, the fleet's packages wherever they live (an editable checkout too) and the
# standard library when writable, at PYTHONOPTIMIZE's level; print the directories it could not
# write that still lack byte-code at that level.
_COMPILE = r"""
import compileall, importlib.util, json, os, re, sys, sysconfig
level = int(sys.argv[1])
paths = sysconfig.get_paths()
dirs = [paths["purelib"], paths["platlib"]]
for name in ("shared", "daemons", "fleet"):
    spec = importlib.util.find_spec(name)
    dirs += list(spec.submodule_search_locations or []) if spec else []
stdlib = os.path.realpath(paths["stdlib"])
tests = re.compile(r"[\/](test|tests|idlelib|lib2to3)[\/]")
# the standard library's own site-packages is not this install's
stdlib_skip = re.compile(r"[\/](test|tests|idlelib|lib2to3|site-packages|dist-packages)[\/]")
missing = []
for d in dict.fromkeys(os.path.realpath(p) for p in [*dirs, stdlib]):
    if os.access(d, os.W_OK):
        skip = stdlib_skip if d == stdlib else tests
        compileall.compile_dir(d, quiet=2, optimize=level, rx=skip)
    elif d != stdlib:
        missing.append(d)
    else:  # a distribution's python may ship it compiled at every level
        probe = os.path.join(d, "json", "__init__.py")
        if not os.path.exists(importlib.util.cache_from_source(probe, optimization=level)):
            missing.append(d)
print(json.dumps(missing))
"""


def compile_for_units(prefix: Path, level: str, timeout_s: float = 600) -> str:
    """Byte-compile the install at the units' PYTHONOPTIMIZE level (``shared.units``), so the
    daemons load compiled code instead of compiling every module at every start when their
    account cannot write the cache. A sentence saying what was done, or what is left to do."""
    python = prefix / "bin" / "python"
    exe = str(python) if python.exists() else sys.executable
    try:
        out = subprocess.run(
            # -P: the packages the units import, never a namesake in the working directory
            # (a "-c" script's sys.path starts with it), which compileall would then walk
            [exe, "-P", "-c", _COMPILE, level],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        missing = [str(d) for d in json.loads(out.stdout.strip().splitlines()[-1])]
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        return f"warning: could not byte-compile {prefix} for PYTHONOPTIMIZE={level}: {exc}"
    if missing:
        dirs = " ".join(shlex.quote(d) for d in missing)
        return (
            f"warning: {dirs} not writable and not compiled for PYTHONOPTIMIZE={level}; the "
            f"daemons compile it at every start until root runs: {exe} -m compileall -q "
            f"-o {level} {dirs}"
        )
    return f"byte-compiled {prefix} for the units' PYTHONOPTIMIZE={level}"

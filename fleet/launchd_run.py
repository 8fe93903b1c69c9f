"""``fleet units launchd-run``: ``fleet run NAME`` as a launchd job runs it. The env files are
loaded first (fleet.env and fleet-NAME.env when they exist, then the declared secrets file,
each refused unless private), and exit 78 (invalid config, refused role, a secrets file that is
not private) becomes exit 0 with the reason and the restart command, so
KeepAlive{SuccessfulExit=false} restarts crashes but never loops on a refusal.

The plain forms the generated plists use are parsed here without click, as ``fleet.run`` does
for ``fleet run``: the job is the daemon's process for its whole life, and click with the CLI
behind it would cost every daemon on a Mac about 1.4 MiB of RSS (issue 15). Anything else
(help, a typo, an unknown daemon) goes to the click command, which calls ``launchd_run`` too.
This module must never import click, nor anything beyond the standard library and
``fleet.registry`` at top level.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleet.run import RunArgs

__all__ = ["DOMAINS", "LaunchdRunArgs", "fast_main", "launchd_refusal", "launchd_run", "parse_args"]

DOMAINS = ("system", "user")
_FILE_OPTIONS = {"--optional-env-file", "--env-file", "--config"}


@dataclass(frozen=True)
class LaunchdRunArgs:
    name: str
    optional_env_files: tuple[str, ...] = ()
    env_file: str | None = None
    domain: str = "user"
    config_path: str | None = None


def parse_args(args: list[str]) -> LaunchdRunArgs | None:
    """The words after ``fleet units launchd-run`` when click would take them unchanged; None
    for anything else (click answers it, errors and help included)."""
    from fleet.registry import LINES

    names = {line.name for line in LINES}
    name: str | None = None
    optional: list[str] = []
    values: dict[str, str] = {}
    words = iter(args)
    for word in words:
        key, eq, value = word.partition("=")
        if key in _FILE_OPTIONS or key == "--domain":
            given = value if eq else next(words, None)
            if not given:
                return None  # click's "requires an argument"
            if key in _FILE_OPTIONS and os.path.isdir(given):
                return None  # click's "is a directory"
            if key == "--domain" and given not in DOMAINS:
                return None  # click's invalid choice
            if key == "--optional-env-file":
                optional.append(given)
            else:
                values[key] = given  # the last one wins, as with click
        elif word in names and name is None:
            name = word
        else:
            return None
    if name is None:
        return None
    return LaunchdRunArgs(
        name,
        tuple(optional),
        values.get("--env-file"),
        values.get("--domain", "user"),
        values.get("--config"),
    )


def launchd_refusal(job: str, why: str, domain: str) -> NoReturn:
    """Under launchd a refusal exits 0 (KeepAlive{SuccessfulExit=false} would respawn a
    non-zero exit every ThrottleInterval forever): say why and how to restart it."""
    target = "system" if domain == "system" else f"gui/{os.getuid()}"
    print(
        f"fleet: {job} refused to start (exit 78: {why}); launchd will not restart it. Fix "
        f"it, then: launchctl kickstart -k {target}/no.alai.fleet.{job}",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(0)


def secrets(env_file: str) -> dict[str, str] | str:
    """The variables of a secrets file, or why it is refused (names the file and its mode,
    never a value)."""
    from shared.envfile import EnvFileError, read_env_file

    try:
        return read_env_file(Path(env_file))
    except EnvFileError as exc:
        return f"secrets file {exc}"


def launchd_run(args: LaunchdRunArgs, start: Callable[[RunArgs], object] | None = None) -> NoReturn:
    """Load the env files, then run the daemon in this process; exit 78 becomes 0. ``start``
    runs it (``fleet.run.run`` unless given: the click command gives ``fleet run``'s own
    checks of a NAME the plists never give)."""
    from fleet.run import RunArgs, run
    from shared.exitcodes import ExitCode

    wanted = [p for p in args.optional_env_files if os.path.lexists(p)]
    for path in [*wanted, *([args.env_file] if args.env_file is not None else [])]:
        loaded = secrets(path)
        if isinstance(loaded, str):
            launchd_refusal(args.name, loaded, args.domain)
        os.environ.update(loaded)
    try:
        (start or run)(RunArgs(args.name, config_path=args.config_path))
    except SystemExit as exc:
        if exc.code == ExitCode.CONFIG:
            launchd_refusal(args.name, "invalid config or wrong role", args.domain)
        raise
    raise SystemExit(ExitCode.OK)


def fast_main(args: list[str]) -> None:
    """``fleet units launchd-run ARGS`` without click when ``parse_args`` takes them (it then
    never returns); returns when click is to answer them."""
    parsed = parse_args(args)
    if parsed is None:
        return
    try:
        launchd_run(parsed)
    except KeyboardInterrupt:  # before the loop's handlers are in: as click's Abort
        print("aborted", file=sys.stderr, flush=True)
        raise SystemExit(1) from None

"""``fleet run``: what a daemon process does from its command line to its exit code, shared by
the click command (``fleet.cli.run``) and the fast path ``fleet.entry`` takes for the plain forms
(``fleet run NAME|--all [--once] [--dry-run] [--config PATH]``), which starts a daemon without
importing click (~1 MiB of every daemon's idle RSS, issue 15). ``parse_args`` answers only
those forms and returns None for anything else (help, a typo, an unknown daemon, a directory
given as --config), which click then handles exactly as before. This module must never import
click, nor anything beyond the standard library and ``fleet.registry`` at top level.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from pathlib import Path

    from shared.config import FleetConfig
    from shared.manifest import DaemonManifest

__all__ = ["RunArgs", "fast_main", "load_run_config", "parse_args", "run", "use_host_hash_key"]

FLAGS = {"--all": "run_all", "--once": "once", "--dry-run": "dry_run"}


@dataclass(frozen=True)
class RunArgs:
    name: str | None
    run_all: bool = False
    once: bool = False
    dry_run: bool = False
    config_path: str | None = None


def parse_args(args: list[str]) -> RunArgs | None:
    """The words after ``fleet run`` when they are one of the plain forms click would accept
    unchanged; None for anything else (click answers it, errors and help included)."""
    from fleet.registry import LINES

    names = {line.name for line in LINES}
    name: str | None = None
    flags = dict.fromkeys(FLAGS.values(), False)
    config_path: str | None = None
    words = iter(args)
    for word in words:
        if word in FLAGS:
            flags[FLAGS[word]] = True
        elif word == "--config" or word.startswith("--config="):
            value = word.partition("=")[2] if "=" in word else next(words, None)
            if not value or os.path.isdir(value):
                return None  # click's error
            config_path = value
        elif word in names and name is None:
            name = word
        else:
            return None  # an option, a second name or an unknown daemon: click's error
    if (name is None) != flags["run_all"]:
        return None  # "give a daemon NAME or --all (not both)": click's usage error
    return RunArgs(name, config_path=config_path, **flags)


def fast_main(args: list[str]) -> None:
    """``fleet run ARGS`` without click when ``parse_args`` takes them (it then never
    returns); returns when click is to answer them."""
    parsed = parse_args(args)
    if parsed is None:
        return
    from shared.exitcodes import ExitCode

    try:
        run(parsed)
    except KeyboardInterrupt:  # before the loop's handlers are in: as click's Abort
        _die(ExitCode.FAILURE, "aborted")


def _die(code: int, message: str) -> NoReturn:
    """``shared.cli.die`` for a command without ``--json``: the message on stderr, exit."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


def load_run_config(path: str | None, name: str | None) -> FleetConfig:
    """The config ``fleet run NAME`` runs with: only the shared sections' and NAME's own
    ``*_file`` secrets are read (``--all``: every section's). ConfigError if bad."""
    from fleet.config import load_config
    from shared.config import secret_sections_for

    sections = secret_sections_for(name.replace("-", "_")) if name else None
    return load_config(path, secret_sections=sections)


def _config_errors_exit(errors: list[tuple[str, str]]) -> None:
    """Exit 78 listing ``(path, message)`` errors the way an invalid config is shown."""
    from shared.exitcodes import ExitCode

    if errors:
        _die(
            ExitCode.CONFIG,
            f"invalid configuration: {len(errors)} error(s)\n"
            + "\n".join(f"  {path}: {msg}" for path, msg in errors),
        )


def use_host_hash_key(config: FleetConfig, *, create: bool) -> None:
    """Key the log hashes of addresses with this host's key (made at the first start; a dry
    run makes nothing and keeps a key of its own if there is none yet). Exit 78 naming the
    file when it is not private or not a key, 1 when it cannot be read or made."""
    from shared.exitcodes import ExitCode
    from shared.logging import HASH_KEY_FILE, HashKeyError, load_hash_key, use_hash_key

    try:
        key = load_hash_key(config.state_dir / HASH_KEY_FILE, create=create)
    except HashKeyError as exc:
        if exc.permanent:
            _die(ExitCode.CONFIG, f"invalid configuration: 1 error(s)\n  log-hash key {exc}")
        _die(ExitCode.FAILURE, f"fleet: log-hash key {exc}")
    if key is not None:
        use_hash_key(key)


def run(args: RunArgs) -> NoReturn:
    """Run daemon ``args.name`` (or every enabled one) until SIGTERM/SIGINT; SIGHUP reloads
    the config. The name is a registered one and exactly one of name / run_all is given."""
    import asyncio
    from pathlib import Path

    from fleet.registry import by_name, manifests
    from fleet.secret_files import env_file_errors, env_files
    from shared.config import ConfigError
    from shared.exitcodes import ExitCode

    # httpx's __init__ tries its command-line tool (``httpx._main``), which imports click (and
    # pygments and rich where installed) before failing on a host without rich: ~1-2 MiB that a
    # daemon, which never runs that tool, keeps for its life. Missing, the import fails at once
    # and httpx sets ``httpx.main = None``, as it does on a host without rich.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    name, config_path, dry_run = args.name, args.config_path, args.dry_run
    known = by_name()
    try:
        config = load_run_config(config_path, name)
    except ConfigError as exc:
        _die(ExitCode.CONFIG, exc.render())
    from shared.logfile import log_file_path
    from shared.logging import LogFileError, configure_logging
    from shared.runtime import run_daemons

    def chosen(cfg: FleetConfig) -> list[DaemonManifest]:
        if name:
            return [known[name]]
        return [m for m in manifests() if cfg.daemon_section(m.section_name).enabled]

    _config_errors_exit(env_file_errors(env_files(config, chosen(config), Path.home())))
    use_host_hash_key(config, create=not dry_run)
    daemon = name or "fleet"

    def log_to(cfg: FleetConfig) -> Path | None:
        """Logging per ``cfg``; its log file, if any (LogFileError when it cannot be opened)."""
        template = cfg.fleet.log_file
        log_file = log_file_path(template, daemon) if template is not None else None
        configure_logging(
            host=cfg.fleet.host, level=cfg.fleet.log_level, daemon=daemon, log_file=log_file
        )
        return log_file

    try:
        log_file = log_to(config)
    except LogFileError as exc:
        _config_errors_exit([("fleet.log_file", str(exc))])
    if log_file is not None and sys.stderr.isatty():
        print(f"fleet: logging to {log_file}", file=sys.stderr)  # not to this terminal

    def reload() -> tuple[FleetConfig, list[DaemonManifest]]:
        """SIGHUP: the config file (and FLEET_* of this process) again; ConfigError if bad,
        or if its log file cannot be opened (logging then stays as it was)."""
        fresh = load_run_config(config_path, name)
        try:
            log_to(fresh)
        except LogFileError as exc:
            raise ConfigError([("fleet.log_file", str(exc))]) from None
        return fresh, chosen(fresh)

    code = asyncio.run(
        run_daemons(
            chosen(config),
            config,
            once=args.once,
            dry_run=dry_run,
            fleet=manifests(),
            reload=reload,
        )
    )
    raise SystemExit(code)

"""The ``fleet`` command: run daemons, check config, show status, set role and silences; the
Mission Control ``mc`` verbs (``fleet.mc_cli``), the generators (``fleet.units_cli``) and each
daemon's own group (from its manifest) are imported only when used.

Exit codes (``shared.exitcodes``, docs/cli.md): 0 ok, 1 condition false or failure (a lease held
by another), 2 not found, 3 store unavailable, 64 usage, 75 busy, 78 invalid config or a daemon
refusing to run here. Under ``--json`` errors are ``{"error": ..., "code": N}`` on stdout
(``shared.cli.die``). Heavy imports stay inside the commands that need them: ``fleet mc ...
--db PATH`` runs inside pre-tool hooks and ``fleet status`` must answer in well under 0.3 s.
Nothing here prints a secret.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from shared.cli import (
    AppContext,
    config_errors,
    config_option,
    die,
    error_document,
    json_errors,
    json_option,
    load_config_or_exit,
    wants_json,
)
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.manifest import DaemonManifest

__all__ = ["APP_COMMANDS", "cli", "main"]

EX_OK, EX_FAIL, EX_NOT_FOUND, EX_STORE, EX_USAGE, EX_CONFIG = (
    ExitCode.OK,
    ExitCode.FAILURE,
    ExitCode.NOT_FOUND,
    ExitCode.STORE,
    ExitCode.USAGE,
    ExitCode.CONFIG,
)
_die = die
_config_option = config_option
_load_config = load_config_or_exit


def _manifests() -> tuple[DaemonManifest, ...]:
    from fleet.registry import manifests

    return manifests()


def _load_root_config(path: str | None) -> FleetConfig:
    from fleet.config import load_config

    return load_config(path)


def _load_run_config(path: str | None, name: str | None) -> FleetConfig:
    """The config ``fleet run NAME`` runs with (``fleet.run.load_run_config``)."""
    from fleet.run import load_run_config

    return load_run_config(path, name)


def _config_errors_exit(errors: list[tuple[str, str]]) -> None:
    """Exit 78 listing ``(path, message)`` errors the way an invalid config is shown."""
    if errors:
        _die(
            EX_CONFIG,
            f"invalid configuration: {len(errors)} error(s)\n"
            + "\n".join(f"  {path}: {msg}" for path, msg in errors),
            errors=config_errors(errors),
        )


def complete_daemon_name(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[str]:
    """Shell completion of a daemon NAME: the registry's names (no manifest is imported)."""
    from fleet.registry import LINES

    return [line.name for line in LINES if line.name.startswith(incomplete)]


# The app's own command groups that live in other modules: "name" -> "module:attribute".
APP_COMMANDS: dict[str, str] = {
    "units": "fleet.units_cli:units",
    "observability": "fleet.observability_cli:observability",
    "mc": "fleet.mc_cli:mc",
    "db": "fleet.db_cli:db",
    "doctor": "fleet.db_cli:doctor",
    "cutover": "fleet.cutover.cli:cutover",
    "dr": "fleet.dr_cli:dr",
}


def lazy_commands() -> dict[str, str]:
    """Every subcommand imported on use: the app's, then each daemon's (from its manifest)."""
    from fleet.registry import manifests

    commands = dict(APP_COMMANDS)
    for manifest in manifests():
        commands.update(manifest.commands)
    return commands


class LazyGroup(click.Group):
    """A group whose subcommands in ``lazy_commands()`` are imported only when used, so
    ``fleet mc ...`` does not pay for every daemon's CLI."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *lazy_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        if cmd_name == "mc":  # the hook path: no manifest (pydantic) import
            target: str | None = APP_COMMANDS["mc"]
        else:
            target = lazy_commands().get(cmd_name)
        if target is None:
            return None
        from shared.manifest import load_entry

        command = load_entry(target)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(
    cls=LazyGroup,
    context_settings={
        "help_option_names": ["-h", "--help"],
        # the app's config loader and manifests, also when `cli` is invoked directly
        "obj": AppContext(_load_root_config, _manifests),
    },
)
@click.version_option(package_name="alai-fleet", prog_name="fleet")
def cli() -> None:
    """alai-fleet: the ALAI hosts' operations daemons."""


# run ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("name", required=False, shell_complete=complete_daemon_name)
@click.option("--all", "run_all", is_flag=True, help="run every enabled daemon in one process")
@click.option("--once", is_flag=True, help="run exactly one cycle; exit 0 (ok) or 1 (failed)")
@click.option("--dry-run", is_flag=True, help="decide but do not write or send anything")
@_config_option
def run(
    name: str | None, run_all: bool, once: bool, dry_run: bool, config_path: str | None
) -> None:
    """Run daemon NAME (or --all) until SIGTERM/SIGINT; SIGHUP reloads the config."""
    from fleet.registry import by_name
    from fleet.run import RunArgs
    from fleet.run import run as run_daemons_here

    known = by_name()
    if bool(name) == run_all:
        raise click.UsageError("give a daemon NAME or --all (not both)")
    if name and name not in known:
        raise click.UsageError(f"unknown daemon {name!r}; known: {', '.join(sorted(known))}")
    run_daemons_here(RunArgs(name, run_all, once, dry_run, config_path))


@cli.command("check-config")
@click.argument("name", required=False, shell_complete=complete_daemon_name)
@json_option()
@_config_option
def check_config(name: str | None, as_json: bool, config_path: str | None) -> None:
    """Validate the config as `fleet run` would, without starting anything: exit 78 naming
    every bad key, or when role fencing leaves nothing to run. With NAME, as `fleet run NAME`
    would (78 if NAME is fenced off this host's role; only the secrets files NAME reads);
    without, as `fleet run --all`."""
    from pathlib import Path

    from fleet.registry import by_name, manifests
    from shared.config import ConfigError, find_config_file

    known = by_name()
    if name and name not in known:
        raise click.UsageError(f"unknown daemon {name!r}; known: {', '.join(sorted(known))}")
    try:
        config = _load_run_config(config_path, name)
    except ConfigError as exc:
        _die(EX_CONFIG, exc.render(), errors=config_errors(exc.errors))
    from fleet.config import role_file_errors, standby_dir_conflicts
    from fleet.secret_files import env_file_errors, env_files, misplaced_shared_secrets
    from shared.manifest import fenced_off
    from shared.roles import effective_role

    if name:
        chosen = [known[name]]
    else:
        chosen = [m for m in manifests() if config.daemon_section(m.section_name).enabled]
    home = Path.home()
    _config_errors_exit(
        role_file_errors(config)
        + standby_dir_conflicts(config)
        + env_file_errors(env_files(config, chosen, home))
        + misplaced_shared_secrets(manifests(), home)
    )
    role = effective_role(config.fleet.role, config.role_file)
    fenced = fenced_off(chosen, config, role)
    runnable = [m.name for m in chosen if m.name not in fenced]
    listing = "".join(f"\n  {n}: {why}" for n, why in fenced.items())
    if chosen and not runnable:
        what = f"{name} cannot run" if name else "no enabled daemon can run"
        _die(EX_CONFIG, f"{what} on this {role} host (role fencing):{listing}", fenced=fenced)
    source = find_config_file(config_path)
    if as_json:
        doc = {
            "ok": True,
            "config_file": str(source) if source else None,
            "root": str(config.fleet.root),
            "host": config.fleet.host,
            "role": str(role),
            "layout": config.fleet.layout,
            "runs": runnable,
            "fenced": fenced,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(
        f"config ok ({source or 'embedded defaults'}); root {config.fleet.root}, "
        f"host {config.fleet.host}, role {role}, layout {config.fleet.layout}"
    )
    click.echo(f"runs here: {', '.join(runnable) or 'nothing (no daemon is enabled)'}")
    if fenced:
        click.echo(f"fenced off on this {role} host (`fleet run --all` skips them):{listing}")


# status ------------------------------------------------------------------------------------
@cli.command()
@json_option()
@click.option(
    "--service-timeout",
    type=click.FloatRange(min=0.0, max=60.0),
    default=1.0,
    show_default=True,
    help="seconds systemctl/launchctl get to say how the installed units are",
)
@_config_option
def status(as_json: bool, service_timeout: float, config_path: str | None) -> None:
    """One row per daemon: is its process running (the heartbeat's pid), what systemd or
    launchd says of its unit when installed, when it last succeeded; and this host's role.
    Exit 1 if an expected daemon is stopped, stale or its unit down, 78 if the role file is
    garbled (the error is shown instead of a role). Reads only the config keys it needs."""
    from fleet.status import show_status

    raise SystemExit(show_status(config_path, as_json, service_timeout, _load_config))


# role --------------------------------------------------------------------------------------
@cli.group()
def role() -> None:
    """Show or set this host's role (primary / standby)."""


@role.command("show")
@json_option()
@_config_option
def role_show(as_json: bool, config_path: str | None) -> None:
    """Print this host's role and where it comes from; exit 78 if the role file is garbled."""
    from shared.roles import RoleFileError, effective_role

    config = _load_config(config_path)
    try:
        role_now = effective_role(config.fleet.role, config.role_file)
    except RoleFileError as exc:
        _die(EX_CONFIG, f"{exc}")
    source = "role file" if config.role_file.exists() else "config"
    if as_json:
        doc = {"role": str(role_now), "source": source, "role_file": str(config.role_file)}
        click.echo(json.dumps(doc))
        return
    click.echo(f"{role_now} (from {source})")


@role.command("set")
@click.argument("value", type=click.Choice(["primary", "standby"]))
@_config_option
def role_set(value: str, config_path: str | None) -> None:
    """Write <root>/state/role (the only way to change it; it also replaces a garbled one);
    daemons read it at start (restart them to apply)."""
    from shared.roles import Role, write_role_file

    config = _load_config(config_path)
    try:
        write_role_file(config.role_file, Role(value))
    except OSError as exc:
        _die(EX_FAIL, f"cannot write the role file {config.role_file}: {exc.strerror or exc}")
    click.echo(f"role set to {value} ({config.role_file}); restart the fleet's daemons")


# silence -----------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s', '1d' -> seconds (shared.durations), as a click error."""
    from shared.durations import parse_duration_s

    try:
        return parse_duration_s(text, positive=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.group()
def silence() -> None:
    """Mute alert channels during drills and maintenance (#ceo pushes are never muted)."""


def _with_outbox(config_path: str | None, fn: Callable[[Any], Any]) -> Any:
    import asyncio

    from shared.notify import outbox_for
    from shared.sqlite import StoreError

    config = _load_config(config_path)

    async def _go() -> Any:
        outbox = await outbox_for(config.notify).open()
        try:
            return await fn(outbox)
        finally:
            await outbox.close()

    try:
        return asyncio.run(_go())
    except StoreError as exc:  # locked past its retries, or the Postgres server unreachable
        _die(ExitCode.STORE, f"error: outbox unavailable: {exc}")


def _fmt_ts(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@silence.command("set")
@click.option(
    "--for", "duration", required=True, help="how long, e.g. 2h, 90m, 1h30m (at most 30d)"
)
@click.option("--reason", default="", help="shown in status and the summary afterwards")
@_config_option
def silence_set(duration: str, reason: str, config_path: str | None) -> None:
    """Hold alerts (never #ceo pushes) for a while; at most 30d."""
    from shared.notify import MAX_SILENCE_S

    seconds = parse_duration(duration)
    if seconds > MAX_SILENCE_S:
        raise click.BadParameter(
            f"{duration!r} is longer than a silence may last ({MAX_SILENCE_S / 86400:.0f}d); "
            "silence a drill or a maintenance, and set it again if it runs long",
            param_hint="'--for'",
        )
    s = _with_outbox(config_path, lambda ob: ob.set_silence(seconds, reason))
    click.echo(f"alerts silenced until {_fmt_ts(s.until)}" + (f" ({reason})" if reason else ""))


@silence.command("clear")
@_config_option
def silence_clear(config_path: str | None) -> None:
    """End the silence now; the alerts it held go out as one summary per channel."""
    cleared = _with_outbox(config_path, lambda ob: ob.clear_silence())
    click.echo(
        "silence cleared; held alerts go out as one summary per channel"
        if cleared
        else "no silence was set"
    )


@silence.command("show")
@json_option()
@_config_option
def silence_show(as_json: bool, config_path: str | None) -> None:
    """Whether alerts are silenced, until when and why."""

    async def _show(ob: Any) -> tuple[Any, bool]:
        current = await ob.silence()
        return current, ob.silenced(current)

    s, active = _with_outbox(config_path, _show)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "active": active,
                    "until": _fmt_ts(s.until) if s else None,
                    "reason": s.reason if s else None,
                }
            )
        )
    elif active and s is not None:
        click.echo(f"silenced until {_fmt_ts(s.until)}" + (f" ({s.reason})" if s.reason else ""))
    else:
        click.echo("not silenced")


@cli.group("config")
def config_group() -> None:
    """Configuration helpers."""


@config_group.command("example")
def config_example() -> None:
    """Print config/fleet.example.toml as generated from the models."""
    from fleet.config import example_toml

    click.echo(example_toml(), nl=False)


@config_group.command("paths")
@json_option()
@_config_option
def config_paths(as_json: bool, config_path: str | None) -> None:
    """The operator-visible files of this host's layout, where they are, and why."""
    from fleet.layout import render_operator_paths

    click.echo(render_operator_paths(_load_config(config_path), as_json=as_json))


def _json_requested(args: list[str]) -> bool:
    """``--json`` among the options (before a ``--``): usage errors are then JSON too."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _usage_error(code: int, exc: click.ClickException) -> NoReturn:
    if wants_json():
        click.echo(error_document(code, exc.format_message()))
    else:
        exc.show()
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: click with our exit codes (usage errors exit 64, not 2); under
    ``--json`` every error is ``{"error": ..., "code": N}`` on stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    with json_errors(_json_requested(args)):
        try:
            rv = cli.main(args=args, prog_name="fleet", standalone_mode=False)
        except click.exceptions.UsageError as exc:
            _usage_error(EX_USAGE, exc)
        except click.exceptions.Abort:
            _die(EX_FAIL, "aborted")
        except click.exceptions.Exit as exc:
            raise SystemExit(exc.exit_code) from None
        except click.ClickException as exc:
            _usage_error(EX_USAGE, exc)
    raise SystemExit(rv if isinstance(rv, int) else EX_OK)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The ``fleet`` command: run daemons, check config, show status, set role and silences; the
Mission Control ``mc`` verbs (``fleet.mc_cli``), the generators (``fleet.units_cli``) and each
daemon's own group (from its manifest) are imported only when used.

Exit codes: 0 ok, 1 failure (or lease held by another), 2 no such task, 3 store error after
retries, 64 usage, 78 invalid config or a daemon refusing to run here. Heavy imports stay inside
the commands that need them: ``fleet mc ... --db PATH`` runs inside pre-tool hooks and must
start fast. Nothing here prints a secret.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from shared.cli import AppContext, config_option, die, load_config_or_exit
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.manifest import DaemonManifest

__all__ = ["APP_COMMANDS", "cli", "main"]

EX_OK, EX_FAIL, EX_NO_TASK, EX_STORE, EX_USAGE, EX_CONFIG = (
    ExitCode.OK,
    ExitCode.FAILURE,
    ExitCode.NO_TASK,
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


# The app's own command groups that live in other modules: "name" -> "module:attribute".
APP_COMMANDS: dict[str, str] = {
    "units": "fleet.units_cli:units",
    "observability": "fleet.units_cli:observability",
    "mc": "fleet.mc_cli:mc",
    "cutover": "fleet.cutover.cli:cutover",
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
@click.argument("name", required=False)
@click.option("--all", "run_all", is_flag=True, help="run every enabled daemon in one process")
@click.option("--once", is_flag=True, help="run exactly one cycle; exit 0 (ok) or 1 (failed)")
@click.option("--dry-run", is_flag=True, help="decide but do not write or send anything")
@_config_option
def run(
    name: str | None, run_all: bool, once: bool, dry_run: bool, config_path: str | None
) -> None:
    """Run daemon NAME (or --all) until SIGTERM/SIGINT."""
    import asyncio

    from fleet.registry import by_name, manifests

    known = by_name()
    if bool(name) == run_all:
        raise click.UsageError("give a daemon NAME or --all (not both)")
    if name and name not in known:
        raise click.UsageError(f"unknown daemon {name!r}; known: {', '.join(sorted(known))}")
    config = _load_config(config_path)
    from shared.logging import configure_logging
    from shared.runtime import run_daemons

    configure_logging(host=config.fleet.host, level=config.fleet.log_level, daemon=name or "fleet")
    if name:
        chosen = [known[name]]
    else:
        chosen = [m for m in manifests() if config.daemon_section(m.section_name).enabled]
    code = asyncio.run(run_daemons(chosen, config, once=once, dry_run=dry_run, fleet=manifests()))
    raise SystemExit(code)


@cli.command("check-config")
@_config_option
def check_config(config_path: str | None) -> None:
    """Validate the config (exit 78 naming every bad key) without starting anything."""
    from shared.config import find_config_file

    config = _load_config(config_path)
    from fleet.config import standby_dir_conflicts

    conflicts = standby_dir_conflicts(config)
    if conflicts:
        _die(
            EX_CONFIG,
            "invalid configuration: "
            + f"{len(conflicts)} error(s)\n"
            + "\n".join(f"  {path}: {msg}" for path, msg in conflicts),
        )
    source = find_config_file(config_path)
    click.echo(
        f"config ok ({source or 'embedded defaults'}); root {config.fleet.root}, "
        f"host {config.fleet.host}, role {config.fleet.role}"
    )


# status ------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_config_option
def status(as_json: bool, config_path: str | None) -> None:
    """One row per daemon from the heartbeat files; exit 1 if an enabled daemon is stale."""
    from fleet.registry import manifests
    from shared.heartbeats import read_status
    from shared.roles import effective_role

    config = _load_config(config_path)
    now = time.time()
    rows = []
    all_ok = True
    role = effective_role(config.fleet.role, config.role_file)
    for manifest in manifests():
        section = config.daemon_section(manifest.section_name)
        # A daemon fenced off this host's role (restore-loop on a primary) is not expected.
        enabled = section.enabled and not manifest.fenced(section, role)
        st = read_status(config.heartbeat_dir, manifest.name, now)
        if enabled and not st.ok:
            all_ok = False
        rows.append(
            {
                "daemon": manifest.name,
                "enabled": enabled,
                "ok": st.ok,
                "last_ok_at": st.last_ok_at,
                "age_s": round(st.age_s, 1) if st.age_s is not None else None,
                "expected_interval_s": st.expected_interval_s,
                "cycles": st.cycles,
                "reason": st.reason,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(f"{'DAEMON':<20} {'OK':<4} {'AGE':>8} {'INTERVAL':>9} {'CYCLES':>7}  REASON")
        for r in rows:
            age = f"{r['age_s']:.0f}s" if r["age_s"] is not None else "-"
            interval = f"{r['expected_interval_s']:.0f}s" if r["expected_interval_s"] else "-"
            ok = "yes" if r["ok"] else ("no" if r["enabled"] else "off")
            click.echo(
                f"{r['daemon']:<20} {ok:<4} {age:>8} {interval:>9} {r['cycles']:>7}  {r['reason']}"
            )
    raise SystemExit(EX_OK if all_ok else EX_FAIL)


# role --------------------------------------------------------------------------------------
@cli.group()
def role() -> None:
    """Show or set this host's role (primary / standby)."""


@role.command("show")
@_config_option
def role_show(config_path: str | None) -> None:
    from shared.roles import effective_role

    config = _load_config(config_path)
    source = "role file" if config.role_file.exists() else "config"
    click.echo(f"{effective_role(config.fleet.role, config.role_file)} (from {source})")


@role.command("set")
@click.argument("value", type=click.Choice(["primary", "standby"]))
@_config_option
def role_set(value: str, config_path: str | None) -> None:
    """Write <root>/state/role; daemons read it at start (restart them to apply)."""
    from shared.files import atomic_write_text

    config = _load_config(config_path)
    atomic_write_text(config.role_file, value + "\n")
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

    from shared.notify import Outbox

    config = _load_config(config_path)

    async def _go() -> Any:
        outbox = await Outbox(config.notify.outbox_db).open()
        try:
            return await fn(outbox)
        finally:
            await outbox.close()

    return asyncio.run(_go())


def _fmt_ts(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@silence.command("set")
@click.option("--for", "duration", required=True, help="how long, e.g. 2h, 90m, 1h30m")
@click.option("--reason", default="", help="shown in status and the summary afterwards")
@_config_option
def silence_set(duration: str, reason: str, config_path: str | None) -> None:
    seconds = parse_duration(duration)
    s = _with_outbox(config_path, lambda ob: ob.set_silence(seconds, reason))
    click.echo(f"alerts silenced until {_fmt_ts(s.until)}" + (f" ({reason})" if reason else ""))


@silence.command("clear")
@_config_option
def silence_clear(config_path: str | None) -> None:
    cleared = _with_outbox(config_path, lambda ob: ob.clear_silence())
    click.echo(
        "silence cleared; held alerts go out as one summary per channel"
        if cleared
        else "no silence was set"
    )


@silence.command("show")
@click.option("--json", "as_json", is_flag=True)
@_config_option
def silence_show(as_json: bool, config_path: str | None) -> None:
    s = _with_outbox(config_path, lambda ob: ob.silence())
    active = s is not None and s.active(time.time())
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
    from fleet.config import root_model
    from shared.example_config import render_example_toml

    click.echo(render_example_toml(root_model()), nl=False)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: click with our exit codes (usage errors exit 64, not 2)."""
    try:
        rv = cli.main(
            args=argv,
            prog_name="fleet",
            standalone_mode=False,
        )
    except click.exceptions.UsageError as exc:
        exc.show()
        raise SystemExit(EX_USAGE) from None
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(EX_FAIL) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(EX_USAGE) from None
    raise SystemExit(rv if isinstance(rv, int) else EX_OK)


if __name__ == "__main__":
    main(sys.argv[1:])

"""``fleet units ...``: generate, install, uninstall the systemd units / LaunchDaemons /
LaunchAgents, and the launchd entry point (``fleet observability ...``, the
Prometheus/Alertmanager/Grafana pack, is in ``fleet.observability_cli``).

Thin: the renderers (``shared.units``, ``shared.observability``) take the config and the
registered daemons' manifests; ``fleet.install`` plans and runs the service-manager commands,
``fleet.examples`` keeps the committed examples in sync. ``install``/``uninstall`` print the
commands and run them only with ``--now``; nothing here writes a secret or touches a file it
did not generate.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import click

from shared.cli import config_option, load_config_or_exit
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from fleet.examples import ExampleSet
    from shared.units import GeneratedSet, InstallLayout, Mode, Target

__all__ = ["units"]

# A source checkout (editable install): `example` commands default to it. An installed fleet
# writes the examples into the current directory, rendered from its own example config.
_CHECKOUT = Path(__file__).resolve().parents[1]
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "config" / "fleet.example.toml").is_file() else Path(".")


def _platform_target() -> Target:
    return "launchd" if sys.platform == "darwin" else "systemd"


def _default_mode() -> Mode:
    return "system" if os.geteuid() == 0 else "user"


_target_option = click.option(
    "--target",
    type=click.Choice(["systemd", "launchd", "all"]),
    default=None,
    help="systemd units, launchd plists, or both (default: this platform's)",
)
_MODE_HELP = (
    "system: systemd system units / launchd LaunchDaemons in /Library/LaunchDaemons (start at "
    "boot, run as --user); user: systemd --user units / LaunchAgents in gui/UID (start at "
    "login). Default: system when run as root, else user"
)


def _mode_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--mode`` and its launchd name ``--domain``: one choice, given once."""
    fn = click.option(
        "--domain",
        type=click.Choice(["system", "user"]),
        default=None,
        help="--mode by its launchd name (system: LaunchDaemons, user: LaunchAgents)",
    )(fn)
    return click.option("--mode", type=click.Choice(["system", "user"]), help=_MODE_HELP)(fn)


def _chosen_mode(mode: str | None, domain: str | None) -> Mode:
    if mode and domain and mode != domain:
        raise click.UsageError("--mode and --domain name the same choice: give one")
    chosen = mode or domain
    return cast("Mode", chosen) if chosen else _default_mode()


_prefix_option = click.option(
    "--prefix",
    type=click.Path(file_okay=False),
    default=None,
    help="venv whose bin/fleet the services run (default: [fleet] install_prefix, else this one)",
)
_user_option = click.option(
    "--user",
    "service_user",
    default=None,
    help="account system units and LaunchDaemons run as (default: [fleet] service_user, "
    "$SUDO_USER, else you)",
)
_group_option = click.option(
    "--group",
    default=None,
    help="LaunchDaemons' GroupName (default: the --user account's primary group here)",
)
_destdir_option = click.option(
    "--destdir",
    type=click.Path(file_okay=False),
    default=None,
    help="write under DIR + the standard path; the printed (or run) commands name the "
    "standard path (staging, packaging, tests)",
)
_repo_option = click.option(
    "--repo",
    type=click.Path(file_okay=False, exists=True),
    default=str(REPO_ROOT),
    show_default=True,
    help="directory of the examples (default: the source checkout, else the current "
    "directory); input: its config/fleet.example.toml, else `fleet config example`'s",
)
_check_option = click.option(
    "--check", is_flag=True, help="exit 1 if the committed files differ; write nothing"
)


@click.group()
def units() -> None:
    """Generate and install systemd units / LaunchDaemon and LaunchAgent plists."""


def _targets(target: str | None) -> list[Target]:
    chosen = target or _platform_target()
    if chosen == "all":
        return ["systemd", "launchd"]
    return [cast("Target", chosen)]


def _generate(
    config_path: str | None,
    target: str | None,
    mode: Mode,
    prefix: str | None,
    service_user: str | None,
    group: str | None = None,
) -> tuple[InstallLayout, list[GeneratedSet]]:
    from fleet.install import install_layout
    from fleet.registry import manifests
    from shared.units import generate

    config = load_config_or_exit(config_path)
    layout = install_layout(config, config_path, mode, prefix, service_user, group)
    try:
        sets = [generate(config, manifests(), t, layout) for t in _targets(target)]
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(ExitCode.CONFIG) from None
    if layout.mode == "system" and layout.user == "root":
        click.echo(
            "warning: system units would run as root (LaunchDaemons too); pass --user or set "
            "the service account (`fleet units install` refuses them without --allow-root)",
            err=True,
        )
    return layout, sets


def _die_config(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(ExitCode.CONFIG)


def _write_reported(path: Path, data: bytes) -> None:
    from fleet.install import write_if_changed

    changed = write_if_changed(path, data)
    click.echo(f"{'wrote' if changed else 'unchanged'} {path}")


def _report_skipped(sets: Sequence[GeneratedSet]) -> None:
    if sets:
        for name, why in sets[0].skipped:
            click.echo(f"no service for {name}: {why}")


def _sync_examples(examples: ExampleSet, repo: str, check: bool) -> None:
    """The ``example`` commands: report (and unless ``check``, repair) drift between the
    committed files and what the generators render; exit 1 on drift with ``--check``."""
    from fleet.examples import example_drift
    from shared.config import ConfigError

    try:
        drift = example_drift(Path(repo), examples, fix=not check)
    except ConfigError as exc:
        click.echo(exc.render(), err=True)
        raise SystemExit(ExitCode.CONFIG) from None
    for line in drift:
        click.echo(line)
    if check and drift:
        click.echo(f"regenerate with: {examples.command}", err=True)
        raise SystemExit(ExitCode.FAILURE)
    if not drift:
        click.echo(f"{examples.what} are up to date")


@units.command("generate")
@_target_option
@_mode_option
@click.option(
    "--out", type=click.Path(file_okay=False), default=".", show_default=True, help="directory"
)
@_prefix_option
@_user_option
@_group_option
@config_option
def generate_cmd(
    target: str | None,
    mode: str | None,
    domain: str | None,
    out: str,
    prefix: str | None,
    service_user: str | None,
    group: str | None,
    config_path: str | None,
) -> None:
    """Write alai-fleet-<daemon>.service / no.alai.fleet.<daemon>.plist for every enabled
    daemon (and companion service) into --out."""
    chosen = _chosen_mode(mode, domain)
    _unused, sets = _generate(config_path, target, chosen, prefix, service_user, group)
    out_dir = Path(out)
    for gen in sets:
        for name, data in sorted(gen.files.items()):
            _write_reported(out_dir / name, data)
    _report_skipped(sets)


@units.command("example")
@_check_option
@_repo_option
def example_cmd(check: bool, repo: str) -> None:
    """Regenerate units/, launchdaemons/ and launchagents/ from config/fleet.example.toml (the
    documented example host: user alai, group staff, venv /opt/alai-fleet/current). Removes
    generated files that are no longer produced; README.md is kept. Outside a checkout: writes
    them under --repo."""
    from fleet.examples import UNIT_EXAMPLES

    _sync_examples(UNIT_EXAMPLES, repo, check)


@units.command("install")
@_target_option
@_mode_option
@click.option("--now", is_flag=True, help="run the systemctl/launchctl commands, not just print")
@click.option(
    "--dry-run",
    is_flag=True,
    help="print the diff of every file install would write or remove and the commands; "
    "change nothing",
)
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    default=None,
    help="install into DIR instead of the standard place (packaging, tests; one target only)",
)
@_destdir_option
@_prefix_option
@_user_option
@_group_option
@click.option(
    "--allow-root",
    is_flag=True,
    help="install system units / LaunchDaemons that run as root (refused without it: exit 78)",
)
@config_option
def install_cmd(
    target: str | None,
    mode: str | None,
    domain: str | None,
    now: bool,
    dry_run: bool,
    dest: str | None,
    destdir: str | None,
    prefix: str | None,
    service_user: str | None,
    group: str | None,
    allow_root: bool,
    config_path: str | None,
) -> None:
    """Write the generated files where the service manager reads them (/etc/systemd/system,
    ~/.config/systemd/user, /Library/LaunchDaemons, ~/Library/LaunchAgents) and print or run
    the commands that enable and start them (LaunchDaemons: `launchctl bootstrap system`,
    LaunchAgents: `gui/UID`). Stale generated files (daemon disabled since) are stopped and
    removed. Without --now the files are written (inert until the printed commands run);
    --dry-run writes nothing and shows the diff instead. Services that would run as root are
    refused (exit 78) unless --allow-root."""
    from fleet.install import (
        compile_for_units,
        dest_dir,
        execute,
        install_plan,
        make_write_dirs,
        service_dir,
        write_if_changed,
    )
    from shared.units import PYTHON_OPTIMIZE, is_generated_file

    if (dest or destdir) and target == "all":
        raise click.UsageError("--dest and --destdir work with one --target")
    if dry_run and now:
        raise click.UsageError("--dry-run changes nothing; drop --now (or --dry-run)")
    chosen = _chosen_mode(mode, domain)
    layout, sets = _generate(config_path, target, chosen, prefix, service_user, group)
    if layout.mode == "system" and layout.user == "root" and not allow_root:
        _die_config(
            "refusing to install system units that run as root (User=root; LaunchDaemons: "
            "UserName=root): pass --user ACCOUNT or set [fleet] service_user to an "
            "unprivileged account, or --allow-root"
        )
    daemons = layout.mode == "system" and any(gen.target == "launchd" for gen in sets)
    if daemons and os.geteuid() != 0 and not (dest or destdir):
        _die_config("LaunchDaemons are installed by root (launchd loads root-owned ones): sudo")
    code: int = ExitCode.OK
    if dry_run:
        from fleet.install import print_dry_run

        for gen in sets:
            print_dry_run(layout, gen, dest_dir(gen.target, layout.mode, dest, destdir))
        click.echo(f"would byte-compile {layout.prefix} for PYTHONOPTIMIZE={PYTHON_OPTIMIZE}")
        _report_skipped(sets)
        raise SystemExit(code)
    for gen in sets:
        directory = dest_dir(gen.target, layout.mode, dest, destdir)
        loaded_from = service_dir(gen.target, layout.mode) if destdir else None
        new: list[str] = []
        changed: list[str] = []
        unchanged: list[str] = []
        for name, data in sorted(gen.files.items()):
            existed = (directory / name).exists()
            if write_if_changed(directory / name, data):
                (changed if existed else new).append(name)
                click.echo(f"{'updated' if existed else 'installed'} {directory / name}")
            else:
                unchanged.append(name)
        stale = sorted(
            p.name for p in directory.glob("*") if is_generated_file(p) and p.name not in gen.files
        )
        make_write_dirs(gen.write_dirs, layout.user if layout.mode == "system" else None)
        steps = install_plan(
            gen.target, layout.mode, directory, new, changed, unchanged, stale, loaded_from
        )
        code = code or execute(steps, now)
        if gen.target == "systemd" and layout.mode == "user":
            click.echo(
                "note: user units stop at logout unless lingering is on: "
                f"loginctl enable-linger {getpass.getuser()}"
            )
    if not destdir:  # a staged package is compiled where it is installed
        said = compile_for_units(layout.prefix, PYTHON_OPTIMIZE)
        click.echo(said, err=said.startswith("warning"))
    if daemons and os.geteuid() != 0:
        click.echo("warning: launchd loads a LaunchDaemon only when root owns it", err=True)
    _report_skipped(sets)
    raise SystemExit(code)


@units.command("uninstall")
@_target_option
@_mode_option
@click.option("--now", is_flag=True, help="run the systemctl/launchctl commands, not just print")
@click.option("--dest", type=click.Path(file_okay=False), default=None, help="as for install")
@_destdir_option
def uninstall_cmd(
    target: str | None,
    mode: str | None,
    domain: str | None,
    now: bool,
    dest: str | None,
    destdir: str | None,
) -> None:
    """Stop, disable and remove every generated unit/plist (whatever the config says now).
    Without --now, print the commands and change nothing: unlike install, whose files are
    inert until the commands run, removing a unit file before stopping its service would
    orphan a running daemon."""
    from fleet.install import dest_dir, execute, uninstall_plan
    from shared.units import is_generated_file

    if (dest or destdir) and target == "all":
        raise click.UsageError("--dest and --destdir work with one --target")
    chosen_mode = _chosen_mode(mode, domain)
    code: int = ExitCode.OK
    for t in _targets(target):
        directory = dest_dir(t, chosen_mode, dest, destdir)
        installed = sorted(p.name for p in directory.glob("*") if is_generated_file(p))
        if not installed:
            click.echo(f"no generated {t} files in {directory}")
            continue
        code = code or execute(uninstall_plan(t, chosen_mode, directory, installed), now)
    raise SystemExit(code)


_env_file_option = click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="KEY=VALUE secrets file to load first (must be 0600 and yours, else refused)",
)
_launchd_domain_option = click.option(
    "--domain",
    type=click.Choice(["system", "user"]),
    default="user",
    show_default=True,
    help="the launchd domain the job is in (system: a LaunchDaemon), for the restart hint",
)


@units.command("launchd-run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option(
    "--optional-env-file",
    "optional_env_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="like --env-file, but skipped when the file does not exist (repeatable; loaded first,"
    " in order: fleet.env, then fleet-NAME.env)",
)
@_env_file_option
@_launchd_domain_option
@config_option
def launchd_run_cmd(
    name: str,
    optional_env_files: tuple[str, ...],
    env_file: str | None,
    domain: str,
    config_path: str | None,
) -> None:
    """`fleet run NAME` for launchd: exit 78 (invalid config, refused role, a secrets file
    that is not private) becomes exit 0, so KeepAlive{SuccessfulExit=false} restarts crashes
    but never loops on a refusal. The plists' plain forms take a path without click
    (fleet.launchd_run); this command answers the others the same way."""
    from fleet.cli import run as run_command
    from fleet.launchd_run import LaunchdRunArgs, launchd_run
    from fleet.run import RunArgs

    def start(args: RunArgs) -> None:
        # `fleet run NAME` as click runs it: an unknown or empty NAME is its usage error (exit
        # 64), after the env files are loaded; fleet.run.run trusts the NAME it is given.
        click.get_current_context().invoke(
            run_command,
            name=args.name,
            run_all=False,
            once=False,
            dry_run=False,
            config_path=args.config_path,
        )

    launchd_run(LaunchdRunArgs(name, optional_env_files, env_file, domain, config_path), start)


@units.command(
    "launchd-exec",
    context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": False},
)
@click.option("--name", required=True, help="the service name (its label is no.alai.fleet.NAME)")
@click.option("--env-file", type=click.Path(dir_okay=False), required=True, help="as launchd-run")
@_launchd_domain_option
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def launchd_exec_cmd(name: str, env_file: str, domain: str, argv: tuple[str, ...]) -> None:
    """Run a companion program (litestream) for launchd with the secrets file's variables:
    refused like launchd-run (exit 0 with the reason) unless the file is private; then exec,
    so the program is the job's process.
    Usage: launchd-exec --name SERVICE --env-file F [--domain D] -- PROGRAM ARGS..."""
    from fleet.launchd_run import launchd_refusal, secrets

    loaded = secrets(env_file)
    if isinstance(loaded, str):
        launchd_refusal(name, loaded, domain)
    try:
        os.execve(argv[0], list(argv), {**os.environ, **loaded})
    except OSError as exc:
        click.echo(f"fleet: cannot run {argv[0]}: {exc.strerror}", err=True)
        raise SystemExit(ExitCode.FAILURE) from None

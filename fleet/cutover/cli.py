"""``fleet cutover check | plan | apply``: switch one host from the legacy jobs to the fleet
(docs/cutover.md).

Exit codes: 0 clean / switched / nothing to do; 1 conflicts remain (check), apply refused (a
conflict it cannot fix, such as a foreign process on a fleet port) or a step failed (the
rollback commands are printed); 64 usage; 78 invalid config. Nothing here prints a secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from shared.cli import config_option, die, fleet_manifests, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

__all__ = ["cutover"]


def _host_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--home",
            type=click.Path(file_okay=False),
            default=None,
            help="home directory holding the legacy jobs and ~/system/config (default: $HOME)",
        ),
        click.option(
            "--platform",
            type=click.Choice(["darwin", "linux"]),
            default=None,
            help="launchd (darwin) or systemd (linux); default: this machine's",
        ),
        click.option(
            "--mode",
            "--domain",
            type=click.Choice(["user", "system"]),
            default=None,
            help="install the fleet as systemd user or system units (default: system as root, "
            "else user); on macOS LaunchAgents in gui/UID or, with system (run with sudo), "
            "LaunchDaemons that start at boot (default: user)",
        ),
        click.option(
            "--systemd-system-dir",
            type=click.Path(file_okay=False),
            default="/etc/systemd/system",
            show_default=True,
            help="where system units (legacy and, with --mode system, the fleet's) live",
        ),
        click.option(
            "--launchd-system-dir",
            type=click.Path(file_okay=False),
            default="/Library/LaunchDaemons",
            show_default=True,
            help="where the fleet's LaunchDaemons go with --mode system on macOS",
        ),
        config_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _context(
    home: str | None,
    platform: str | None,
    mode: str | None,
    systemd_system_dir: str,
    launchd_system_dir: str,
    config_path: str | None,
    online: bool = False,
) -> Any:
    from fleet.cutover.host import Platform, build_host
    from fleet.cutover.runner import CommandRunner
    from fleet.cutover.survey import survey
    from shared.config import secret_modes_unchecked
    from shared.config_files import find_config_file
    from shared.units import Mode

    # The cutover is what finds a token file others can read and makes it private (a
    # conflict with its fix), so it loads a config the daemons would still refuse.
    with secret_modes_unchecked():
        config = load_config_or_exit(config_path)
    host = build_host(
        config,
        find_config_file(config_path),
        fleet_manifests(),
        home=Path(home) if home else Path.home(),
        platform=cast("Platform | None", platform),
        mode=cast("Mode | None", mode),
        system_unit_dir=Path(systemd_system_dir),
        launchd_system_dir=Path(launchd_system_dir),
    )
    if host.target == "launchd" and host.mode == "system" and host.layout().group is None:
        click.echo(
            f"error: LaunchDaemons run as {host.service_user!r}, an account this machine does "
            "not know: set [fleet] service_user",
            err=True,
        )
        raise SystemExit(ExitCode.CONFIG)
    runner = CommandRunner()
    try:
        return survey(host, runner, online=online), runner
    except ValueError as exc:  # two services would share a name: a config problem
        die(ExitCode.CONFIG, f"error: {exc}")


def _headline(s: Any, verb: str) -> str:
    h = s.host
    return (
        f"cutover {verb}: host {h.config.fleet.host}, role {h.role}, {h.platform} ({h.target}), "
        f"home {h.home}"
    )


def _notes(s: Any) -> list[str]:
    notes = [
        f"left alone: the legacy {svc.job.name}, {svc.shown}; the fleet does not run "
        f"{svc.job.replaced_by} on this host (role {s.host.role})"
        for svc in s.kept
    ]
    return notes + [f"warning: {w}" for w in s.warnings]


@click.group()
def cutover() -> None:
    """Switch this host from the legacy jobs to the fleet: check, plan, apply."""


@cutover.command("check")
@json_option()
@click.option("--online", is_flag=True, help="also ask Slack's auth.test whether the token works")
@_host_options
def check_cmd(as_json: bool, online: bool, **host: Any) -> None:
    """List every conflict between the legacy jobs and the fleet on this host, each with its
    fix; exit 1 while any remains, 0 when the host is clean."""
    from fleet.cutover.survey import conflicts

    s, _runner = _context(online=online, **host)
    found = conflicts(s)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "host": s.host.config.fleet.host,
                    "role": str(s.host.role),
                    "platform": s.host.platform,
                    "home": str(s.host.home),
                    "clean": not found,
                    "conflicts": [c.to_json() for c in found],
                    "notes": _notes(s),
                },
                indent=2,
            )
        )
    else:
        click.echo(_headline(s, "check"))
        for c in found:
            click.echo(f"CONFLICT {c.kind}: {c.subject}")
            click.echo(f"    {c.problem}")
            click.echo(f"    fix: {c.fix}")
        for note in _notes(s):
            click.echo(note)
        if found:
            by_apply = sum(1 for c in found if c.apply_fixes)
            click.echo(
                f"{len(found)} conflict(s): {by_apply} fixed by `fleet cutover apply`, "
                f"{len(found) - by_apply} to fix by hand first"
            )
        else:
            click.echo("no conflicts: nothing on this host stands in the fleet's way")
    raise SystemExit(ExitCode.FAILURE if found else ExitCode.OK)


def _print_plan(s: Any, steps: list[Any]) -> None:
    from fleet.cutover.plan import blockers, verify_command

    click.echo(_headline(s, "plan"))
    for number, step in enumerate(steps, start=1):
        click.echo(f"{number:>2}. {step.title}")
        for command in step.commands():
            click.echo(f"      do:       {command}")
        for command in step.rollback():
            click.echo(f"      rollback: {command}")
    click.echo(f"then verify, once every daemon has run a cycle: {verify_command(s)}")
    for note in _notes(s):
        click.echo(note)
    refused = blockers(s)
    if refused:
        click.echo("apply refuses to start while these remain (fix them first):")
        for line in refused:
            click.echo(f"  - {line}")


@cutover.command("plan")
@json_option()
@_host_options
def plan_cmd(as_json: bool, **host: Any) -> None:
    """Print the ordered switch for this host: each step's commands and its rollback."""
    from fleet.cutover.plan import blockers, build_plan, verify_command

    s, _runner = _context(**host)
    steps = build_plan(s)
    if not as_json:
        _print_plan(s, steps)
        return
    doc = {
        "host": s.host.config.fleet.host,
        "role": str(s.host.role),
        "platform": s.host.platform,
        "steps": [
            {"title": step.title, "commands": step.commands(), "rollback": step.rollback()}
            for step in steps
        ],
        "verify": verify_command(s),
        "notes": _notes(s),
        "blockers": list(blockers(s)),
    }
    click.echo(json.dumps(doc, indent=2))


@cutover.command("apply")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@_host_options
def apply_cmd(yes: bool, **host: Any) -> None:
    """Perform the plan one step at a time (skipping steps already done), record each in the
    audit file, and stop at the first failure with the rollback commands."""
    from fleet.cutover.apply import apply_plan
    from fleet.cutover.plan import blockers, build_plan, verify_command

    s, runner = _context(**host)
    refused = blockers(s)
    if refused:
        click.echo("cutover apply refuses to start; fix these first:", err=True)
        for line in refused:
            click.echo(f"  - {line}", err=True)
        raise SystemExit(ExitCode.FAILURE)
    steps = build_plan(s)
    if not yes:
        _print_plan(s, steps)
        click.confirm("apply this plan now?", abort=True)
    h = s.host
    context = {
        "host": h.config.fleet.host,
        "role": str(h.role),
        "platform": h.platform,
        "home": str(h.home),
        "pid": os.getpid(),
    }
    result = apply_plan(steps, runner, h.audit_file, context, click.echo)
    if result.failed is not None:
        number = steps.index(result.failed) + 1
        click.echo(f"FAILED at step {number}: {result.failed.title}: {result.reason}", err=True)
        undo = result.rollback()
        if undo:
            click.echo("to roll back the steps done in this run (newest first):", err=True)
            for command in undo:
                click.echo(f"  {command}", err=True)
        else:
            click.echo("no step was done in this run: nothing to roll back", err=True)
        click.echo(f"audit: {h.audit_file}", err=True)
        raise SystemExit(ExitCode.FAILURE)
    if not result.done:
        click.echo("nothing to do: every step is already done")
    else:
        click.echo(f"switched: {len(result.done)} step(s) done, {len(result.skipped)} already done")
        click.echo(f"audit: {h.audit_file}")
    click.echo(f"verify, once every daemon has run a cycle: {verify_command(s)}")

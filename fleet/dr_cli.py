"""``fleet dr ...``: disaster recovery as a routine. ``drill`` rehearses a failover on the standby
without causing one and writes the evidence (docs/runbooks/dr.md).

Exit codes: 0 the drill passed; 1 it failed (the failed criteria and DBs are printed); 78 it
cannot run here (config, role, litestream). Nothing here prints a secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click

from shared.cli import config_option, die, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

__all__ = ["dr"]


@click.group()
def dr() -> None:
    """Disaster recovery: drills (and, on a pair, switchover and failback)."""


@dr.command("drill")
@click.option("--with-p1", is_flag=True, help="rehearse the P1 DBs too (default: P0 only)")
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="DB:TABLE",
    help="compare this table's rows (the standby copy must be a prefix of the replica's)",
)
@click.option(
    "--primary-host",
    default=None,
    help="the tier-routing host that is the primary (default: the one host that is not this)",
)
@json_option()
@config_option
def drill(
    with_p1: bool,
    tables: tuple[str, ...],
    primary_host: str | None,
    as_json: bool,
    config_path: str | None,
) -> None:
    """Rehearse a failover on the standby; exit 1 when any criterion or DB fails."""
    started_at, started_mono = time.time(), time.monotonic()
    from fleet.dr_drill import DrillError, report_json, run_drill, summary_lines

    config = load_config_or_exit(config_path)
    tiers = ("P0", "P1") if with_p1 else ("P0",)
    try:
        outcome = asyncio.run(
            run_drill(
                config,
                tiers=tiers,
                tables=tables,
                primary_host=primary_host,
                started_at=started_at,
                started_mono=started_mono,
            )
        )
    except DrillError as exc:
        die(ExitCode.CONFIG, f"dr drill: {exc}")
    if as_json:
        click.echo(json.dumps(report_json(outcome), sort_keys=True))
    else:
        for line in summary_lines(outcome):
            click.echo(line)
    raise SystemExit(ExitCode.OK if outcome.report.passed else ExitCode.FAILURE)


def _manifests() -> list[Any]:
    from fleet.registry import manifests

    return list(manifests())


def _print_run(run: Any, as_json: bool) -> None:
    from dataclasses import asdict

    from fleet.dr_switchover import run_lines

    if as_json:
        click.echo(json.dumps(asdict(run), sort_keys=True, default=str))
    else:
        for line in run_lines(run):
            click.echo(line)


@dr.command("switchover")
@click.option("--to", "to_host", required=True, help="the host that becomes primary")
@click.option(
    "--old-primary-down",
    is_flag=True,
    help="on HOST: the old primary's switchover run finished (peer watch need not confirm)",
)
@click.option("--dry-run", is_flag=True, help="print the plan and what is already done")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=120.0,
    show_default=True,
    help="seconds the old primary waits for its replicas to hold everything",
)
@json_option()
@config_option
def switchover_cmd(
    to_host: str,
    old_primary_down: bool,
    dry_run: bool,
    timeout_s: float,
    as_json: bool,
    config_path: str | None,
) -> None:
    """Planned switchover with no loss: run on the old primary, then on HOST (resumable)."""
    from fleet.dr_switchover import SwitchoverError, switchover
    from shared.logging import configure_logging

    config = load_config_or_exit(config_path)
    configure_logging(host=config.fleet.host, level="warning", stream=sys.stderr)
    try:
        run = asyncio.run(
            switchover(
                config,
                _manifests(),
                to_host,
                old_primary_down=old_primary_down,
                dry_run=dry_run,
                timeout_s=timeout_s,
            )
        )
    except SwitchoverError as exc:
        die(ExitCode.FAILURE, f"dr switchover: {exc} (run it again to resume)")
    _print_run(run, as_json)


@dr.command("failback")
@click.option("--dry-run", is_flag=True, help="print the plan and what is already done")
@json_option()
@config_option
def failback_cmd(dry_run: bool, as_json: bool, config_path: str | None) -> None:
    """On the old primary after a crash failover: stand down and follow the new primary."""
    from fleet.dr_failback import failback
    from fleet.dr_switchover import SwitchoverError
    from shared.logging import configure_logging

    config = load_config_or_exit(config_path)
    configure_logging(host=config.fleet.host, level="warning", stream=sys.stderr)
    try:
        run = asyncio.run(failback(config, _manifests(), dry_run=dry_run))
    except SwitchoverError as exc:
        die(ExitCode.FAILURE, f"dr failback: {exc} (run it again to resume)")
    _print_run(run, as_json)

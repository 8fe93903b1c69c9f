"""``fleet dr ...``: disaster recovery as a routine. ``drill`` rehearses a failover on the standby
without causing one and writes the evidence (docs/runbooks/dr.md).

Exit codes: 0 the drill passed; 1 it failed (the failed criteria and DBs are printed); 78 it
cannot run here (config, role, litestream). Nothing here prints a secret.
"""

from __future__ import annotations

import asyncio
import json
import time

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

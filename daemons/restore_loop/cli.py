"""``fleet restore ...`` (status, promote) and ``fleet litestream ...`` (config, lint).

Exit codes: 0 ok; 1 a DB stale, failing or refused (or lint findings, or the host already
promoted); 2 an unknown DB name; 64 usage; 75 another ``fleet restore promote`` holds the
promotion lock (its pid is named); 78 invalid config, role file, tier table or litestream
config. Nothing here prints a secret: the
generated YAML keeps ``${ENV}`` references.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from daemons.restore_loop.config import RestoreLoopSection
from shared.cli import config_option, die, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from daemons.restore_loop.catalog import TierTable
    from daemons.restore_loop.plan import Plan
    from shared.config import FleetConfig

__all__ = ["litestream", "restore"]

EX_FAIL, EX_USAGE, EX_CONFIG = ExitCode.FAILURE, ExitCode.USAGE, ExitCode.CONFIG
EX_BUSY = ExitCode.BUSY


_die = die  # stderr, or {"error": ..., "code": N} on stdout under --json


def _table(path: Path) -> TierTable:
    from daemons.restore_loop.catalog import CatalogError, load_tier_table

    try:
        return load_tier_table(path)
    except CatalogError as exc:
        _die(EX_CONFIG, str(exc))


def _plan(section: RestoreLoopSection) -> Plan:
    from daemons.restore_loop.litestream_yaml import LitestreamConfigError, read_restore_config
    from daemons.restore_loop.plan import build_plan

    table = _table(section.databases_file)
    try:
        configured = read_restore_config(section.config_path)
    except LitestreamConfigError as exc:
        _die(EX_CONFIG, str(exc))
    return build_plan(section, table, configured)


def _cost_lines(
    section: RestoreLoopSection,
    table: TierTable,
    plan: Plan | None,
    measured: dict[str, float] | None = None,
    polling: dict[str, float] | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """The replication bill (standby LISTs from ``plan``, else the tier table; primary PUTs)."""
    from daemons.restore_loop.cost import CostItem
    from daemons.restore_loop.cost_report import bill, bill_lines, table_items
    from daemons.restore_loop.replica_check import behind_after_s

    items, uploads = table_items(section, table)
    if plan is not None:
        items = [
            CostItem(
                t.tier,
                t.mode,
                (polling or {}).get(t.name, t.follow_interval_s),  # busy floor, fast follow
                (measured or {}).get(t.name),
                t.sync_interval_s,
                behind_after_s(section, t),
            )
            for t in plan.targets
        ]
    b = bill(section, items, uploads, measured)
    return bill_lines(section, b, measured=bool(measured)), b.to_json()


def _fmt_ts(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# restore -------------------------------------------------------------------------------------
@click.group()
def restore() -> None:
    """restore-loop: the standby's copies of the replicated databases."""


@restore.command("status")
@json_option()
@config_option
def restore_status(as_json: bool, config_path: str | None) -> None:
    """One row per DB from the daemon's status file; exit 1 if a DB is stale or failing."""
    from daemons.restore_loop.policy import format_age
    from daemons.restore_loop.state import StatePaths, pid_alive

    config = load_config_or_exit(config_path)
    section = config.section(RestoreLoopSection)
    paths = StatePaths.under(config.state_dir)
    status = paths.read_status()
    now = time.time()
    plan = _plan(section)
    rows: list[dict[str, Any]] = []
    recorded = {str(r.get("db")): r for r in (status or {}).get("databases") or []}
    for target in plan.targets:
        row = dict(recorded.get(target.name) or {})
        row.setdefault("db", target.name)
        row.setdefault("tier", target.tier)
        row.setdefault("mode", target.mode)
        row.setdefault("state", "unknown")
        row["stale_threshold_s"] = target.stale_threshold_s
        rows.append(row)
    updated = (status or {}).get("updated_at")
    age = now - updated if isinstance(updated, int | float) else None
    daemon_pid = (status or {}).get("pid")
    running = isinstance(daemon_pid, int) and pid_alive(daemon_pid)
    status_fresh = age is not None and running and age <= max(60.0, 3 * section.check_interval_s)
    bad = []
    for row in rows:
        lag = row.get("lag_s")
        problem = (
            row.get("state") not in ("following", "snapshot")
            or row.get("last_error")
            or not isinstance(lag, int | float)
            or lag > row["stale_threshold_s"]
        )
        row["ok"] = bool(status_fresh and not problem)
        if not row["ok"]:
            bad.append(row["db"])
    measured = {
        str(r["db"]): float(r["writes_per_s"])
        for r in rows
        if isinstance(r.get("writes_per_s"), int | float)
    }
    polling = {
        str(r["db"]): float(r["poll_interval_s"])
        for r in rows
        if isinstance(r.get("poll_interval_s"), int | float)
    }
    cost, bill_json = _cost_lines(section, _table(section.databases_file), plan, measured, polling)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "status_file": str(paths.status),
                    "status_age_s": age,
                    "daemon_running": running,
                    "promoted": (status or {}).get("promoted", False),
                    "databases": rows,
                    "problems": [list(p) for p in plan.problems],
                    "cost": cost,
                    "bill": bill_json,
                },
                indent=2,
            )
        )
    else:
        if status is None:
            click.echo(f"no status yet ({paths.status}): restore-loop has not run on this host")
        else:
            state = "running" if running else "NOT running"
            click.echo(
                f"restore-loop {state} (pid {daemon_pid}), status written {format_age(age)} ago"
                + ("; HOST PROMOTED" if status.get("promoted") else "")
            )
        click.echo(
            f"{'DB':<24} {'TIER':<4} {'MODE':<8} {'LOCAL':>8} {'REPLICA':>8} {'LAG':>7} "
            f"{'LAST OK':<20} {'RESTARTS':>8}  STATE"
        )
        for row in rows:
            lag = row.get("lag_s")
            restarts = f"{row.get('restarts_1h', 0)}/{row.get('restarts_total', 0)}"
            click.echo(
                f"{row['db'][:24]:<24} {row['tier']:<4} {row['mode']:<8} "
                f"{row.get('local_txid') if row.get('local_txid') is not None else '-':>8} "
                f"{row.get('replica_txid') if row.get('replica_txid') is not None else '-':>8} "
                f"{format_age(lag if isinstance(lag, int | float) else None):>7} "
                f"{_fmt_ts(row.get('last_success_at')):<20} {restarts:>8}  {row.get('state')}"
                + (f" ({str(row['last_error'])[:80]})" if row.get("last_error") else "")
            )
        for db, problem in plan.problems:
            click.echo(f"plan: {db}: {problem}")
        for line in cost:
            click.echo(line)
    raise SystemExit(1 if bad or not rows else 0)


@restore.command("promote")
@click.argument("dbs", nargs=-1)
@click.option("--all", "promote_all", is_flag=True, help="every DB this standby restores")
@click.option(
    "--catch-up-timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="seconds for the last catch-up restore of one DB (default: [restore_loop] "
    "restore_timeout_s)",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="set the role to primary even if some DB was refused",
)
@click.option(
    "--ack-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="seconds to wait for a running restore-loop to stop the fenced followers",
)
@click.option("--no-role", is_flag=True, help="do not set this host's role (drills)")
@json_option("print the promotion record as JSON (errors too)")
@config_option
def restore_promote(
    dbs: tuple[str, ...],
    promote_all: bool,
    catch_up_timeout: float | None,
    ack_timeout: float,
    allow_partial: bool,
    no_role: bool,
    as_json: bool,
    config_path: str | None,
) -> None:
    """Failover: make the standby copies of DBS (or --all) the primary's writable databases."""
    from daemons.restore_loop.litestream import Litestream, LitestreamError, find_litestream
    from daemons.restore_loop.plan import select_targets
    from daemons.restore_loop.promote import AlreadyPromoted, Promoter
    from daemons.restore_loop.state import PromotionLocked, StatePaths, process_started_at
    from shared.logging import configure_logging, get_logger
    from shared.roles import RoleFileError, effective_role

    if bool(dbs) == promote_all:
        _die(EX_USAGE, "give DB names or --all (not both)")
    config = load_config_or_exit(config_path)
    section = config.section(RestoreLoopSection)
    try:
        role = effective_role(config.fleet.role, config.role_file)
    except RoleFileError as exc:
        _die(EX_CONFIG, str(exc))
    if role != "standby":
        _die(
            EX_FAIL,
            f"this host's role is already {role}: nothing to promote "
            "(`fleet role show`; a standby has role standby)",
        )
    plan = _plan(section)
    if promote_all:
        targets = list(plan.targets)
    else:
        targets, unknown = select_targets(plan, list(dbs))
        if unknown:
            _die(
                ExitCode.NOT_FOUND,
                f"unknown DB(s): {', '.join(unknown)}; this standby restores: "
                + ", ".join(t.name for t in plan.targets),
            )
    if not targets:
        _die(EX_FAIL, "no DB to promote: the restore plan is empty")
    configure_logging(host=config.fleet.host, level="warning", stream=sys.stderr)
    log = get_logger(daemon="restore-loop")
    ls: Litestream | None
    try:
        ls = Litestream(
            find_litestream(section.litestream_bin),
            section.config_path,
            call_timeout_s=section.call_timeout_s,
            log=log,
        )
    except LitestreamError as exc:
        click.echo(f"warning: {exc}; promoting without a last catch-up", err=True)
        ls = None
    promoter = Promoter(
        section,
        StatePaths.under(config.state_dir),
        config.role_file,
        config.fleet.host,
        ls,
        log=log,
    )
    try:
        report = asyncio.run(
            promoter.promote(
                targets,
                catch_up_timeout_s=catch_up_timeout or section.restore_timeout_s,
                ack_timeout_s=ack_timeout,
                set_role=not no_role,
                allow_partial=allow_partial,
                command_started_at=process_started_at(),
            )
        )
    except PromotionLocked as exc:
        _die(EX_BUSY, str(exc))
    except AlreadyPromoted as exc:
        _die(EX_FAIL, str(exc))
    except RoleFileError as exc:
        _die(EX_CONFIG, str(exc))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report, config)
    if report.record_error:
        click.echo(f"error: the promotion record was not written: {report.record_error}", err=True)
    raise SystemExit(EX_FAIL if report.refused or report.record_error else 0)


def _print_report(report: Any, config: FleetConfig) -> None:
    from daemons.restore_loop.policy import format_age

    click.echo(
        f"promotion {report.id} on {report.host} at {_fmt_ts(report.started_at)}: "
        f"{len(report.dbs)} DB(s)"
    )
    if report.daemon_acknowledged is False:
        click.echo("warning: the running restore-loop did not acknowledge; followers were killed")
    click.echo(
        f"{'DB':<24} {'TIER':<4} {'TXID':>8} {'INTEGRITY':<10} {'RPO':>7} {'RTO':>7}  "
        "RESULT / CATCH-UP"
    )
    for d in report.dbs:
        detail = d.reason if d.status != "promoted" else (d.catch_up or "-")
        click.echo(
            f"{d.db[:24]:<24} {d.tier:<4} "
            f"{d.local_txid if d.local_txid is not None else '-':>8} "
            f"{(d.integrity or '-')[:10]:<10} {format_age(d.rpo_s):>7} {format_age(d.rto_s):>7}  "
            f"{d.status}: {detail}" + (f" [{'; '.join(d.notes)}]" if d.notes else "")
        )
    rpos = [d for d in report.dbs if d.rpo_s is not None]
    worst = max(rpos, key=lambda d: d.rpo_s or 0.0) if rpos else None
    since = "the command's start" if report.command_started_at else "promote's start"
    rpo_text = "-"
    if worst is not None:
        rpo_text = (
            f"{worst.rpo_s:.2f}s ({worst.db}; {worst.rpo_basis}) + up to "
            f"{worst.rpo_resolution_s or 0:g}s the primary may not have uploaded"
        )
    click.echo(
        f"RTO {report.rto_s:.2f}s (wall time from {since}); worst RPO {rpo_text}; record: "
        f"{config.state_dir / 'restore-loop' / 'promotions.jsonl'}"
    )
    if report.refused:
        click.echo(
            "refused: " + ", ".join(f"{d.db} ({d.reason})" for d in report.refused), err=True
        )
    if report.role_set:
        click.echo(f"role set to primary ({config.role_file}); restart the fleet's daemons")
        # Units are generated per role: the primary's (email-reactor, claim-sweeper, the
        # litestream replicate services) do not exist on this host until regenerated.
        if report.epoch is not None:  # new history, new path (docs/runbooks/dr.md)
            click.echo(
                f"promotion epoch {report.epoch}: first `fleet litestream config --role primary"
                f" --out {config.fleet.root / 'config'}` (replica paths under epoch-"
                f"{report.epoch}/)"
            )
        click.echo(
            "next step: fleet units install --now  (installs and starts the primary's units)"
        )
    else:
        click.echo("role NOT changed (still standby)")


# litestream ----------------------------------------------------------------------------------
@click.group()
def litestream() -> None:
    """Generate and lint litestream 0.5 configs from the tier table."""


@litestream.command("config")
@click.option(
    "--role",
    "for_role",
    type=click.Choice(["primary", "standby"]),
    required=True,
    help="primary: one replicate config per retention class; standby: the restore config",
)
@click.option(
    "--tables",
    "tables_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="tier table (default: [restore_loop] databases_file)",
)
@click.option(
    "--db-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="directory of the DBs on that host (default: [restore_loop] standby_dir)",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="write the files (and, for the primary, a unit + plist per class) into this directory",
)
@click.option(
    "--epoch",
    type=click.IntRange(min=0),
    default=None,
    help="promotion epoch of the replica path (default: this host's, or for a standby the"
    " newest it has seen; docs/runbooks/dr.md)",
)
@config_option
def litestream_config(
    for_role: str,
    tables_path: str | None,
    db_dir: str | None,
    out_dir: str | None,
    epoch: int | None,
    config_path: str | None,
) -> None:
    """Generate the litestream 0.5 YAML for the primary or the standby from one tier table."""
    from daemons.restore_loop.epoch_paths import with_epoch
    from daemons.restore_loop.litestream_yaml import GeneratedFile, render_primary, render_standby
    from shared.epochs import replication_epoch
    from shared.files import atomic_write_text
    from shared.roles import Role

    config = load_config_or_exit(config_path)
    section = config.section(RestoreLoopSection)
    table = _table(Path(tables_path).expanduser() if tables_path else section.databases_file)
    if epoch is None:
        epoch = replication_epoch(config.role_file, Role(for_role))
    table = with_epoch(table, epoch)  # new history, new path (epoch 0: the plain path)
    directory = Path(db_dir).expanduser().absolute() if db_dir else section.standby_dir
    files: list[GeneratedFile]
    notes: list[str] = []
    if for_role == "standby":
        standby = render_standby(table, section.tiers, directory)
        files = [standby]
        notes, _bill = _cost_lines(section, table, None)
    else:
        files = render_primary(table, directory)
        # The replicate services themselves are generated, hardened, with the fleet's units:
        # `fleet units generate` on the primary (RestoreLoop.companion_services).
        notes = [f"{f.name}: {len(f.databases)} DBs" for f in files if f.name.endswith(".yml")]
        notes += _cost_lines(section, table, None)[0]
        notes.append(
            "services: `fleet units generate` (primary) writes one"
            " alai-fleet-litestream-<class> unit / plist per file"
        )
    if epoch:
        notes.append(f"replica paths under epoch-{epoch}/ (promotion epoch {epoch})")
    if out_dir:
        target = Path(out_dir).expanduser()
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            atomic_write_text(
                target / f.name,
                f.text,
                mode=0o644 if f.name.endswith((".service", ".plist")) else 0o600,
            )
            click.echo(f"wrote {target / f.name}")
        for line in notes:
            click.echo(line)
        return
    for index, f in enumerate(files):
        if index:
            click.echo("---")
        if len(files) > 1:
            click.echo(f"# file: {f.name}")
        click.echo(f.text, nl=False)
    for line in notes:
        click.echo(line, err=True)


@litestream.command("lint")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option()
def litestream_lint(file: str, as_json: bool) -> None:
    """Report keys litestream 0.5 silently ignores, multi-replica entries and literal secrets."""
    from daemons.restore_loop.litestream_yaml import lint_config

    try:
        text = Path(file).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        _die(EX_CONFIG, f"cannot read {file}: {exc.strerror}")
    findings = lint_config(text)
    if as_json:
        click.echo(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        for f in findings:
            click.echo(f"{f.severity}: {f.path}: {f.message}")
        errors = sum(1 for f in findings if f.severity == "error")
        click.echo(
            f"{file}: {len(findings)} finding(s), {errors} error(s)"
            if findings
            else f"{file}: clean for litestream 0.5"
        )
    raise SystemExit(1 if findings else 0)


@litestream.command("tables-example")
def litestream_tables_example() -> None:
    """Print the example tier table (the seed's 69 DBs) to start a host's databases_file from."""
    from importlib.resources import files

    text = files("daemons.restore_loop").joinpath("databases.example.toml").read_text("utf-8")
    click.echo(text, nl=False)

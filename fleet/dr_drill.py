"""``fleet dr drill``'s work: rehearse a failover on the standby without causing one.

Loads the restore plan (P0, optionally P1), has restore-loop's ``rehearse`` restore every
replica into a scratch directory and compare, runs the routing and peer-watch checks, fills the
seed's acceptance table and writes the evidence (``fleet.dr_report``). It must never stop a
follower, raise the promotion fence, change a role or epoch, or write to a replica or a copy.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.dr_checks import check_peer_watch, check_routing, primary_position
from fleet.dr_report import DrillReport, criteria_for, write_report
from shared.config import FleetConfig
from shared.dr_record import DR_DIR, DrillRecord

__all__ = ["DrillError", "DrillOutcome", "run_drill"]


class DrillError(Exception):
    """The drill cannot run at all (config, role, no litestream): exit 78 with the reason."""


@dataclass
class DrillOutcome:
    report: DrillReport
    json_path: Path
    md_path: Path
    record: DrillRecord


def _tables(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        db, sep, table = pair.partition(":")
        if not sep or not db or not table:
            raise DrillError(f"--table {pair!r}: expected DB:TABLE (e.g. mission-control:tasks)")
        out[db.removesuffix(".db")] = table
    return out


async def run_drill(
    config: FleetConfig,
    *,
    tiers: tuple[str, ...],
    tables: tuple[str, ...],
    primary_host: str | None,
    started_at: float,
    started_mono: float,
) -> DrillOutcome:
    from daemons.restore_loop.catalog import CatalogError, load_tier_table
    from daemons.restore_loop.config import RestoreLoopSection
    from daemons.restore_loop.dr_drill import rehearse
    from daemons.restore_loop.litestream import LitestreamError, open_litestream
    from daemons.restore_loop.litestream_yaml import LitestreamConfigError, read_restore_config
    from daemons.restore_loop.plan import build_plan
    from daemons.restore_loop.state import StatePaths
    from shared.logging import configure_logging, get_logger
    from shared.roles import Role, RoleFileError, effective_role

    try:
        role = effective_role(config.fleet.role, config.role_file)
    except RoleFileError as exc:
        raise DrillError(str(exc)) from None
    if role is not Role.STANDBY:
        raise DrillError(
            f"this host's role is {role}: a drill rehearses a failover on the standby "
            "(run it there; on a primary use `fleet dr switchover`)"
        )
    section = config.section(RestoreLoopSection)
    by_table = _tables(tables)
    try:
        table = load_tier_table(section.databases_file)
        configured = read_restore_config(section.config_path)
    except (CatalogError, LitestreamConfigError) as exc:
        raise DrillError(str(exc)) from None
    plan = build_plan(section, table, configured)
    targets = [t for t in plan.targets if t.tier in tiers]
    unknown = sorted(set(by_table) - {t.name for t in targets})
    if unknown:
        raise DrillError(f"--table names DB(s) not in the drill: {', '.join(unknown)}")
    expected_p0 = len(table.in_tiers(["P0"]))
    configure_logging(host=config.fleet.host, level="warning", stream=sys.stderr)
    log = get_logger(daemon="dr-drill")
    try:
        ls = await open_litestream(
            section.litestream_bin,
            section.config_path,
            call_timeout_s=section.call_timeout_s,
            log=log,
        )
    except LitestreamError as exc:
        raise DrillError(str(exc)) from None
    status = StatePaths.under(config.state_dir).read_status() or {}
    rows = {str(r.get("db")): r for r in status.get("databases") or [] if isinstance(r, dict)}
    scratch = config.state_dir / DR_DIR / f"scratch-{os.getpid()}"
    rehearsal = await rehearse(
        targets,
        litestream=ls,
        scratch_dir=scratch,
        standby_dir=section.standby_dir,
        status_rows=rows,
        tables=by_table,
        concurrency=section.concurrency,
        restore_timeout_s=section.restore_timeout_s,
    )
    now = time.time()
    routing = check_routing(config, primary_host, now)
    peer_watch = check_peer_watch(config, now)
    dbs = [d.to_json() for d in rehearsal.dbs]
    missing = [p for p in plan.problems if p[1].startswith("in the tier table")]
    notes = [f"{db}: {problem}" for db, problem in plan.problems]
    for db, _problem in missing:
        dbs.append({"db": db, "tier": "?", "ok": False, "problem": "no restore config entry"})
    cli_wall = time.monotonic() - started_mono - rehearsal.wall_s
    criteria = criteria_for(
        dbs=dbs,
        p0_expected=expected_p0 if "P0" in tiers else 0,
        rehearsal_wall_s=rehearsal.wall_s,
        cli_wall_s=max(0.0, cli_wall),
        routing=routing,
        peer_watch=peer_watch,
    )
    cfg = shlex.quote(str(section.config_path))
    commands = [
        " ".join(shlex.quote(a) for a in ["fleet", *sys.argv[1:]]) or "fleet dr drill",
        f"litestream ltx -json -config {cfg} <standby copy>  (per DB)",
        f"litestream restore -json -config {cfg} -integrity-check full -o <scratch> "
        "<standby copy>  (per DB)",
        "PRAGMA integrity_check on each restored DB",
    ]
    finished = time.time()
    report = DrillReport(
        host=config.fleet.host,
        started_at=started_at,
        finished_at=finished,
        passed=all(c.ok is not False for c in criteria) and not any(not d["ok"] for d in dbs),
        criteria=criteria,
        dbs=dbs,
        checks=[routing, peer_watch],
        primary=primary_position(config),
        commands=commands,
        rehearsal_wall_s=rehearsal.wall_s,
        wall_s=time.monotonic() - started_mono,
        notes=notes,
    )
    json_path, md_path, record = write_report(config.state_dir, report)
    return DrillOutcome(report, json_path, md_path, record)


def summary_lines(outcome: DrillOutcome) -> list[str]:
    report = outcome.report
    lines = [f"DR drill on {report.host}: {'PASSED' if report.passed else 'FAILED'}"]
    for c in report.criteria:
        mark = "n/a " if c.ok is None else ("ok  " if c.ok else "FAIL")
        lines.append(f"  {mark} {c.name}: {c.measured} (target {c.target})")
    for d in report.dbs:
        if not d.get("ok"):
            lines.append(f"  FAILED DB {d['db']}: {d.get('problem')}")
    lines.append(f"evidence: {outcome.md_path} and {outcome.json_path.name}")
    return lines


def report_json(outcome: DrillOutcome) -> dict[str, Any]:
    data = outcome.report.to_json()
    data["evidence"] = {"json": str(outcome.json_path), "markdown": str(outcome.md_path)}
    return data

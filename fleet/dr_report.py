"""The DR drill's evidence: the seed's acceptance table filled with measured values, the per-DB
results, the checks and the commands used, as JSON and Markdown under ``<state>/dr/drills/``
(atomic, 0600, the newest ``KEEP_REPORTS`` kept), plus the summary record heartbeat exports.
Pure rendering and file writing: it must never run a check itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet.dr_checks import ALERT_TARGET_S, Check
from shared.dr_record import DR_DIR, DrillRecord, write_drill_record
from shared.files import atomic_write_json, atomic_write_text

__all__ = ["Criterion", "DrillReport", "criteria_for", "write_report"]

KEEP_REPORTS = 24
RPO_TARGET_S = 60.0
RTO_TARGET_S = 300.0


@dataclass
class Criterion:
    key: str
    name: str  # the seed's wording of the criterion
    target: str
    measured: str
    #: None: not exercised by a drill (it stops nothing); does not fail it
    ok: bool | None
    how: str


@dataclass
class DrillReport:
    host: str
    started_at: float
    finished_at: float
    passed: bool
    criteria: list[Criterion]
    dbs: list[dict[str, Any]]
    checks: list[Check]
    primary: dict[str, Any]
    commands: list[str]
    rehearsal_wall_s: float
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def failed_dbs(self) -> list[str]:
        return [str(d["db"]) for d in self.dbs if not d.get("ok")]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [c.to_json() for c in self.checks]
        data["failed_dbs"] = self.failed_dbs
        return data


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def criteria_for(
    *,
    dbs: list[dict[str, Any]],
    p0_expected: int,
    rehearsal_wall_s: float,
    cli_wall_s: float,
    routing: Check,
    peer_watch: Check,
) -> list[Criterion]:
    """The seed's acceptance table (Phase 8.3) with what this drill measured."""
    p0 = [d for d in dbs if d.get("tier") == "P0"]
    p0_ok = [d for d in p0 if d.get("ok")]
    lags = [d["standby_lag_s"] for d in dbs if isinstance(d.get("standby_lag_s"), int | float)]
    lag = max(lags, default=0.0)
    caught_up = all(
        d.get("ok") and (d.get("restored_txid") or 0) >= (d.get("replica_txid") or 0) for d in dbs
    )
    rto = rehearsal_wall_s + cli_wall_s
    latency = peer_watch.measured.get("alert_latency_bound_s")
    bad = [d["db"] for d in dbs if not d.get("ok")]
    return [
        Criterion(
            "alert_path",
            "Slack alert latency",
            f"< {ALERT_TARGET_S:.0f} s (2 min 30 s)",
            f"bound {_fmt(latency)} from peer-watch thresholds; {peer_watch.summary}",
            peer_watch.ok,
            "heartbeat's last probes, its heartbeat file and the outbox (no outage caused)",
        ),
        Criterion(
            "rpo",
            "FORGE DB data lag (RPO)",
            f"< {RPO_TARGET_S:.0f} s",
            f"standby copies at most {lag:.1f} s behind the replicas; a promote restores to "
            f"the replica's newest TXID ({'every DB did' if caught_up else 'NOT every DB did'})",
            caught_up and lag < RPO_TARGET_S,
            "litestream ltx -json (newest LTX time) against the standby copy's TXID",
        ),
        Criterion(
            "rto",
            "Time to FORGE serving (RTO)",
            f"< {RTO_TARGET_S:.0f} s (5 min)",
            f"{rto:.1f} s (restore + integrity checks {rehearsal_wall_s:.1f} s, "
            f"CLI start {cli_wall_s:.1f} s; fencing and DNS not included)",
            rto < RTO_TARGET_S and not bad,
            "a full restore with -integrity-check full and PRAGMA integrity_check per DB, "
            "with the promote's concurrency",
        ),
        Criterion(
            "p0_count",
            "P0 DB count on FORGE",
            f"{p0_expected} DBs (every P0 DB in the tier table)",
            f"{len(p0_ok)} of {len(p0)} restored and verified"
            + (f"; failed: {', '.join(bad)}" if bad else ""),
            len(p0_ok) == p0_expected and not bad,
            "restore into a scratch directory, compared with the standby copy",
        ),
        Criterion(
            "routing",
            "Ollama inference on FORGE",
            "tiers fail over to this host",
            routing.summary,
            routing.ok,
            "tier routing with the primary marked down (no test prompt is sent)",
        ),
        Criterion(
            "no_loss_on_restart",
            "No data loss on ANVIL restart",
            "row counts match",
            "not exercised: a drill stops nothing (see `fleet dr switchover`)",
            None,
            "-",
        ),
    ]


def _markdown(report: DrillReport) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.started_at))
    verdict = "PASSED" if report.passed else "FAILED"
    lines = [
        f"# DR drill on {report.host}, {stamp}: {verdict}",
        "",
        f"Wall time {report.wall_s:.1f} s; rehearsed promote {report.rehearsal_wall_s:.1f} s.",
        "",
        "## Acceptance criteria (seed Phase 8.3)",
        "",
        "| Criterion | Target | Measured | Result | How |",
        "|---|---|---|---|---|",
    ]
    for c in report.criteria:
        result = "n/a" if c.ok is None else ("PASS" if c.ok else "FAIL")
        lines.append(f"| {c.name} | {c.target} | {c.measured} | {result} | {c.how} |")
    lines += [
        "",
        "## Databases",
        "",
        "| DB | Tier | Result | Standby TXID | Replica TXID | Restored TXID | Restore | Check "
        "| Rows (table) | Problem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in report.dbs:
        rows = "-"
        if d.get("table"):
            rows = f"{d.get('standby_rows')}/{d.get('restored_rows')} ({d['table']})"
        lines.append(
            f"| {d['db']} | {d['tier']} | {'ok' if d.get('ok') else 'FAIL'} "
            f"| {d.get('standby_txid')} | {d.get('replica_txid')} | {d.get('restored_txid')} "
            f"| {_fmt(d.get('restore_s'))} | {_fmt(d.get('check_s'))} | {rows} "
            f"| {str(d.get('problem') or '').replace('|', '/')} |"
        )
    lines += ["", "## Checks", ""]
    for check in report.checks:
        lines.append(f"- **{check.name}**: {'ok' if check.ok else 'FAILED'}: {check.summary}")
        lines += [f"  - {e}" for e in check.evidence]
    lines += ["", "## Primary as peer watch last saw it", ""]
    for name, seen in sorted(report.primary.items()):
        lines.append(f"- {name}: reachable {seen.get('reachable')}, role {seen.get('role')}")
    lines += ["", "## Commands used", ""]
    lines += [f"- `{cmd}`" for cmd in report.commands]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def write_report(state_dir: Path, report: DrillReport) -> tuple[Path, Path, DrillRecord]:
    """Write the JSON and Markdown evidence and the summary record; prune old reports."""
    drills = state_dir / DR_DIR / "drills"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(report.started_at))
    json_path, md_path = drills / f"drill-{stamp}.json", drills / f"drill-{stamp}.md"
    atomic_write_json(json_path, report.to_json())
    atomic_write_text(md_path, _markdown(report))
    for old in sorted(drills.glob("drill-*.json"))[:-KEEP_REPORTS]:
        old.unlink(missing_ok=True)
        old.with_suffix(".md").unlink(missing_ok=True)
    record = DrillRecord(
        run_at=report.finished_at,
        passed=report.passed,
        last_success_at=report.finished_at if report.passed else 0.0,
        criteria={c.key: c.ok for c in report.criteria if c.ok is not None},
        failed_dbs=tuple(report.failed_dbs),
        dbs=tuple(str(d["db"]) for d in report.dbs),
        report=str(md_path),
    )
    return json_path, md_path, write_drill_record(state_dir, record)

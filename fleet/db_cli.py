"""``fleet db check`` (also ``fleet doctor``) and ``fleet db migrate``: the shared tables this
host's daemons use, against the contracts their manifests declare.

``check`` opens each shared DB read-only and prints, per table and user: ok, degraded (an
optional column missing: what works worse), or refuses (a required column missing, or a NOT NULL
column without default the fleet does not fill), plus notes (recommended indexes, task_defaults
naming no column). It exits 78 when any daemon would refuse, 0 otherwise. ``migrate`` prints the
statements that would give each table what its contracts list and, only with ``--apply``, runs
them (one transaction per DB). It is the only command that changes another tool's schema.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from fleet.registry import manifests
from shared.cli import config_option, die, json_option, load_config_or_exit
from shared.exitcodes import EX_CONFIG, ExitCode
from shared.roles import effective_role
from shared.schema_contract import ContractReport, ContractUse, check_contract
from shared.shared_tables import TASKS_LEASES

__all__ = ["contract_uses", "db", "doctor"]

EX_STORE = ExitCode.STORE


def contract_uses(config: Any, manifests: Sequence[Any]) -> list[ContractUse]:
    """Every shared table a daemon enabled on this host (and not fenced off its role) uses,
    plus Mission Control's leases, which the `fleet mc` hooks use on every host."""
    role = effective_role(config.fleet.role, config.role_file)
    uses: list[ContractUse] = []
    for manifest in manifests:
        section = config.daemon_section(manifest.section_name)
        if not section.enabled or manifest.fenced(section, role):
            continue
        uses.extend(manifest.contracts(config, section))
    uses.append(ContractUse(config.mission_control.db, TASKS_LEASES, "fleet mc (the hooks)"))
    return uses


@dataclass(frozen=True)
class Checked:
    use: ContractUse
    report: ContractReport | None  # None: no DB file yet
    error: str | None = None

    @property
    def refuses(self) -> bool:
        if self.error is not None:
            return True
        return self.report is not None and self.report.present and not self.report.ok

    def status(self) -> str:
        if self.error is not None:
            return "unreadable"
        if self.report is None or not self.report.present:
            return "absent"
        if not self.report.ok:
            return "refuses"
        return "degraded" if self.report.missing_optional else "ok"

    def lines(self) -> list[str]:
        r = self.report
        if self.error is not None:
            return [self.error]
        if r is None:
            return [f"{self.use.path} does not exist yet (created at first start)"]
        if not r.present:
            return [f"no table {self.use.contract.table} yet (created at first start)"]
        return [*r.problems(), *r.degraded(), *r.notes()]

    def as_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "db": str(self.use.path),
            "table": self.use.contract.table,
            "used_by": self.use.used_by,
            "status": self.status(),
            "missing_required": list(r.missing_required) if r else [],
            "missing_optional": dict(r.missing_optional) if r else {},
            "unfilled_not_null": list(r.unfilled) if r else [],
            "missing_indexes": list(r.missing_indexes) if r else [],
            "detail": self.lines(),
        }


def _check(use: ContractUse) -> Checked:
    from shared.sqlite import connect_sync

    if not use.path.exists():
        return Checked(use, None)
    try:
        conn = connect_sync(use.path, readonly=True)
        try:
            return Checked(use, check_contract(conn, use))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Checked(use, None, f"{use.path}: cannot read ({exc})")


def _checks(config_path: str | None) -> list[Checked]:
    config = load_config_or_exit(config_path)
    return [_check(use) for use in contract_uses(config, manifests())]


@click.group()
def db() -> None:
    """The shared databases: contract check and the explicit schema migration."""


def _print_checks(checked: list[Checked], as_json: bool) -> None:
    refusing = [c for c in checked if c.refuses]
    if as_json:  # the document says which refuse; the exit code says that one does
        click.echo(json.dumps([c.as_json() for c in checked], indent=2))
        raise SystemExit(EX_CONFIG if refusing else ExitCode.OK)
    else:
        for c in checked:
            click.echo(
                f"{c.status():10} {c.use.contract.db} {c.use.contract.table}"
                f"  (used by {c.use.used_by}; {c.use.path})"
            )
            for line in c.lines():
                click.echo(f"           - {line}")
    if refusing:
        users = sorted({c.use.used_by for c in refusing})
        die(EX_CONFIG, f"would refuse to run: {', '.join(users)}")


@db.command("check")
@json_option()
@config_option
def db_check(as_json: bool, config_path: str | None) -> None:
    """Each shared table against what this host's daemons need (exit 78: one would refuse)."""
    _print_checks(_checks(config_path), as_json)


@click.command()
@json_option()
@config_option
def doctor(as_json: bool, config_path: str | None) -> None:
    """Same as `fleet db check`."""
    _print_checks(_checks(config_path), as_json)


def _plan(checked: list[Checked]) -> dict[Path, list[str]]:
    plan: dict[Path, list[str]] = {}
    for c in checked:
        if c.report is None:
            continue
        for statement in c.report.migration():
            steps = plan.setdefault(c.use.path, [])
            if statement not in steps:
                steps.append(statement)
    return plan


def _apply(path: Path, statements: list[str]) -> None:
    from shared.sqlite import connect_sync, transaction_sync

    conn = connect_sync(path, create=False)
    try:
        with transaction_sync(conn):
            for statement in statements:
                conn.execute(statement)
    finally:
        conn.close()


@db.command("migrate")
@click.option("--apply", "apply_", is_flag=True, help="make the changes (default: only show)")
@json_option()
@config_option
def db_migrate(apply_: bool, as_json: bool, config_path: str | None) -> None:
    """Show (with --apply: make) the columns and indexes the fleet's contracts list and the
    shared tables lack. The only command that changes another tool's schema."""
    checked = _checks(config_path)
    plan = _plan(checked)
    unfilled = [c for c in checked if c.report is not None and c.report.unfilled]
    if as_json:
        for path, statements in plan.items() if apply_ else ():
            try:
                _apply(path, statements)
            except sqlite3.Error as exc:
                die(EX_STORE, f"error: {path}: {exc}; nothing changed in this file")
        doc = {
            "applied": bool(apply_ and plan),
            "databases": [{"db": str(p), "statements": st} for p, st in plan.items()],
            "unfilled_not_null": [
                {"table": c.report.where, "columns": list(c.report.unfilled)}
                for c in unfilled
                if c.report is not None
            ],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    if not plan:
        click.echo("every shared table has what the fleet's contracts list; nothing to do")
    for path, statements in plan.items():
        click.echo(f"{path}: " + ("applying" if apply_ else "would apply (run with --apply)"))
        for statement in statements:
            click.echo(f"  {statement};")
        if apply_:
            try:
                _apply(path, statements)
            except sqlite3.Error as exc:
                die(EX_STORE, f"error: {path}: {exc}; nothing changed in this file")
            click.echo("  done")
    for c in unfilled:
        assert c.report is not None
        click.echo(
            f"not a migration: {c.report.where} NOT NULL without default: "
            f"{', '.join(c.report.unfilled)}; set [mission_control] task_defaults"
        )

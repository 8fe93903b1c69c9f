"""``fleet status``: one row per daemon from its heartbeat file, its process (the heartbeat's pid,
checked against the process's start time) and, for installed units, what systemd or launchd
says; and this host's role.

A daemon is expected when it is enabled and role fencing does not keep it off this host; an
expected daemon that is stale (judged from its own interval or schedule), whose process is gone,
or whose unit the service manager reports inactive or failed makes the exit 1. A daemon running
outside its unit (started by hand while the unit is stopped) still counts as up, saying so.
This path imports the standard library and click only (``fleet.status_facts`` reads the config
keys it needs without pydantic); it never writes anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from fleet.service_state import ServiceState, installed_units, query_services
from fleet.status_facts import StatusFacts, read_facts
from shared.exitcodes import ExitCode
from shared.heartbeats import process_state, read_heartbeat, read_status
from shared.roles import RoleFileError, effective_role

if TYPE_CHECKING:
    from shared.config import FleetConfig

__all__ = ["show_status", "status_rows"]


def _service_verdict(
    services: list[ServiceState], process: str, ok: bool, reason: str
) -> tuple[bool, str]:
    """Fold the service manager's word into the heartbeat's verdict."""
    down = [s for s in services if s.down]
    if not services or len(down) < len(services):
        return ok, reason  # not installed, or one of its units is up
    shown = ", ".join(
        f"{s.manager} {s.state}" + (f" ({s.detail})" if s.detail else "") for s in down
    )
    if process == "running":
        return ok, f"{reason} (running outside its unit: {shown})"
    return False, f"unit {shown}; last: {reason}"


def status_rows(
    facts: StatusFacts,
    now: float,
    services: Mapping[str, list[ServiceState]],
) -> tuple[list[dict[str, Any]], str | None, str]:
    """(rows, the effective role or None when the role file is garbled, the role line)."""
    role: str | None = None
    try:
        role = str(effective_role(facts.role, facts.role_file))
        role_text = f"{role} (from {'role file' if facts.role_file.exists() else 'config'})"
    except RoleFileError as exc:
        # Shown instead of a role; the daemons that need one refuse to start.
        role_text = f"ERROR: {exc}"
    rows = []
    for daemon in facts.daemons:
        # A daemon fenced off this host's role (restore-loop on a primary) is not expected.
        expected = daemon.enabled and (role is None or role not in daemon.fenced_on)
        st = read_status(facts.heartbeat_dir, daemon.name, now)
        beat = read_heartbeat(facts.heartbeat_dir, daemon.name)
        process = "stopped"
        if beat is not None:
            process = process_state(beat.pid, beat.process_started_at)
        ok, reason = st.ok, st.reason
        if process == "stopped" and beat is not None:
            ok, reason = False, f"stopped: pid {beat.pid} is gone or reused; last: {st.reason}"
        units = services.get(daemon.name, [])
        ok, reason = _service_verdict(units, process, ok, reason)
        rows.append(
            {
                "daemon": daemon.name,
                "enabled": expected,
                "ok": ok,
                "process": process,
                "pid": beat.pid if beat is not None else None,
                "service": units[0].state if units else None,
                "services": [s.to_json() for s in units],
                "last_ok_at": st.last_ok_at,
                "age_s": round(st.age_s, 1) if st.age_s is not None else None,
                "expected_interval_s": st.expected_interval_s,
                "cycles": st.cycles,
                "reason": reason,
                "role": role,
            }
        )
    return rows, role, role_text


def _render_text(rows: list[dict[str, Any]], role_text: str, layout: str) -> None:
    click.echo(f"role: {role_text}")
    click.echo(
        f"{'DAEMON':<20} {'OK':<4} {'PROCESS':<8} {'SERVICE':<10} {'AGE':>8} {'INTERVAL':>9} "
        f"{'CYCLES':>7}  REASON"
    )
    for r in rows:
        age = f"{r['age_s']:.0f}s" if r["age_s"] is not None else "-"
        interval = f"{r['expected_interval_s']:.0f}s" if r["expected_interval_s"] else "-"
        shown = "yes" if r["ok"] else ("no" if r["enabled"] else "off")
        service = r["service"] or "-"
        click.echo(
            f"{r['daemon']:<20} {shown:<4} {r['process']:<8} {service:<10} {age:>8} "
            f"{interval:>9} {r['cycles']:>7}  {r['reason']}"
        )
    click.echo(f"layout {layout} (paths: fleet config paths)")


def show_status(
    config_path: str | None,
    as_json: bool,
    service_timeout_s: float,
    load: Callable[[str | None], FleetConfig],
) -> int:
    """Print the status; the exit code: 0 every expected daemon up, 1 one is not, 78 the role
    file is garbled."""
    facts = read_facts(config_path, load)
    names = [d.name for d in facts.daemons]
    services = query_services(installed_units(names), timeout_s=service_timeout_s)
    rows, role, role_text = status_rows(facts, time.time(), services)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        if role is None:
            click.echo(role_text, err=True)
    else:
        _render_text(rows, role_text, facts.layout)
    if role is None:
        return ExitCode.CONFIG
    return ExitCode.OK if all(r["ok"] for r in rows if r["enabled"]) else ExitCode.FAILURE

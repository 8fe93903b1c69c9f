"""``fleet blueprint ...`` and ``fleet zakon ...``: scan now, show the last report, list the
ZAKON registry. The ``validate`` verbs are the stdlib gates in gate.py: the hooks reach them
through ``fleet.entry`` without click (or pydantic); the click commands here declare the same
FILE and options, so ``--help`` (which ``fleet.entry`` hands to click) reads like every other
command's, and hand the command line on to the gate.

Exit codes: 0 ok / compliant, 1 non-compliant files found, 3 registry missing or unparseable
(or no report yet: the store is unavailable), 64 usage, 78 invalid config; the gates keep the
hook protocol (0 pass, 2 blocked, 3 cannot judge, 64 usage). Errors are JSON under ``--json``.
Nothing here sends an alert or writes anything but the report (``scan --write``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click

from daemons.blueprint_watchdog.config import BlueprintWatchdogSection
from shared.cli import config_option, die, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

__all__ = ["blueprint", "zakon"]

EX_OK, EX_FINDINGS = ExitCode.OK, ExitCode.FAILURE
# the registry or the report is missing or unreadable: the store is unavailable (3, as the
# gate's own "cannot judge")
EX_REGISTRY = ExitCode.STORE


@click.group()
def blueprint() -> None:
    """Blueprint/DEPLOY-MAP/ZAKON liveness scan and the blueprint pre-write gate."""


@click.group()
def zakon() -> None:
    """The ZAKON registry and its fail-closed creation gate."""


def _gate_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options both gates take (gate.py's ``_common_options``, for click)."""
    options = [
        click.option("--root", default=None, help="fleet root (default: [fleet] root)"),
        click.option(
            "--registry",
            default=None,
            help="ZAKON registry JSON (default: [blueprint_watchdog] registry_file)",
        ),
        click.option(
            "--config",
            "config",
            default=None,
            help="config file instead of the system config (/etc/alai-fleet/fleet.toml, else "
            "embedded defaults); logged. $FLEET_* and ./fleet.toml are never read",
        ),
        click.option(
            "--mc-db", default=None, help="mission-control.db (default: [mission_control] db)"
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _gate_argv(file: str, **options: Any) -> list[str]:
    """The command line the stdlib gate parses, rebuilt from click's parameters."""
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return [*argv, "--", file]


@blueprint.command("validate")
@click.argument("file", metavar="FILE")
@click.option("--stdin", is_flag=True, help="judge the content on stdin (about to be written)")
@click.option("--type", "type_", default=None, help="document type (blueprint, deploy-map, zakon)")
@_gate_options
def blueprint_validate(file: str, type_: str | None, **options: Any) -> None:
    """Blueprint schema gate for FILE (its path decides its type): exit 0 pass (or not a gated
    document), 2 blocked (schema below full score, stale or missing Last-Verified; a ZAKON file
    also needs its registry entry, the registry file an approved change), 3 cannot judge, 64
    usage. BLUEPRINT_OVERRIDE=ceo-approved-<MC_ID> waives schema/liveness (audit-logged; task
    MC_ID must carry [CEO_APPROVED])."""
    from daemons.blueprint_watchdog.gate import blueprint_validate_main

    raise SystemExit(blueprint_validate_main(_gate_argv(file, type=type_, **options)))


@zakon.command("validate")
@click.argument("file", metavar="FILE")
@_gate_options
def zakon_validate(file: str, **options: Any) -> None:
    """ZAKON registry gate for the zakon-*.md FILE about to be written: exit 0 pass, 2 blocked,
    3 registry missing or unparseable (fail closed), 64 usage."""
    from daemons.blueprint_watchdog.gate import zakon_validate_main

    raise SystemExit(zakon_validate_main(_gate_argv(file, **options)))


@blueprint.command("gate-script")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="the config file the gates will read (fixed in the script)",
)
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="script to write"
)
def blueprint_gate_script(config_path: str, out_path: str) -> None:
    """Write an executable gate script with its config fixed inside, for hooks on hosts whose
    config is not /etc/alai-fleet/fleet.toml: `SCRIPT zakon validate FILE`,
    `SCRIPT blueprint validate FILE --stdin`. Exit 78 if the config is invalid."""
    import os
    import sys
    from pathlib import Path

    from daemons.blueprint_watchdog.gate_script import render_gate_script
    from daemons.blueprint_watchdog.gate_settings import GateConfigError, resolve_gate_settings
    from shared.files import atomic_write_text

    config_file = Path(config_path).expanduser().absolute()
    if not config_file.is_file():
        die(ExitCode.CONFIG, f"--config: {config_file}: no such file")
    load_config_or_exit(str(config_file))  # every bad key, with its path
    try:
        resolve_gate_settings(system_config=config_file)
    except GateConfigError as exc:
        die(ExitCode.CONFIG, f"{config_file}: {exc}")
    try:
        text = render_gate_script(python=sys.executable, system_config=str(config_file))
    except ValueError as exc:
        die(ExitCode.CONFIG, str(exc))
    out = Path(out_path).expanduser().absolute()
    atomic_write_text(out, text, mode=0o755)
    click.echo(f"wrote {out} (config {config_file})")
    click.echo(f'hook: {out} blueprint validate "$FILE" --stdin < "$NEW_CONTENT" || exit 2')
    if os.access(config_file, os.W_OK) and os.getuid() != 0:
        click.echo(
            f"note: {config_file} is writable by this user; a session running as this user "
            "could change what the gates read",
            err=True,
        )


def _print_summary(report_json: dict[str, Any]) -> None:
    summary = report_json["summary"]
    files = ", ".join(f"{k} {v}" for k, v in summary["files"].items())
    click.echo(
        f"scan {report_json['generated_at']} on {report_json['host']}: {summary['total']} file(s)"
        f" ({files}); {summary['noncompliant']} non-compliant; "
        f"{report_json['duration_s']:.2f}s"
    )
    registry = report_json["registry"]
    if registry["ok"]:
        click.echo(f"registry {registry['path']}: ok, {registry['entries']} entries")
    elif not registry.get("alarm"):
        click.echo(f"registry {registry['path']}: {registry['problem']} (no ZAKON files yet)")
    else:
        click.echo(f"registry {registry['path']}: UNUSABLE (ZAKON writes are blocked)")
        click.echo(registry["error"] or "")
    for item in report_json["files"]:
        if item["compliant"]:
            continue
        score = f" [{item['score']}]" if item["score"] and item["type"] != "zakon" else ""
        click.echo(f"  {item['type']:<10} {item['path']}{score}")
        for detail in item["details"]:
            click.echo(f"      - {detail}")
    for problem in report_json["problems"]:
        click.echo(f"  problem   {problem['path']}: {problem['problem']} ({problem['detail']})")
    if report_json.get("truncated"):
        click.echo("  warning: the walk was truncated (max_walk_entries)")


def _exit_code(report_json: dict[str, Any]) -> int:
    if report_json["registry"].get("alarm"):
        return EX_REGISTRY
    return EX_FINDINGS if report_json["summary"]["noncompliant"] else EX_OK


@blueprint.command("scan")
@json_option("print the full report as JSON (errors too)")
@click.option("--write", is_flag=True, help="also replace the report file with this scan")
@config_option
def blueprint_scan(as_json: bool, write: bool, config_path: str | None) -> None:
    """Scan now (no alerts) and summarize; exit 1 if anything is non-compliant."""
    from daemons.blueprint_watchdog.daemon import scan_settings
    from daemons.blueprint_watchdog.inspection import inspect_tree

    config = load_config_or_exit(config_path)
    report = inspect_tree(scan_settings(config), now=time.time(), host=config.fleet.host)
    data = report.to_json()
    if write:
        from shared.files import atomic_write_json

        atomic_write_json(config.section(BlueprintWatchdogSection).report_file, data)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_summary(data)
    raise SystemExit(_exit_code(data))


@blueprint.command("report")
@json_option("print the report file as is (errors as JSON)")
@config_option
def blueprint_report(as_json: bool, config_path: str | None) -> None:
    """Show the last nightly report (<root>/state/blueprint-watchdog/report.json)."""
    config = load_config_or_exit(config_path)
    path = config.section(BlueprintWatchdogSection).report_file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("summary"), dict):
            raise ValueError("not a blueprint-watchdog report")
    except FileNotFoundError:
        die(EX_REGISTRY, f"no report yet at {path}; run `fleet blueprint scan --write`")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        die(EX_REGISTRY, f"report {path} unreadable ({exc}); run `fleet blueprint scan --write`")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        _print_summary(data)
    raise SystemExit(_exit_code(data))


def _load_registry_or_exit(config_path: str | None, registry_path: str | None) -> Any:
    from pathlib import Path

    from daemons.blueprint_watchdog.registry import RegistryError, load_registry

    if registry_path:
        path = Path(registry_path).expanduser()
    else:
        path = load_config_or_exit(config_path).section(BlueprintWatchdogSection).registry_file
    try:
        return load_registry(path)
    except RegistryError as exc:
        die(EX_REGISTRY, exc.render())


_registry_option = click.option(
    "--registry", "registry_path", default=None, help="registry JSON (default: from config)"
)


@zakon.command("list")
@json_option()
@_registry_option
@config_option
def zakon_list(as_json: bool, registry_path: str | None, config_path: str | None) -> None:
    """Every registry entry: id, status, MC task, token, file (and whether it exists)."""
    from pathlib import Path

    from daemons.blueprint_watchdog.registry import judge_entry

    registry = _load_registry_or_exit(config_path, registry_path)
    rows = []
    for entry in registry.entries:
        verdict = judge_entry(entry)
        rows.append(
            {
                **entry.to_json(),
                "exists": Path(entry.path).exists(),
                "gate": "pass" if verdict.ok else f"block: {verdict.detail}",
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{registry.path} (version {registry.version or '-'}): {len(rows)} entries")
    for row in rows:
        mc = f"MC #{row['mc_task']}" if row["mc_task"] else "MC -"
        missing = "" if row["exists"] else "  (file missing)"
        click.echo(
            f"{row['zakon_id']:<28} {row['status']:<24} {mc:<10} "
            f"{row['ceo_approved_token']:<30} {row['file_path']}{missing}"
        )
        if row["gate"] != "pass":
            click.echo(f"    gate: {row['gate']}")


@zakon.command("stats")
@json_option()
@_registry_option
@config_option
def zakon_stats(as_json: bool, registry_path: str | None, config_path: str | None) -> None:
    """Count of registry entries by status."""
    registry = _load_registry_or_exit(config_path, registry_path)
    counts = registry.by_status()
    if as_json:
        click.echo(json.dumps({"total": len(registry.entries), "by_status": counts}, indent=2))
        return
    click.echo(f"total entries: {len(registry.entries)}")
    for status, count in counts.items():
        click.echo(f"  {status:<26} {count}")

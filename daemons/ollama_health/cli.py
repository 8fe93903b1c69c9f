"""``fleet ollama ...``: the ollama-health commands for operators and routers.

``status`` prints the hosts table from the private status file, and whether the legacy-path
symlink (``status_link``) is published or what another user put there instead; ``route TIER``
resolves a tier exactly as the daemon's failover rules do (stale or missing status: the
configured primary, saying so). Exit codes: 0 ok, 1 unhealthy, stale or link not published
(status) or tier unavailable (route), 2 unknown tier, 64 usage, 78 unusable config; errors as
JSON under ``--json``. Read-only: these commands never write the status or override file, nor
touch the link.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from daemons.ollama_health.config import OllamaHealthSection
from shared.cli import config_option, die, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from daemons.ollama_health.table import RoutingTable
    from shared.config import FleetConfig

__all__ = ["ollama"]


_die = die


def _read(config: FleetConfig) -> dict[str, Any] | None:
    from daemons.ollama_health.status_file import StatusFileError, read_status

    try:
        return read_status(config.section(OllamaHealthSection).status_file)
    except StatusFileError as exc:
        click.echo(f"warning: {exc}; treating health as unknown", err=True)
        return None


def _table(config: FleetConfig, status: dict[str, Any] | None) -> RoutingTable | None:
    """The configured table; None means "use the one the status file embeds"."""
    from daemons.ollama_health.daemon import MAX_TIER_ROUTING_BYTES
    from daemons.ollama_health.table import TableError, parse_tier_routing, table_from_section

    section = config.section(OllamaHealthSection)
    path = section.tier_routing_file
    if path is None:
        return table_from_section(section)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TIER_ROUTING_BYTES + 1)
        return parse_tier_routing(json.loads(raw))
    except (OSError, ValueError, TableError) as exc:
        if status is not None and "_config" in status:
            click.echo(
                f"warning: tier routing file {path} unusable ({exc}); using the table the "
                "status file was written with",
                err=True,
            )
            return None
        _die(ExitCode.CONFIG, f"error: tier routing file {path} unusable: {exc}")


@click.group()
def ollama() -> None:
    """ollama-health: LLM host health and tier routing."""


@ollama.command("status")
@json_option()
@config_option
def status_cmd(as_json: bool, config_path: str | None) -> None:
    """Hosts table from the status file; exit 1 if a host is unhealthy, the file is stale or
    the legacy-path link is not published."""
    from daemons.ollama_health.file_trust import inspect_link
    from daemons.ollama_health.routing import STALE_INTERVALS, status_age

    config = load_config_or_exit(config_path)
    section = config.section(OllamaHealthSection)
    path = section.status_file
    link: dict[str, Any] | None = None
    link_line = None
    if section.status_link is not None:
        link = inspect_link(section.status_link, path.absolute()).to_json()
        if not link["published"]:
            link_line = f"LEGACY PATH {link['path']} NOT PUBLISHED: {link['error']}"
    link_ok = link_line is None
    status = _read(config)
    now = time.time()
    if status is None:
        if as_json:
            click.echo(
                json.dumps({"file": str(path), "present": False, "stale": True, "link": link})
            )
        else:
            click.echo(f"no usable status file at {path} (is ollama-health running?)")
            if link_line:
                click.echo(link_line)
        raise SystemExit(ExitCode.FAILURE)
    age = status_age(status, now)
    interval = status.get("_interval_s") or config.section(OllamaHealthSection).interval_s
    stale = age is None or age > STALE_INTERVALS * float(interval)
    hosts = {k: v for k, v in status.items() if not k.startswith("_") and isinstance(v, dict)}
    all_ok = link_ok and not stale and all(h.get("healthy") is True for h in hosts.values())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(path),
                    "present": True,
                    "generated_at": status.get("_generated_at"),
                    "age_s": round(age, 1) if age is not None else None,
                    "stale": stale,
                    "hosts": hosts,
                    "routing": status.get("_routing"),
                    "override": status.get("_override"),
                    "config_error": status.get("_config_error"),
                    "link": link,
                },
                indent=2,
                sort_keys=True,
            )
        )
        raise SystemExit(ExitCode.OK if all_ok else ExitCode.FAILURE)
    age_text = f"{age:.0f}s ago" if age is not None else "unknown time"
    click.echo(f"{path}: generated {status.get('_generated_at')} ({age_text})")
    if stale:
        click.echo(
            f"WARNING: older than {STALE_INTERVALS:g} intervals: routers treat health as unknown"
        )
    click.echo(
        f"{'HOST':<12} {'HEALTHY':<8} {'VIA':<10} {'LATENCY':>9} {'MODELS':>6} {'FAILS':>5} "
        f"{'OVERRIDE':<8} ERROR"
    )
    for name, h in sorted(hosts.items()):
        latency = h.get("latency_ms")
        click.echo(
            f"{name:<12} {('yes' if h.get('healthy') else 'NO'):<8} {h.get('via') or '-':<10} "
            f"{(f'{latency:.0f}ms' if isinstance(latency, int | float) else '-'):>9} "
            f"{len(h.get('models') or []):>6} {h.get('consecutive_failures', 0):>5} "
            f"{('yes' if h.get('override') else '-'):<8} {h.get('error') or ''}"
        )
    routing = status.get("_routing") or {}
    active = routing.get("active_rules") or []
    click.echo(f"failover rules active: {', '.join(active) if active else 'none'}")
    for tier, dest in sorted((routing.get("redirects") or {}).items()):
        click.echo(f"  tier {tier} -> {dest.get('host')}")
    if routing.get("to_claude"):
        click.echo(f"  to claude: {', '.join(routing['to_claude'])}")
    if routing.get("unavailable"):
        click.echo(f"  UNAVAILABLE: {', '.join(routing['unavailable'])}")
    override = status.get("_override") or {}
    if override.get("active"):
        until = override.get("expires_at") or "until the file is removed"
        click.echo(f"override active: {override.get('hosts')} ({until}; {override.get('file')})")
    if override.get("error"):
        click.echo(f"override file ignored: {override['error']}")
    if status.get("_config_error"):
        click.echo(f"tier routing file unusable (last good in use): {status['_config_error']}")
    if link_line:
        click.echo(link_line)
    elif link is not None:
        click.echo(f"published at {link['path']} (symlink)")
    raise SystemExit(ExitCode.OK if all_ok else ExitCode.FAILURE)


@ollama.command("route")
@click.argument("tier")
@click.option("--model", default=None, help="model the caller wants (mapped on failover)")
@json_option()
@config_option
def route_cmd(tier: str, model: str | None, as_json: bool, config_path: str | None) -> None:
    """Where TIER goes now: host, URL, model and why (exit 1: unavailable, 2: unknown tier)."""
    from daemons.ollama_health.routing import RouteError, Unavailable, UnknownTier, route

    config = load_config_or_exit(config_path)
    status = _read(config)
    table = _table(config, status)
    try:
        chosen = route(tier, model, status, table=table)
    except UnknownTier as exc:
        _die(ExitCode.NOT_FOUND, f"error: {exc}")
    except Unavailable as exc:
        if as_json:
            click.echo(json.dumps({"host": None, "url": None, "model": model, "reason": str(exc)}))
        else:
            click.echo(f"unavailable: {exc}", err=True)
        raise SystemExit(ExitCode.FAILURE) from None
    except RouteError as exc:
        _die(ExitCode.CONFIG, f"error: {exc}")
    if as_json:
        click.echo(json.dumps(chosen.to_json()))
    else:
        click.echo(f"host:   {chosen.host}")
        click.echo(f"url:    {chosen.url or '-'}")
        click.echo(f"model:  {chosen.model or '-'}")
        click.echo(f"reason: {chosen.reason}")
    raise SystemExit(ExitCode.OK)

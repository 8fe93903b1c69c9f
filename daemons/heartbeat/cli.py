"""``fleet heartbeat ...``: what this host's /health would answer now, the watched peers' incident
state, and the GitHub Actions workflow for an outside watcher. Exit codes: 0 ok, 1 degraded, 2 no
such peer, 64 usage, 78 invalid config. Read-only: nothing here probes, pings, alerts or prints a
secret.
"""

from __future__ import annotations

import json
import time

import click

from shared.cli import config_option, die, fleet_manifests, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

__all__ = ["heartbeat"]


@click.group()
def heartbeat() -> None:
    """Host health endpoint, dead-man's-switch pings and peer watch."""


@heartbeat.command("health")
@json_option("print the /health JSON (errors as JSON too)")
@config_option
def health(as_json: bool, config_path: str | None) -> None:
    """What GET /health answers on this host now; exit 1 when degraded."""
    from daemons.heartbeat.health import HealthView

    config = load_config_or_exit(config_path)
    report = HealthView(config, fleet_manifests(), cache_s=0).read()
    if as_json:
        click.echo(json.dumps(report.body, indent=2, sort_keys=True))
    else:
        body = report.body
        click.echo(f"{body['host']} ({body['role']}): {body['status']}")
        for name, row in body["daemons"].items():
            age = f"{row['age_s']:.0f}s" if row["age_s"] is not None else "-"
            click.echo(
                f"  {name:<20} {'ok' if row['ok'] else 'STALE':<6} {age:>8}  {row['reason']}"
            )
    raise SystemExit(ExitCode.OK if report.ok else ExitCode.FAILURE)


@heartbeat.command("peers")
@json_option()
@config_option
def peers(as_json: bool, config_path: str | None) -> None:
    """The watched peers' incident state, as the daemon last saved it."""
    from daemons.heartbeat.config import HeartbeatSection
    from daemons.heartbeat.policy import PeerState, describe_duration, iso
    from daemons.heartbeat.store import PeerStateFile

    config = load_config_or_exit(config_path)
    section = config.section(HeartbeatSection)
    names = [p.name for p in section.peers]
    loaded = PeerStateFile(section.state_file).load(names)
    if loaded.problem:
        click.echo(f"state file {section.state_file}: {loaded.problem}", err=True)
    states = {n: loaded.peers.get(n, PeerState(n)) for n in names}
    if as_json:
        click.echo(json.dumps({n: s.to_json() for n, s in states.items()}, indent=2))
        return
    if not names:
        click.echo("no [[heartbeat.peers]] configured")
        return
    now = time.time()
    for name, st in states.items():
        last = "never probed"
        if st.last_probe_at is not None:
            verdict = "ok" if st.last_ok else f"failed: {st.last_error}"
            last = f"last probe {iso(st.last_probe_at)} {verdict}"
        since = ""
        if st.level != "ok" and st.incident_at is not None:
            since = f" for {describe_duration(now - st.incident_at)}"
        role = f", reports {st.peer_role}" if st.peer_role else ""
        if st.peer_status:
            role += f" ({st.peer_status})"
        click.echo(
            f"{name:<12} {st.level}{since}; {st.consecutive_failures} failures in a row;"
            f" {last}{role}"
        )
    if loaded.pending:
        click.echo(f"{len(loaded.pending)} alert(s) not yet handed to the outbox")


@heartbeat.command("github-workflow")
@click.option("--peer", "peer_name", required=True, help="the [[heartbeat.peers]] name to watch")
@click.option(
    "--webhook-secret",
    default="SLACK_WEBHOOK_URL",
    show_default=True,
    help="repository secret holding the Slack incoming-webhook URL",
)
@click.option(
    "--url-secret",
    default=None,
    help="take the health URL from this repository secret (e.g. a public tunnel URL) instead"
    " of the peer's url from config",
)
@click.option(
    "--tailscale",
    is_flag=True,
    help="join the tailnet first (secrets TS_OAUTH_CLIENT_ID, TS_OAUTH_SECRET)",
)
@config_option
def github_workflow(
    peer_name: str,
    webhook_secret: str,
    url_secret: str | None,
    tailscale: bool,
    config_path: str | None,
) -> None:
    """Print a GitHub Actions workflow that watches peer NAME from outside."""
    from daemons.heartbeat.config import HeartbeatSection
    from daemons.heartbeat.workflow import WorkflowOptions, render_workflow

    config = load_config_or_exit(config_path)
    section = config.section(HeartbeatSection)
    peers_by_name = {p.name: p for p in section.peers}
    peer = peers_by_name.get(peer_name)
    if peer is None:
        known = ", ".join(sorted(peers_by_name)) or "none configured"
        die(ExitCode.NOT_FOUND, f"no peer {peer_name!r} in [[heartbeat.peers]] (known: {known})")
    options = WorkflowOptions(
        webhook_secret=webhook_secret, url_secret=url_secret, tailscale=tailscale
    )
    try:
        text = render_workflow(peer, options)
    except ValueError as exc:
        die(ExitCode.USAGE, str(exc))
    click.echo(text, nl=False)

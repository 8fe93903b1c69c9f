"""``fleet observability ...``: write the Prometheus/Alertmanager/Grafana pack.

Thin: the renderers (``shared.observability``) take the config and the registered daemons'
manifests; ``fleet.examples`` keeps the committed examples in sync.
"""

from __future__ import annotations

from pathlib import Path

import click

from fleet.units_cli import _check_option, _repo_option, _sync_examples, _write_reported
from shared.cli import config_option, load_config_or_exit

__all__ = ["observability"]


@click.group()
def observability() -> None:
    """Generate the Prometheus/Alertmanager/Grafana pack."""


def _hosts(value: str | None) -> list[tuple[str, str | None]]:
    if not value:
        return []
    hosts: list[tuple[str, str | None]] = []
    for item in value.split(","):
        name, _, role = item.strip().partition("=")
        if not name:
            raise click.BadParameter(f"empty host in {value!r}", param_hint="--hosts")
        if role and role not in ("primary", "standby"):
            raise click.BadParameter(
                f"{item!r}: role must be primary or standby", param_hint="--hosts"
            )
        hosts.append((name, role or None))
    return hosts


@observability.command("prometheus")
@click.option(
    "--hosts",
    default=None,
    help="comma-separated hosts to scrape, each NAME or NAME=ROLE (e.g. anvil=primary,"
    "forge=standby); default: this host on [fleet] bind",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="directory for prometheus.yml and rules/fleet.rules.yml",
)
@config_option
def prometheus_cmd(hosts: str | None, out: str, config_path: str | None) -> None:
    """Write prometheus.yml (one job per daemon, one target per host) and the alert rules."""
    from fleet.registry import manifests
    from shared.observability import HostTarget, render_prometheus_config, render_rules
    from shared.roles import Role

    targets = [HostTarget(name=n, address=n, role=Role(r) if r else None) for n, r in _hosts(hosts)]
    config = load_config_or_exit(config_path)
    if not targets:
        targets = [HostTarget(name=config.fleet.host, address=config.fleet.bind, role=None)]
    daemons = manifests()
    out_dir = Path(out)
    files = {
        out_dir / "prometheus.yml": render_prometheus_config(config, daemons, targets),
        out_dir / "rules" / "fleet.rules.yml": render_rules(config, daemons),
    }
    for path, text in files.items():
        _write_reported(path, text.encode())


@observability.command("alertmanager")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="directory for alertmanager.yml",
)
@config_option
def alertmanager_cmd(out: str, config_path: str | None) -> None:
    """Write alertmanager.yml: Slack receivers for [slack] ops_channel and [alerting]
    escalation_channel (criticals), grouping, inhibition of warnings under a critical. The
    Slack URL stays in [alerting] slack_api_url_file, which Alertmanager reads itself."""
    from fleet.alerting import DAEMON_ANNOUNCED
    from shared.observability import render_alertmanager_config

    config = load_config_or_exit(config_path)
    text = render_alertmanager_config(config, quiet_alerts=DAEMON_ANNOUNCED)
    _write_reported(Path(out) / "alertmanager.yml", text.encode())
    files = {config.alerting.slack_api_url_file, config.alerting.escalation_slack_api_url_file}
    for path in sorted(str(f) for f in files if f is not None):
        click.echo(f"note: Alertmanager reads the Slack webhook URL from {path} (mode 0640)")


@observability.command("grafana")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="directory for provisioning/ and dashboards/",
)
@config_option
def grafana_cmd(out: str, config_path: str | None) -> None:
    """Write the Grafana provisioning files and dashboards (generated from the manifests; the
    colours follow the config's daemon intervals and alert thresholds)."""
    from fleet.registry import manifests
    from shared.observability import render_grafana

    config = load_config_or_exit(config_path)
    out_dir = Path(out)
    for rel, text in sorted(render_grafana(config, manifests()).items()):
        _write_reported(out_dir / rel, text.encode())


@observability.command("example")
@_check_option
@_repo_option
def observability_example_cmd(check: bool, repo: str) -> None:
    """Regenerate config/prometheus/, config/alertmanager/ and config/grafana/ from
    config/fleet.example.toml for the example hosts anvil (primary) and forge (standby).
    Outside a checkout: writes them under --repo."""
    from fleet.examples import PACK_EXAMPLES

    _sync_examples(PACK_EXAMPLES, repo, check)

"""``fleet units ...`` and ``fleet observability ...`` (skeleton)."""

from __future__ import annotations

import click

__all__ = ["observability", "units"]


@click.group()
def units() -> None:
    """Generate and install systemd units / LaunchAgent plists."""


@click.group()
def observability() -> None:
    """Generate the Prometheus/Grafana pack."""

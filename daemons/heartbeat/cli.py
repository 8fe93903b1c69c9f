"""``fleet heartbeat ...``: the heartbeat commands."""

from __future__ import annotations

import click

__all__ = ["heartbeat"]


@click.group()
def heartbeat() -> None:
    """heartbeat commands."""

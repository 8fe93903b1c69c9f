"""``fleet blueprint ...``: the blueprint-watchdog commands."""

from __future__ import annotations

import click

__all__ = ["blueprint", "zakon"]


@click.group()
def blueprint() -> None:
    """blueprint-watchdog commands."""


@click.group()
def zakon() -> None:
    """ZAKON registry commands."""

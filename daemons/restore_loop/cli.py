"""``fleet restore ...``: the restore-loop commands."""

from __future__ import annotations

import click

__all__ = ["litestream", "restore"]


@click.group()
def restore() -> None:
    """restore-loop commands."""


@click.group()
def litestream() -> None:
    """Litestream config generation and lint."""

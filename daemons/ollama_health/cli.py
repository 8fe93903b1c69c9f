"""``fleet ollama ...``: the ollama-health commands."""

from __future__ import annotations

import click

__all__ = ["ollama"]


@click.group()
def ollama() -> None:
    """ollama-health commands."""

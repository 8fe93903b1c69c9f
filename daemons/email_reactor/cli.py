"""``fleet email ...``: the email-reactor commands."""

from __future__ import annotations

import click

__all__ = ["email"]


@click.group()
def email() -> None:
    """email-reactor commands."""

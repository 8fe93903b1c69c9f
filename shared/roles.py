"""Roles: ``Role`` (primary or standby) and the one reader of the role file.

``<root>/state/role`` (written by ``fleet role set`` and ``fleet restore promote``) wins over
``[fleet] role``. Every daemon, ``fleet status``, unit generation and the check-config rules read
the role through ``effective_role`` so they never disagree. Standard library only; reading the
file is the only I/O here.
"""

from __future__ import annotations

import enum
from pathlib import Path

__all__ = ["Role", "effective_role", "read_role_file"]


class Role(enum.StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"

    @property
    def other(self) -> Role:
        return Role.STANDBY if self is Role.PRIMARY else Role.PRIMARY


def read_role_file(path: Path) -> Role | None:
    """The role the file names, or None when it is absent, unreadable or names no role."""
    try:
        text = path.read_text(encoding="utf-8").strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return Role(text)
    except ValueError:
        return None


def effective_role(configured: str, role_file: Path) -> Role:
    """The role file's role when it names one, else the configured ``[fleet] role``."""
    return read_role_file(role_file) or Role(configured)

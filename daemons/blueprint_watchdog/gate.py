"""The fail-closed hook gates (skeleton): ``fleet zakon validate`` / ``fleet blueprint validate``.
Standard library only: these run as pre-write hooks and must start fast."""

from __future__ import annotations

import sys

__all__ = ["blueprint_validate_main", "zakon_validate_main"]


def zakon_validate_main(argv: list[str]) -> int:
    print("fleet zakon validate: not built yet", file=sys.stderr)
    return 3


def blueprint_validate_main(argv: list[str]) -> int:
    print("fleet blueprint validate: not built yet", file=sys.stderr)
    return 3

"""The ``fleet`` console script. Hook-path verbs that must start in well under 200 ms (they
run before every write an agent makes) are dispatched here to modules that import only the
standard library; everything else goes to the click CLI in shared/cli.py. This module must
never import anything beyond the standard library at top level.
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

__all__ = ["FAST_PATHS", "main"]

# (first two argv words) -> "module:function(argv_rest) -> int", stdlib-only modules.
FAST_PATHS: dict[tuple[str, str], str] = {
    ("zakon", "validate"): "daemons.blueprint_watchdog.gate:zakon_validate_main",
    ("blueprint", "validate"): "daemons.blueprint_watchdog.gate:blueprint_validate_main",
}


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    target = FAST_PATHS.get(tuple(args[:2])) if len(args) >= 2 else None  # type: ignore[arg-type]
    if target is not None:
        module_name, func = target.split(":")
        raise SystemExit(getattr(importlib.import_module(module_name), func)(args[2:]))
    from shared.cli import main as cli_main

    cli_main(args)

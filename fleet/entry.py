"""The ``fleet`` console script. Hook-path verbs that must start in well under 200 ms (they
run before every write an agent makes) are dispatched here, from the registry's stdlib-only fast
paths; ``fleet run`` in its plain forms goes to ``fleet.run`` and ``fleet units launchd-run`` to
``fleet.launchd_run`` (a daemon process never imports click); everything else, and ``--help`` of
those verbs too, goes to the click CLI in ``fleet.cli``. This module must never import anything
beyond the standard library (and ``fleet.registry``, which is stdlib only) at top level.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # typing itself costs the hook verbs' cold start
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["main"]

#: fleet's own hook verbs (the daemons' come from the registry); each falls back to click
#: for any form it does not answer itself
FLEET_FAST_PATHS = {("mc", "claim-status"): "fleet.mc_hook:claim_status_main"}


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    words = (args[0], args[1]) if len(args) >= 2 else None
    target = None if words is None else FLEET_FAST_PATHS.get(words)
    if words is not None and target is None:
        from fleet.registry import fast_paths  # its dataclasses cost fleet's own hooks ~10 ms

        target = fast_paths().get(words)
    options = args[: args.index("--")] if "--" in args else args
    if "-h" in options or "--help" in options:
        target = None  # help reads like every other command's: click's
    if target is not None:
        module_name, _, func = target.partition(":")
        raise SystemExit(getattr(importlib.import_module(module_name), func)(args[2:]))
    if args[:1] == ["run"]:
        from fleet.run import fast_main  # a daemon starts without click (~1 MiB, issue 15)

        fast_main(args[1:])  # returns only when it leaves the words to click
    if args[:2] == ["units", "launchd-run"]:
        from fleet.launchd_run import fast_main as launchd_main  # the daemon of a launchd job

        launchd_main(args[2:])  # returns only when it leaves the words to click
    from fleet.cli import main as cli_main

    cli_main(args)

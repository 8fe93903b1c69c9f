"""The exit codes of every ``fleet`` command and daemon, defined once.

0 ok; 1 failure (a failed ``--once`` cycle, a crashed loop, a lease held by another); 2 no such
task; 3 a store error after retries; 64 usage; 75 busy: another run holds the lock this command
needs (sysexits' EX_TEMPFAIL: try again later; ``fleet restore promote``); 78 invalid
configuration or a daemon refusing to run here (sysexits' EX_CONFIG, which the generated units
do not restart). Standard library only.
"""

from __future__ import annotations

import enum

__all__ = ["EX_CONFIG", "ExitCode"]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    NO_TASK = 2
    STORE = 3
    USAGE = 64
    BUSY = 75
    CONFIG = 78


EX_CONFIG = ExitCode.CONFIG

"""The exit codes of every ``fleet`` command and daemon, defined once: one meaning per code
(docs/cli.md has the table).

0 ok; 1 the condition checked is false or the work failed (a stale daemon, findings, a failed
``--once`` cycle, a crashed loop, a lease held by another); 2 not found: the thing named on the
command line does not exist (a task, an email, a peer, a tier, a DB name, a partner); 3 a store
the command needs is unavailable (a database or state file missing, locked past its retries or
unreadable); 64 usage; 75 busy: another run holds the lock this command needs (sysexits'
EX_TEMPFAIL: try again later; ``fleet restore promote``); 78 invalid configuration or a daemon
refusing to run here (sysexits' EX_CONFIG, which the generated units do not restart). The
pre-write gates (``fleet zakon validate``, ``fleet blueprint validate``) keep the hook protocol
instead: 2 blocks the write, 3 cannot judge. Standard library only.
"""

from __future__ import annotations

import enum

__all__ = ["EX_CONFIG", "ExitCode"]


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    NOT_FOUND = 2
    NO_TASK = 2  # the claim protocol's name for NOT_FOUND (an alias)
    STORE = 3
    USAGE = 64
    BUSY = 75
    CONFIG = 78


EX_CONFIG = ExitCode.CONFIG

"""What each signal means to a fleet daemon process, defined once.

SIGTERM/SIGINT: graceful stop, exit 0 (the service manager asked). SIGHUP: reopen the log file
(``[fleet] log_file``: a rotation renamed it), then reload the config in-process (the runtime
restarts its daemons on the new config without the process going away; systemd's
``ExecReload=kill -HUP`` and launchd's ``launchctl kill HUP`` both reach it). SIGUSR1
and SIGUSR2: log a state dump, change nothing. Every other catchable signal whose default is to
end the process (SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, and SIGIO/SIGPWR/SIGSTKFLT on Linux,
SIGEMT on macOS): graceful stop with exit 128+signal, which is a failure to ``Restart=on-failure``
and to launchd's ``KeepAlive{SuccessfulExit=false}``, so the process is brought back. SIGXFSZ
stays ignored (Python ignores it at start), so a write past a file-size limit fails with EFBIG,
which the writer reports, instead of killing the process. Synchronous fault signals (SIGSEGV,
SIGBUS, SIGABRT, ...) and SIGQUIT keep their default. A second stop signal, later than
``SECOND_SIGNAL_AFTER_S``, exits at once.
Handlers only set events or log (and SIGHUP's reopens the log file, so its own line is the
first in the new file); they never do I/O beyond the sd_notify datagram. They run in the event
loop (``add_signal_handler``), not in signal context.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from shared.logging import reopen_log_file
from shared.sdnotify import Notifier

__all__ = [
    "DUMP_SIGNALS",
    "OTHER_STOP_SIGNALS",
    "RELOAD_SIGNALS",
    "SECOND_SIGNAL_AFTER_S",
    "STOP_SIGNALS",
    "ProcessSignals",
]

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGHUP,)
DUMP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGUSR1, signal.SIGUSR2)
_OTHER_NAMES = ["SIGALRM", "SIGVTALRM", "SIGPROF", "SIGXCPU", "SIGPWR", "SIGSTKFLT", "SIGEMT"]
if sys.platform.startswith("linux"):
    _OTHER_NAMES.append("SIGIO")  # terminates on Linux; macOS discards it by default
OTHER_STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in _OTHER_NAMES if hasattr(signal, name)
)

# A supervisor that signals the whole process group (GNU timeout, some init scripts) delivers
# the same SIGTERM twice within a millisecond; only a later signal means "stop now".
SECOND_SIGNAL_AFTER_S = 0.5


class ProcessSignals:
    """The running process's signal handlers. ``stop`` is set by a stop signal (``exit_code``
    says which: 0, or 128+signal for the unexpected ones), ``reload`` by SIGHUP; ``on_dump``
    is called with the signal's name for SIGUSR1/SIGUSR2."""

    def __init__(self, notifier: Notifier, log: Any, on_dump: Callable[[str], None]) -> None:
        self.notifier = notifier
        self.log = log
        self.on_dump = on_dump
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.exit_code = 0
        self._first_stop_at: float | None = None
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (*STOP_SIGNALS, *OTHER_STOP_SIGNALS):
            loop.add_signal_handler(sig, self._on_stop, sig)
            self._installed.append(sig)
        for sig in RELOAD_SIGNALS:
            loop.add_signal_handler(sig, self._on_reload, sig)
            self._installed.append(sig)
        for sig in DUMP_SIGNALS:
            loop.add_signal_handler(sig, self._on_dump, sig)
            self._installed.append(sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def _on_stop(self, sig: signal.Signals) -> None:
        if self.stop.is_set():
            first = self._first_stop_at
            if first is not None and time.monotonic() - first < SECOND_SIGNAL_AFTER_S:
                return  # the same stop request, delivered twice
            self.log.warning("second signal; exiting now", signal=sig.name)
            os._exit(128 + sig)
        self._first_stop_at = time.monotonic()
        self.exit_code = 0 if sig in STOP_SIGNALS else 128 + sig
        self.log.info("stopping", signal=sig.name, exit_code=self.exit_code)
        self.notifier.stopping()
        self.stop.set()

    def _on_reload(self, sig: signal.Signals) -> None:
        reopen_log_file()  # newsyslog's signal after a rename; also while stopping
        if self.stop.is_set():
            return
        self.log.info("reload requested", signal=sig.name)
        self.reload.set()

    def _on_dump(self, sig: signal.Signals) -> None:
        self.on_dump(sig.name)

"""A log file the process owns (``[fleet] log_file``): appended to, and reopened when it has
been rotated away, so newsyslog and logrotate rules that rename the file work.

Opened ``O_APPEND`` (one ``write`` per line, so processes sharing a file never interleave
inside a line), created 0600 in a 0700 directory; a symlink, directory or FIFO at the path, or
a file another account owns, is refused (a newsyslog rule names the owner: the fleet's user).
``reopen()`` opens the path again (the SIGHUP hook); besides, a write checks at most once
every ``CHECK_INTERVAL_S`` whether the path still names the open file (same device and inode)
and reopens when it does not, so a rotation without a signal is followed within about a second
of the next line. A reopen that fails keeps the open file and says so on stderr; a write that
fails goes to stderr instead. Neither ever raises into the code that logged.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CHECK_INTERVAL_S", "DAEMON_TOKEN", "LogFile", "LogFileError", "log_file_path"]

#: how often (seconds, at most) a write looks whether the file was rotated away
CHECK_INTERVAL_S = 1.0
#: in ``[fleet] log_file``: replaced by the daemon's name (``fleet`` under ``run --all``)
DAEMON_TOKEN = "{daemon}"


class LogFileError(Exception):
    """The log file cannot be opened: ``path`` and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def log_file_path(template: Path, daemon: str) -> Path:
    """``[fleet] log_file`` for ``daemon``: ``{daemon}`` replaced by its name."""
    return Path(str(template).replace(DAEMON_TOKEN, daemon))


def _open(path: Path) -> int:
    """An O_APPEND descriptor on the regular file at ``path`` (made 0600, its directory 0700,
    when missing). LogFileError naming the path otherwise."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        # O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of blocking the start.
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LogFileError(path, "is a symlink; name the file itself") from None
        raise LogFileError(path, f"cannot open it: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.geteuid():
        # planted in a shared directory: its owner would read (and could forge) our lines
        problem = f"belongs to uid {st.st_uid}, not this account (uid {os.geteuid()})"
    if problem is not None:
        os.close(fd)
        raise LogFileError(path, problem)
    os.set_blocking(fd, True)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class LogFile:
    """The open log file; ``write`` takes whole lines. Thread-safe (threads log too)."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.path = path
        self._clock = clock
        self._interval = check_interval_s
        self._lock = threading.Lock()
        self._fd = _open(path)
        self._checked_at = clock()
        # said on stderr already, until it works again: a failing write, a failing reopen
        self._said = {"write": False, "reopen": False}

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            if self._clock() - self._checked_at >= self._interval:
                self._follow_rotation()
            try:
                _write_all(self._fd, data)
                self._said["write"] = False
            except OSError as exc:  # disk full, EFBIG, closed: keep the line, on stderr
                self._stderr("write", f"cannot write {self.path}: {exc.strerror or exc}", text)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: every write goes straight to the file."""

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def reopen(self) -> bool:
        """Open the path again (after a rotation); False, keeping the open file, when it
        cannot be opened."""
        with self._lock:
            return self._reopen()

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- under the lock ----------------------------------------------------------------------
    def _follow_rotation(self) -> None:
        self._checked_at = self._clock()
        try:
            on_disk = os.stat(self.path)
            current = os.fstat(self._fd)
        except OSError:
            self._reopen()  # gone (or our fd is): make a new one
            return
        if (on_disk.st_dev, on_disk.st_ino) != (current.st_dev, current.st_ino):
            self._reopen()

    def _reopen(self) -> bool:
        self._checked_at = self._clock()
        try:
            fd = _open(self.path)
        except LogFileError as exc:
            self._stderr("reopen", f"cannot reopen the log file, still writing the old one: {exc}")
            return False
        self._said["reopen"] = False
        old, self._fd = self._fd, fd
        if old >= 0:
            os.close(old)
        return True

    def _stderr(self, kind: str, problem: str, line: str = "") -> None:
        """Report on stderr (launchd's StandardErrorPath, the journal): the problem once per
        spell of trouble of its ``kind``, and the line that could not be written."""
        stream = sys.__stderr__
        if stream is None:
            return
        try:
            if not self._said[kind]:
                stream.write(f"fleet: {problem}\n")
                self._said[kind] = True
            if line:
                stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass

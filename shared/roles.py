"""Roles: ``Role`` (primary or standby), the one reader of the role file and its one writer.

``<root>/state/role`` (written by ``fleet role set`` and ``fleet restore promote``, both through
``write_role_file``) wins over ``[fleet] role``. It holds exactly ``primary`` or ``standby``,
surrounding whitespace trimmed; anything else (a typo, other case, a BOM, a NUL, an empty file,
two lines, a FIFO, a device, a directory) is a ``RoleFileError``, never a fallback: a standby
whose role file is garbled must not act as a primary. Every daemon, ``fleet status``, /health,
unit generation and the check-config rules read the role through ``effective_role`` so they
never disagree. Reading never blocks (non-blocking open, regular files only) and never reads
more than ``MAX_ROLE_FILE_BYTES``.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
from pathlib import Path

__all__ = [
    "MAX_ROLE_FILE_BYTES",
    "Role",
    "RoleFileError",
    "effective_role",
    "read_role_file",
    "write_role_file",
]

#: a role file is a word and a newline; anything longer was not written by the fleet
MAX_ROLE_FILE_BYTES = 64
#: how much of a bad role file an error message quotes
_QUOTE_BYTES = 40


class Role(enum.StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"

    @property
    def other(self) -> Role:
        return Role.STANDBY if self is Role.PRIMARY else Role.PRIMARY


class RoleFileError(ValueError):
    """The role file exists but does not name a role. ``str()`` names the file, quotes what
    it holds (cut short, every control character escaped) and says how to fix it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        #: what is wrong and how to fix it, without the path (for "<path>: <detail>" lists)
        self.detail = (
            f"{problem}; it must hold exactly 'primary' or 'standby' "
            "(write it with `fleet role set primary|standby`)"
        )
        super().__init__(f"role file {path} {self.detail}")


def _quote(data: bytes, size: int) -> str:
    """What the file holds, safe for a log line or a terminal: decoded leniently, cut to
    ``_QUOTE_BYTES``, and ``ascii()``-quoted so no control or invisible character survives."""
    shown = ascii(data[:_QUOTE_BYTES].decode("utf-8", errors="backslashreplace"))
    if size > _QUOTE_BYTES:
        shown += f"... ({size} bytes)"
    return shown


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_role_file(path: Path) -> Role | None:
    """The role the file names; None when there is no file. RoleFileError when something is
    at the path but it does not hold exactly a role name."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        # Nothing there (a parent that is not a directory holds no role file either: the
        # start then fails on that directory, an error the service manager retries).
        if os.path.lexists(path):
            raise RoleFileError(path, "is a symlink to nothing") from None
        return None
    except OSError as exc:
        raise RoleFileError(path, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise RoleFileError(path, f"is {_kind(st.st_mode)}, not a file")
    try:
        # O_NONBLOCK: a FIFO swapped in since the stat must not hang us on open or read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise RoleFileError(path, f"cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RoleFileError(path, f"is {_kind(st.st_mode)}, not a file")
        data = os.read(fd, MAX_ROLE_FILE_BYTES + 1)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            raise RoleFileError(path, "cannot be read without blocking") from None
        raise RoleFileError(path, f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    size = max(st.st_size, len(data))
    if size > MAX_ROLE_FILE_BYTES:
        raise RoleFileError(path, f"is too large to be a role file: {_quote(data, size)}")
    word = data.strip(b" \t\r\n")
    for role in Role:
        if word == role.value.encode("ascii"):
            return role
    if not data:
        raise RoleFileError(path, "is empty")
    raise RoleFileError(path, f"holds {_quote(data, size)}")


def effective_role(configured: str, role_file: Path) -> Role:
    """The role file's role when there is one, else the configured ``[fleet] role``. Raises
    RoleFileError when the file is there but garbled: it never falls back."""
    return read_role_file(role_file) or Role(configured)


def write_role_file(path: Path, role: Role) -> None:
    """The one writer of the role file: ``<role>\\n``, atomically (temp + fsync + rename), so
    no reader ever sees a half-written role. Replaces a garbled file; a directory at the path
    is an OSError (IsADirectoryError) for the caller to report."""
    from shared.files import atomic_write_text  # not at import: `fleet status` reads roles

    atomic_write_text(path, f"{Role(role).value}\n")

"""Files in directories other local users can write (the hosts' /tmp): which ones ollama-health
may read, where it may keep what it writes, and the symlink it publishes at the legacy status
path. Thin adapters over ``os``; blocking (call them in a worker thread).

The rules: a file that steers routing is read only when it is a regular file, not a symlink,
owned by this user (or root), not writable by group or others, and small; opening never blocks
(``O_NONBLOCK``: a FIFO is refused, not waited on). What the daemon writes lives in a directory
only its user can change. At the legacy path it publishes a symlink it owns, made atomically
(symlink to a temporary name, rename over); whatever another user put there is reported and
left alone. This module must never follow a link it did not make, never replace or delete a
file another user owns, and never wait on a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LinkState",
    "UntrustedFile",
    "inspect_link",
    "publish_link",
    "read_trusted",
    "unsafe_dir",
    "unsafe_setup",
]


class UntrustedFile(Exception):
    """The file exists but must not be used; ``str()`` says why (and what to do)."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "file"


def read_trusted(path: Path, max_bytes: int, *, root_may_own: bool = True) -> bytes | None:
    """The content of ``path``, or None when it does not exist. UntrustedFile when it is a
    symlink, not a regular file (FIFO, device, directory), owned by another user (root allowed
    when ``root_may_own``), writable by group or others, or larger than ``max_bytes``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UntrustedFile("it is a symbolic link (write the file itself)") from None
        raise UntrustedFile(f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UntrustedFile(f"not a regular file (a {_kind(st.st_mode)})")
        uid = os.geteuid()
        if st.st_uid != uid and not (root_may_own and st.st_uid == 0):
            owners = f"uid {uid}" + (" or root" if root_may_own else "")
            raise UntrustedFile(f"owned by uid {st.st_uid}, not this daemon's {owners}")
        if st.st_mode & 0o022:
            raise UntrustedFile(
                f"writable by group or others (mode {st.st_mode & 0o777:o}; chmod go-w)"
            )
        if st.st_size > max_bytes:
            raise UntrustedFile(f"larger than {max_bytes} bytes ({st.st_size})")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:  # grew after the fstat
            raise UntrustedFile(f"larger than {max_bytes} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise UntrustedFile(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def unsafe_dir(directory: Path) -> str | None:
    """Why files written in ``directory`` could be planted, swapped or read back forged by
    another user, or None when only this user (and root) can change it: the directory (or,
    when it does not exist yet, its nearest existing ancestor) must be owned by this user or
    root and not writable by group or others; every ancestor must be owned by this user or
    root and, when others may write it, sticky (like /tmp)."""
    uid = os.geteuid()
    current = Path(os.path.realpath(directory))
    first = True
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            if current.parent == current:
                return None
            current = current.parent
            continue
        except OSError as exc:
            return f"cannot check {current}: {exc.strerror or exc}"
        mode = st.st_mode
        if st.st_uid not in (uid, 0):
            return f"{current} is owned by uid {st.st_uid} (not this user, uid {uid}, or root)"
        shared = mode & 0o022
        if shared and (first or not mode & stat.S_ISVTX):
            return f"{current} is writable by other users (mode {stat.S_IMODE(mode):o})"
        first = False
        if current.parent == current:
            return None
        current = current.parent


def unsafe_setup(status_file: Path, state_dir: Path, status_link: Path | None) -> str | None:
    """Why ollama-health must not start with these paths (naming the config key and the
    fix), or None: the status file and the memory in the state dir must be in directories
    only this user can change, and the link must not be the status file itself."""
    problem = unsafe_dir(status_file.parent)
    if problem is not None:
        return (
            f"ollama_health.status_file: {problem}; keep the status file under the state dir "
            f'and publish it with ollama_health.status_link = "{status_file}" (layout alai does)'
        )
    problem = unsafe_dir(state_dir)
    if problem is not None:
        return f"fleet.root (the state dir {state_dir}): {problem}"
    if status_link is not None and os.path.abspath(status_link) == str(status_file):
        return f"ollama_health.status_link names the status file itself ({status_link})"
    return None


@dataclass(frozen=True)
class LinkState:
    """The legacy path and what is there: ``published`` when it is this user's symlink to
    ``target``; otherwise ``error`` says what is in the way."""

    path: Path
    target: Path
    published: bool
    error: str | None = None
    replaceable: bool = False  # missing, or ours (an old regular file, a stale link)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "target": str(self.target),
            "published": self.published,
            "error": self.error,
        }


def inspect_link(link: Path, target: Path) -> LinkState:
    """What is at ``link`` now, without following or changing anything."""
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        return LinkState(link, target, False, "not there yet", replaceable=True)
    except OSError as exc:
        return LinkState(link, target, False, f"cannot check: {exc.strerror or exc}")
    uid = os.geteuid()
    kind = _kind(st.st_mode)
    if st.st_uid != uid:
        return LinkState(
            link,
            target,
            False,
            f"a {kind} owned by uid {st.st_uid} is in the way (not this daemon's uid {uid}); "
            "it is left alone: remove it",
        )
    if stat.S_ISLNK(st.st_mode):
        try:
            points_to = os.readlink(link)
        except OSError as exc:
            return LinkState(link, target, False, f"cannot read the link: {exc.strerror}")
        if points_to == str(target):
            return LinkState(link, target, True)
        return LinkState(link, target, False, f"our link points to {points_to}", True)
    if stat.S_ISDIR(st.st_mode):
        return LinkState(link, target, False, "a directory is in the way; remove it")
    return LinkState(link, target, False, f"our own {kind} (not a link yet)", True)


def publish_link(link: Path, target: Path) -> LinkState:
    """Make ``link`` this user's symlink to ``target`` when it is missing or ours; anything
    else is reported, never followed or replaced. Atomic: a symlink under a random name,
    renamed over ``link``, so a reader sees the old entry or the new link."""
    state = inspect_link(link, target)
    if state.published or not state.replaceable:
        return state
    temp = link.with_name(f".{link.name}.{secrets.token_hex(8)}.link")
    try:
        os.symlink(target, temp)
    except OSError as exc:
        return LinkState(link, target, False, f"cannot create a link in {link.parent}: {exc}")
    try:
        # Another user may have taken the name since the check: in a sticky directory the
        # rename then fails (EPERM); run as root it replaces theirs with ours, which is fine.
        os.rename(temp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        after = inspect_link(link, target)
        if not after.replaceable and not after.published:
            return after
        return LinkState(link, target, False, f"cannot publish: {exc.strerror or exc}")
    return LinkState(link, target, True)

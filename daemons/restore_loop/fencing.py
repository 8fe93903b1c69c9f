"""Whether restore-loop may touch a copy now: the promotion fence `fleet restore promote` raises
while it works, and the role file, which once it says primary fences every copy for good.
Followers and snapshot restores ask before each start and rename; the fence watcher asks twice a
second. Both files are polled on the event loop and read again only when they change.

An adapter over two small files; it must never write either of them.
"""

from __future__ import annotations

from pathlib import Path

from daemons.restore_loop.state import Fence, read_fence_file
from daemons.restore_loop.watched_file import WatchedFile
from shared.clock import Clock
from shared.roles import Role, RoleFileError, read_role_file

__all__ = ["Fencing"]


def _role_or_none(path: Path) -> Role | None:
    """The role file's role; None when absent or garbled. A garbled file is not a promotion
    (the daemons refuse to start over it, and /health and ``fleet status`` show it)."""
    try:
        return read_role_file(path)
    except RoleFileError:
        return None


class Fencing:
    def __init__(self, role_file: Path, fence_file: Path, clock: Clock) -> None:
        self.clock = clock
        #: this host was promoted: no copy is ever touched again
        self.promoted = False
        #: the fence the status file acknowledges (its followers are stopped)
        self.ack: str | None = None
        self._primary_reads = 0
        self._was_active = False
        self._role = WatchedFile(role_file, _role_or_none)
        self._fence = WatchedFile(fence_file, read_fence_file)

    def role_confirms_primary(self) -> bool:
        """Promoted only when the role file positively reads primary twice in a row. Never
        falls back to ``[fleet] role``: one bad read must not promote."""
        primary = self._role.read() is Role.PRIMARY
        self._primary_reads = self._primary_reads + 1 if primary else 0
        return self._primary_reads >= 2

    def is_fenced(self, name: str) -> bool:
        # A role file saying primary (promote just finished and cleared its fence) fences
        # everything at once, before the daemon confirmed the promotion.
        if self.promoted or self._role.read() is Role.PRIMARY:
            return True
        fence = self._fence.read()
        return fence is not None and fence.covers(name) and fence.active(self.clock())

    def active(self) -> Fence | None:
        """The fence in force (its promoting process lives), if any."""
        fence = self._fence.read()
        return fence if fence is not None and fence.active(self.clock()) else None

    def stops(self, active: Fence | None, name: str) -> bool:
        """Must ``name``'s follower stop now?"""
        return self.promoted or (active is not None and active.covers(name))

    def lifted(self, active: Fence | None) -> bool:
        """Record this poll's fence; True when a fence in force at the last poll is gone."""
        lifted = active is None and self._was_active
        self._was_active = active is not None
        return lifted

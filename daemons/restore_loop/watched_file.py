"""A small file the event loop polls (role file, fence, a follower's ``-txid`` sidecar), read
again only when it changed: each poll costs one ``stat``, not an open and a read.

"Changed" is the (mtime, size, inode) triple: the fleet's writers replace these files
atomically (a new inode) or rewrite them whole, so an unchanged triple means unchanged contents.
Only good reads are kept: a missing, torn or garbled file is read again at the next poll, so a
half-written file is never remembered. This module must never write or delete a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["WatchedFile"]

T = TypeVar("T")


class WatchedFile(Generic[T]):
    """``read()`` returns ``parse(path)``, or the value of the previous read while the file is
    unchanged. ``parse`` returns None for a missing or unusable file (it is not remembered)."""

    def __init__(self, path: Path, parse: Callable[[Path], T | None]) -> None:
        self.path = path
        self._parse = parse
        self._key: tuple[int, int, int] | None = None
        self._value: T | None = None

    def read(self) -> T | None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._key, self._value = None, None
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._key:
            return self._value
        value = self._parse(self.path)
        self._key, self._value = (key, value) if value is not None else (None, None)
        return value

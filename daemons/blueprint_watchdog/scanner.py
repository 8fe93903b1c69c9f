"""The file-tree walk: under each scan root, find the files a document type's globs match and
read them as hostile input.

A symlink loop, an unreadable or non-regular file (FIFO, device), a dangling link, a file over
``max_file_bytes`` and a file that is not UTF-8 are findings on that file (or, for
directories, scan problems), never exceptions. Directory symlinks are followed once each, with
loop detection on (device, inode); the walk stops after ``max_entries`` entries and says so.
Standard library only. It must never write, follow a FIFO into a blocking read, or decide
compliance (schema.py and findings.py do).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemons.blueprint_watchdog.schema import DocType, match_doc_type

__all__ = ["ScanProblem", "ScannedFile", "TreeScan", "read_document", "scan_tree"]


@dataclass(frozen=True)
class ScannedFile:
    """A file that matched a document type. ``text`` is None when it could not be used;
    then ``problem`` is a REASONS code (unreadable, not_utf8, symlink_loop, too_large)."""

    path: Path
    doc_type: str
    text: str | None
    sha256: str | None
    size: int
    problem: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ScanProblem:
    """Something the walk could not look into (a directory loop, an unreadable directory,
    a missing root)."""

    path: Path
    problem: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "problem": self.problem, "detail": self.detail}


@dataclass
class TreeScan:
    files: list[ScannedFile] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    entries: int = 0  # directory entries looked at
    truncated: bool = False


def read_document(path: Path, doc_type: str, max_bytes: int) -> ScannedFile:
    """Read one matched file: regular files only, opened non-blocking (a FIFO named
    BUILD-BLUEPRINT.md must not hang the scan), at most ``max_bytes``, strict UTF-8."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return ScannedFile(path, doc_type, None, None, 0, "symlink_loop", "symlink loop")
        if exc.errno == errno.ENOENT:
            return ScannedFile(
                path, doc_type, None, None, 0, "unreadable", "dangling symlink or vanished file"
            )
        return ScannedFile(path, doc_type, None, None, 0, "unreadable", _strerror(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ScannedFile(path, doc_type, None, None, 0, "unreadable", "not a regular file")
        if st.st_size > max_bytes:
            return ScannedFile(
                path,
                doc_type,
                None,
                None,
                st.st_size,
                "too_large",
                f"{st.st_size} bytes (max {max_bytes})",
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                return ScannedFile(
                    path, doc_type, None, None, total, "too_large", f"over {max_bytes} bytes"
                )
            chunks.append(chunk)
    except OSError as exc:
        return ScannedFile(path, doc_type, None, None, 0, "unreadable", _strerror(exc))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ScannedFile(
            path,
            doc_type,
            None,
            digest,
            len(data),
            "not_utf8",
            f"invalid UTF-8 at byte {exc.start}",
        )
    return ScannedFile(path, doc_type, text.removeprefix("\ufeff"), digest, len(data))


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass(frozen=True)
class _Dir:
    path: Path
    rel: str  # root-relative POSIX prefix ("" for the root, else "a/b/")
    ancestors: frozenset[tuple[int, int]]


def scan_tree(
    roots: Sequence[Path],
    doc_types: Iterable[DocType],
    *,
    exclude_dirs: Iterable[str] = (),
    max_file_bytes: int = 1_000_000,
    max_entries: int = 1_000_000,
    follow_symlinks: bool = True,
) -> TreeScan:
    """Walk ``roots`` and read every file a document type matches (first type wins)."""
    types = tuple(doc_types)
    excluded = frozenset(exclude_dirs)
    result = TreeScan()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        try:
            st = os.stat(root)
        except OSError as exc:
            result.problems.append(ScanProblem(root, "root_unavailable", _strerror(exc)))
            continue
        if not stat.S_ISDIR(st.st_mode):
            result.problems.append(ScanProblem(root, "root_unavailable", "not a directory"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # overlapping roots: already walked
        seen_dirs.add(key)
        stack = [_Dir(root, "", frozenset({key}))]
        while stack:
            if result.truncated:
                break
            current = stack.pop()
            _walk_dir(
                current,
                types,
                excluded,
                result,
                seen_dirs,
                seen_files,
                stack,
                max_file_bytes=max_file_bytes,
                max_entries=max_entries,
                follow_symlinks=follow_symlinks,
            )
    result.files.sort(key=lambda f: str(f.path))
    return result


def _walk_dir(
    current: _Dir,
    types: tuple[DocType, ...],
    excluded: frozenset[str],
    result: TreeScan,
    seen_dirs: set[tuple[int, int]],
    seen_files: set[tuple[int, int]],
    stack: list[_Dir],
    *,
    max_file_bytes: int,
    max_entries: int,
    follow_symlinks: bool,
) -> None:
    try:
        it = os.scandir(current.path)
    except OSError as exc:
        problem = "symlink_loop" if exc.errno == errno.ELOOP else "unreadable"
        result.problems.append(ScanProblem(current.path, problem, _strerror(exc)))
        return
    subdirs: list[_Dir] = []
    with it:
        for entry in it:
            result.entries += 1
            if result.entries > max_entries:
                result.truncated = True
                result.problems.append(
                    ScanProblem(
                        current.path,
                        "truncated",
                        f"walk stopped after {max_entries} entries (max_walk_entries)",
                    )
                )
                return
            path = Path(entry.path)
            rel = current.rel + entry.name
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_link, is_dir = False, False
            if is_dir and not is_link:
                if entry.name in excluded:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    result.problems.append(ScanProblem(path, "unreadable", _strerror(exc)))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    continue
                seen_dirs.add(key)
                subdirs.append(_Dir(path, rel + "/", current.ancestors | {key}))
                continue
            if is_link:
                try:
                    target = os.stat(path)
                except OSError as exc:
                    doc_type = match_doc_type(rel, types)
                    if doc_type is not None:
                        result.files.append(read_document(path, doc_type.name, max_file_bytes))
                    elif exc.errno == errno.ELOOP:
                        result.problems.append(
                            ScanProblem(path, "symlink_loop", "symlink resolves to itself")
                        )
                    continue
                if stat.S_ISDIR(target.st_mode):
                    if not follow_symlinks or entry.name in excluded:
                        continue
                    key = (target.st_dev, target.st_ino)
                    if key in current.ancestors:
                        result.problems.append(
                            ScanProblem(
                                path,
                                "symlink_loop",
                                f"links back to an enclosing directory ({os.readlink(path)})",
                            )
                        )
                        continue
                    if key in seen_dirs:
                        continue  # reached twice through different links: walk it once
                    seen_dirs.add(key)
                    subdirs.append(_Dir(path, rel + "/", current.ancestors | {key}))
                    continue
            doc_type = match_doc_type(rel, types)
            if doc_type is None:
                continue
            try:
                fst = os.stat(path)
                file_key: tuple[int, int] | None = (fst.st_dev, fst.st_ino)
            except OSError:
                file_key = None
            if file_key is not None and stat.S_ISREG(fst.st_mode):
                if file_key in seen_files:
                    continue
                seen_files.add(file_key)
            result.files.append(read_document(path, doc_type.name, max_file_bytes))
    # Depth-first in name order (the stack pops the last pushed first).
    stack.extend(sorted(subdirs, key=lambda d: d.path.name, reverse=True))

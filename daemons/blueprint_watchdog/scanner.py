"""The file-tree walk: under each scan root, find the files a document type's globs match and
read them as hostile input.

A symlink loop, an unreadable or non-regular file (FIFO, device), a dangling link, a file over
``max_file_bytes`` and a file that is not UTF-8 are findings on that file (or, for
directories, scan problems), never exceptions; so is every I/O error while listing a directory
(a directory that cannot be read, one that vanishes or fails mid-listing, ``/proc``). Directory
symlinks are followed once each, with loop detection on (device, inode); a symlink (to a file
or a directory) whose target lies outside every scan root is not followed unless
``follow_outside_roots`` (an ``outside_root`` finding or problem instead), and the file read is
the resolved target opened with ``O_NOFOLLOW``, so a link swapped mid-scan is not followed
either. The walk stops after ``max_entries`` entries and says so. Standard library only. It
must never write, follow a FIFO into a blocking read, or decide compliance (schema.py and
findings.py do).
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


def read_document(
    path: Path, doc_type: str, max_bytes: int, *, resolved: str | None = None
) -> ScannedFile:
    """Read one matched file: regular files only, opened non-blocking (a FIFO named
    BUILD-BLUEPRINT.md must not hang the scan), at most ``max_bytes``, strict UTF-8. With
    ``resolved`` (the walk's check of where ``path`` leads), that path is opened without
    following a symlink in its last component."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        if resolved is None:
            fd = os.open(path, flags)
        else:
            fd = os.open(resolved, flags | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP and resolved is not None:
            return ScannedFile(
                path, doc_type, None, None, 0, "unreadable", "became a symlink during the scan"
            )
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


OUTSIDE_DETAIL = (
    "symlink to a target outside the scan roots: not followed (follow_symlinks_outside_roots)"
)


@dataclass(frozen=True)
class _Dir:
    path: Path
    rel: str  # root-relative POSIX prefix ("" for the root, else "a/b/")
    ancestors: frozenset[tuple[int, int]]


@dataclass
class _Walk:
    """One walk's options and memory."""

    types: tuple[DocType, ...]
    excluded: frozenset[str]
    result: TreeScan
    real_roots: tuple[str, ...]
    max_file_bytes: int
    max_entries: int
    follow_symlinks: bool
    follow_outside_roots: bool
    seen_dirs: set[tuple[int, int]] = field(default_factory=set)
    seen_files: set[tuple[int, int]] = field(default_factory=set)

    def inside(self, real: str) -> bool:
        return self.follow_outside_roots or any(
            os.path.commonpath([root, real]) == root for root in self.real_roots
        )

    def problem(self, path: Path, problem: str, detail: str) -> None:
        self.result.problems.append(ScanProblem(path, problem, detail))


def scan_tree(
    roots: Sequence[Path],
    doc_types: Iterable[DocType],
    *,
    exclude_dirs: Iterable[str] = (),
    max_file_bytes: int = 1_000_000,
    max_entries: int = 1_000_000,
    follow_symlinks: bool = True,
    follow_outside_roots: bool = False,
) -> TreeScan:
    """Walk ``roots`` and read every file a document type matches (first type wins)."""
    walk = _Walk(
        types=tuple(doc_types),
        excluded=frozenset(exclude_dirs),
        result=TreeScan(),
        real_roots=tuple(os.path.realpath(root) for root in roots),
        max_file_bytes=max_file_bytes,
        max_entries=max_entries,
        follow_symlinks=follow_symlinks,
        follow_outside_roots=follow_outside_roots,
    )
    result = walk.result
    for root in roots:
        try:
            st = os.stat(root)
        except OSError as exc:
            walk.problem(root, "root_unavailable", _strerror(exc))
            continue
        if not stat.S_ISDIR(st.st_mode):
            walk.problem(root, "root_unavailable", "not a directory")
            continue
        key = (st.st_dev, st.st_ino)
        if key in walk.seen_dirs:
            continue  # overlapping roots: already walked
        walk.seen_dirs.add(key)
        stack = [_Dir(root, "", frozenset({key}))]
        while stack and not result.truncated:
            current = stack.pop()
            subdirs = _walk_dir(current, walk)
            # Depth-first in name order (the stack pops the last pushed first).
            stack.extend(sorted(subdirs, key=lambda d: d.path.name, reverse=True))
    result.files.sort(key=lambda f: str(f.path))
    return result


def _walk_dir(current: _Dir, walk: _Walk) -> list[_Dir]:
    """List one directory; every error while listing it is a problem, never an exception."""
    result = walk.result
    subdirs: list[_Dir] = []
    try:
        it = os.scandir(current.path)
    except OSError as exc:
        problem = "symlink_loop" if exc.errno == errno.ELOOP else "unreadable"
        walk.problem(current.path, problem, _strerror(exc))
        return subdirs
    with it:
        while True:
            try:
                entry = next(it)
            except StopIteration:
                break
            except OSError as exc:
                walk.problem(current.path, "unreadable", f"listing failed: {_strerror(exc)}")
                break
            result.entries += 1
            if result.entries > walk.max_entries:
                result.truncated = True
                walk.problem(
                    current.path,
                    "truncated",
                    f"walk stopped after {walk.max_entries} entries (max_walk_entries)",
                )
                break
            try:
                _visit(entry, current, walk, subdirs)
            except OSError as exc:  # anything the checks below did not foresee
                walk.problem(Path(entry.path), "unreadable", _strerror(exc))
    return subdirs


def _visit(entry: os.DirEntry[str], current: _Dir, walk: _Walk, subdirs: list[_Dir]) -> None:
    path = Path(entry.path)
    rel = current.rel + entry.name
    try:
        is_link = entry.is_symlink()
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        is_link, is_dir = False, False
    if is_dir and not is_link:
        if entry.name in walk.excluded:
            return
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            walk.problem(path, "unreadable", _strerror(exc))
            return
        key = (st.st_dev, st.st_ino)
        if key not in walk.seen_dirs:
            walk.seen_dirs.add(key)
            subdirs.append(_Dir(path, rel + "/", current.ancestors | {key}))
        return
    doc_type = match_doc_type(rel, walk.types)
    resolved: str | None = None
    if is_link:
        try:
            target = os.stat(path)
        except OSError as exc:
            if doc_type is not None:
                walk.result.files.append(_broken_link(path, doc_type.name, exc))
            elif exc.errno == errno.ELOOP:
                walk.problem(path, "symlink_loop", "symlink resolves to itself")
            return
        resolved = os.path.realpath(path)
        if stat.S_ISDIR(target.st_mode):
            _link_to_dir(path, rel, target, resolved, entry.name, current, walk, subdirs)
            return
        if doc_type is not None and not walk.inside(resolved):
            walk.result.files.append(
                ScannedFile(path, doc_type.name, None, None, 0, "outside_root", OUTSIDE_DETAIL)
            )
            return
    if doc_type is None:
        return
    try:
        fst = os.stat(path)
        file_key: tuple[int, int] | None = (fst.st_dev, fst.st_ino)
    except OSError:
        file_key = None
    if file_key is not None and stat.S_ISREG(fst.st_mode):
        if file_key in walk.seen_files:
            return
        walk.seen_files.add(file_key)
    walk.result.files.append(
        read_document(path, doc_type.name, walk.max_file_bytes, resolved=resolved or str(path))
    )


def _broken_link(path: Path, doc_type: str, exc: OSError) -> ScannedFile:
    if exc.errno == errno.ELOOP:
        return ScannedFile(path, doc_type, None, None, 0, "symlink_loop", "symlink loop")
    detail = "dangling symlink" if exc.errno == errno.ENOENT else _strerror(exc)
    return ScannedFile(path, doc_type, None, None, 0, "unreadable", detail)


def _link_to_dir(
    path: Path,
    rel: str,
    target: os.stat_result,
    resolved: str,
    name: str,
    current: _Dir,
    walk: _Walk,
    subdirs: list[_Dir],
) -> None:
    if not walk.follow_symlinks or name in walk.excluded:
        return
    if not walk.inside(resolved):
        walk.problem(path, "outside_root", OUTSIDE_DETAIL)
        return
    key = (target.st_dev, target.st_ino)
    if key in current.ancestors:
        walk.problem(path, "symlink_loop", "links back to an enclosing directory")
        return
    if key in walk.seen_dirs:
        return  # reached twice through different links: walk it once
    walk.seen_dirs.add(key)
    subdirs.append(_Dir(path, rel + "/", current.ancestors | {key}))

"""The ZAKON registry: ``<root>/rules/zakon-registry.json`` parsed into entries, and the
creation gate's decision for one file.

Fail closed: a registry that is missing, not JSON, or not shaped like the seed's schema
(``registry`` a list of objects, each with ``zakon_id`` and ``file_path``; no file listed
twice) raises ``RegistryError`` and blocks every ZAKON write. A ``~`` in ``file_path`` is the
home of the user running the fleet; a relative path is relative to the registry's folder.
Standard library only (the pre-write hook imports it). It must never write the registry and
never let a malformed entry count as approval.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOWED_STATUSES",
    "CEO_TOKEN",
    "GRANDFATHERED_PREFIX",
    "LEGACY_STATUS",
    "Approval",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "judge_entry",
    "judge_task_text",
    "load_registry",
    "normalize_path",
    "parse_registry",
    "sha256_matches",
]

CEO_TOKEN = "[CEO_APPROVED]"
GRANDFATHERED_PREFIX = "GRANDFATHERED-"
LEGACY_STATUS = "legacy-pre-registry"
ALLOWED_STATUSES = frozenset({"approved-pending-author", "approved-live", "active", LEGACY_STATUS})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MC_TASK_RE = re.compile(r"^#?\s*(\d{1,12})$")
MAX_MC_TASK = 999_999_999_999


class RegistryError(Exception):
    """The registry cannot be used: ``kind`` is missing | unreadable | invalid. The message
    names the file and the fix."""

    def __init__(self, kind: str, path: Path, problem: str) -> None:
        self.kind = kind
        self.path = path
        self.problem = problem
        super().__init__(self.render())

    def render(self) -> str:
        head = {
            "missing": "Registry file not found.",
            "unreadable": "Registry file cannot be read.",
            "invalid": "Registry file is not a valid ZAKON registry.",
        }.get(self.kind, "Registry unusable.")
        return (
            f"ZAKON_REGISTRY_ERROR: {head}\n"
            f"Expected: {self.path}\n"
            f"Problem: {self.problem}\n"
            "FIX: restore zakon-registry.json from backup (or recreate it through its Mission "
            'Control task) in the seed\'s schema: {"version": "1.0", "policy": {...}, '
            '"registry": [{"zakon_id", "file_path", "mc_task", "ceo_approved_token", '
            '"status"}, ...]}; check it with `fleet zakon list`. Until then every ZAKON '
            "write is blocked (fail closed)."
        )


@dataclass(frozen=True)
class RegistryEntry:
    index: int
    zakon_id: str
    file_path: str  # as written in the registry
    path: str  # absolute, normalized
    mc_task: int | None
    token: str
    status: str
    published_sha256: str | None
    problems: tuple[str, ...]  # field-level defects: the entry approves nothing

    def to_json(self) -> dict[str, Any]:
        return {
            "zakon_id": self.zakon_id,
            "file_path": self.file_path,
            "path": self.path,
            "mc_task": self.mc_task,
            "ceo_approved_token": self.token,
            "status": self.status,
            "published_sha256": self.published_sha256,
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class Registry:
    path: Path
    version: str
    entries: tuple[RegistryEntry, ...]

    def find(self, file_path: str | os.PathLike[str]) -> RegistryEntry | None:
        """The entry registering ``file_path`` (compared normalized, then by real path)."""
        wanted = normalize_path(str(file_path))
        for entry in self.entries:
            if entry.path == wanted:
                return entry
        real = os.path.realpath(wanted)
        for entry in self.entries:
            if os.path.realpath(entry.path) == real:
                return entry
        return None

    def by_status(self) -> dict[str, int]:
        return dict(sorted(Counter(e.status or "(none)" for e in self.entries).items()))


def normalize_path(path: str, *, home: str | None = None, base: str | None = None) -> str:
    """``~`` -> ``home`` (default: this user's), relative -> under ``base``; absolute and
    normalized, symlinks not resolved."""
    if path == "~" or path.startswith("~/"):
        home_dir = home if home is not None else os.path.expanduser("~")
        path = home_dir + path[1:]
    if not os.path.isabs(path):
        path = os.path.join(base or os.getcwd(), path)
    return os.path.normpath(path)


def _mc_task(value: Any) -> tuple[int | None, str | None]:
    if value is None or value == "":
        return None, None
    if isinstance(value, bool):
        return None, "mc_task is not a task id"
    if isinstance(value, int):  # bounded like the 12-digit string: SQLite takes 64 bits only
        return (value, None) if 0 < value <= MAX_MC_TASK else (None, "mc_task is not a task id")
    if isinstance(value, str):
        m = _MC_TASK_RE.match(value.strip())
        if m and int(m.group(1)) > 0:
            return int(m.group(1)), None
    return None, f"mc_task {str(value)[:40]!r} is not a task id"


def parse_registry(text: str, path: Path, *, home: str | None = None) -> Registry:
    """Parse registry JSON; raise RegistryError("invalid") for anything not in the schema."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RegistryError("invalid", path, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise RegistryError("invalid", path, "not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise RegistryError("invalid", path, "top level is not a JSON object")
    items = data.get("registry")
    if not isinstance(items, list):
        raise RegistryError("invalid", path, "'registry' is missing or not a list")
    base = str(path.parent)
    entries: list[RegistryEntry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise RegistryError("invalid", path, f"registry[{index}] is not an object")
        zakon_id, file_path = item.get("zakon_id"), item.get("file_path")
        if not isinstance(zakon_id, str) or not zakon_id.strip():
            raise RegistryError("invalid", path, f"registry[{index}].zakon_id missing")
        if not isinstance(file_path, str) or not file_path.strip():
            raise RegistryError("invalid", path, f"registry[{index}].file_path missing")
        normalized = normalize_path(file_path.strip(), home=home, base=base)
        if normalized in seen:
            raise RegistryError(
                "invalid",
                path,
                f"registry[{index}] lists {file_path} again (also registry[{seen[normalized]}]);"
                " one entry per file",
            )
        seen[normalized] = index
        problems: list[str] = []
        mc_task, problem = _mc_task(item.get("mc_task"))
        if problem:
            problems.append(problem)
        token = item.get("ceo_approved_token")
        status = item.get("status")
        if not isinstance(token, str):
            problems.append("ceo_approved_token is not a string")
            token = ""
        if not isinstance(status, str):
            problems.append("status is not a string")
            status = ""
        sha = item.get("published_sha256")
        if sha is not None and not isinstance(sha, str):
            problems.append("published_sha256 is not a string")
            sha = None
        entries.append(
            RegistryEntry(
                index=index,
                zakon_id=zakon_id.strip(),
                file_path=file_path.strip(),
                path=normalized,
                mc_task=mc_task,
                token=token.strip(),
                status=status.strip(),
                published_sha256=sha.strip().lower() if sha else None,
                problems=tuple(problems),
            )
        )
    version = data.get("version")
    return Registry(path, str(version) if version is not None else "", tuple(entries))


def load_registry(path: Path, *, home: str | None = None) -> Registry:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError("missing", path, "no such file") from None
    except IsADirectoryError:
        raise RegistryError("unreadable", path, "is a directory") from None
    except OSError as exc:
        raise RegistryError("unreadable", path, exc.strerror or str(exc)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RegistryError("invalid", path, f"not UTF-8 (byte {exc.start})") from None
    return parse_registry(text, path, home=home)


@dataclass(frozen=True)
class Approval:
    """The gate's answer for one file: ``reason`` is "" when approved, else a REASONS code
    (unregistered | not_approved) with a human ``detail``."""

    reason: str
    detail: str
    entry: RegistryEntry | None = None

    @property
    def ok(self) -> bool:
        return not self.reason

    def describe(self) -> str:
        if self.entry is None:
            return self.detail
        mc = f", MC #{self.entry.mc_task}" if self.entry.mc_task else ""
        return f"{self.entry.zakon_id} ({self.entry.status}{mc}): {self.detail}"


def judge_entry(entry: RegistryEntry | None) -> Approval:
    """Registered with an allowed status and the right token? ``[CEO_APPROVED]`` approves
    any allowed status (and needs an MC task unless legacy); a ``GRANDFATHERED-*`` token is
    an audit snapshot, so it only covers ``legacy-pre-registry`` entries."""
    if entry is None:
        return Approval(
            "unregistered",
            "not in the ZAKON registry: a new ZAKON needs a Mission Control task carrying "
            f"{CEO_TOKEN} and a registry entry (file_path, mc_task, ceo_approved_token "
            f"{CEO_TOKEN}, status approved-pending-author)",
        )
    if entry.problems:
        return Approval("not_approved", "malformed entry: " + "; ".join(entry.problems), entry)
    if entry.status not in ALLOWED_STATUSES:
        allowed = ", ".join(sorted(ALLOWED_STATUSES))
        return Approval(
            "not_approved", f"status {entry.status!r} does not allow writes ({allowed})", entry
        )
    if entry.token == CEO_TOKEN:
        if entry.status != LEGACY_STATUS and entry.mc_task is None:
            return Approval("not_approved", "no Mission Control task (mc_task) referenced", entry)
        return Approval("", "approved", entry)
    if entry.token.startswith(GRANDFATHERED_PREFIX):
        if entry.status == LEGACY_STATUS:
            return Approval("", "grandfathered", entry)
        return Approval(
            "not_approved",
            f"token {entry.token} only covers status {LEGACY_STATUS}, not {entry.status}",
            entry,
        )
    return Approval(
        "not_approved",
        f"ceo_approved_token {entry.token[:40]!r} is neither {CEO_TOKEN} nor "
        f"{GRANDFATHERED_PREFIX}*",
        entry,
    )


def judge_task_text(entry: RegistryEntry, text: str | None, *, from_mail: bool = False) -> Approval:
    """The seed's rule that approval lives in the MC task: ``text`` is the task's title and
    description (None: no such task). A task created from mail never approves: its text is a
    stranger's subject line."""
    if text is None:
        return Approval("not_approved", f"Mission Control task #{entry.mc_task} not found", entry)
    if from_mail:
        return Approval(
            "not_approved",
            f"Mission Control task #{entry.mc_task} was created from mail; "
            f"mail never carries {CEO_TOKEN}",
            entry,
        )
    if CEO_TOKEN not in text:
        return Approval(
            "not_approved",
            f"Mission Control task #{entry.mc_task} does not carry {CEO_TOKEN}",
            entry,
        )
    return Approval("", "approved", entry)


def sha256_matches(entry: RegistryEntry, digest: str) -> bool | None:
    """None: nothing published to compare with."""
    if entry.published_sha256 is None:
        return None
    if not _SHA256_RE.match(entry.published_sha256):
        return False
    return entry.published_sha256 == digest.lower()

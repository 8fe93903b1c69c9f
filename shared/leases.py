"""Mission Control's lease vocabulary: the errors the claim verbs raise and the plain records
they return (``LeaseInfo``, ``TaskView``, ``ExpiredLease``, ``UnreadableLease``). Plain data,
no I/O; ``shared.mission_control`` is the store that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.sqlite import StoreError
from shared.timestamps import format_iso, shown

__all__ = [
    "ExpiredLease",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseNotHeld",
    "LeaseUnreadable",
    "MissingColumns",
    "NoSuchTask",
    "RawTs",
    "TaskRef",
    "TaskView",
    "UnreadableLease",
    "holder_of",
]

RawTs = str | int | float


class NoSuchTask(LookupError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"no such task: {task_id}")
        self.task_id = task_id


class LeaseHeld(Exception):
    """The task is leased by someone else; the message is the protocol's stderr line."""

    def __init__(self, task_id: int, holder: str, until: datetime) -> None:
        self.task_id = task_id
        self.holder = holder
        self.until = until
        super().__init__(f"Task {task_id} held by {holder} until {format_iso(until)}")


class MissingColumns(StoreError):
    """The shared ``tasks`` table lacks a column a verb needs; the fleet does not add it."""

    def __init__(self, path: Path | str, table: str, columns: list[str]) -> None:
        self.path, self.table, self.columns = path, table, columns
        what = f"no table {table}" if columns == ["*"] else f"table {table} has no column "
        if columns != ["*"]:
            what += ", ".join(columns)
        super().__init__(
            f"{path}: {what}; the fleet does not change a shared schema on its own: "
            f"`fleet mc migrate --db {path}` shows the change, `--apply` makes it"
        )


class LeaseUnreadable(Exception):
    """The lease's ``lease_until`` cannot be read: nobody can tell whether it is still live."""

    def __init__(self, task_id: int, holder: str, raw: object, reason: str) -> None:
        self.task_id, self.holder, self.raw, self.reason = task_id, holder, raw, reason
        super().__init__(
            f"Task {task_id}: lease of {holder} has an unreadable lease_until {shown(raw)}"
            f" ({reason});"
            f" an operator can release it with `fleet mc claim-release {task_id} --force`"
        )


class LeaseNotHeld(Exception):
    """extend on a task nobody holds: there is no lease to extend; claim it instead."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        super().__init__(f"Task {task_id} is not claimed; claim it first")


@dataclass(frozen=True)
class TaskRef:
    id: int
    created: bool  # False: an existing task for the same (source, source_ref) was relinked


@dataclass(frozen=True)
class LeaseInfo:
    id: int
    holder: str | None
    lease_until: datetime | None
    expired: bool
    raw_lease_until: RawTs | None = None
    unreadable: str | None = None  # why lease_until could not be read (then expired is False)

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "id": self.id,
            "holder": self.holder,
            "lease_until": format_iso(self.lease_until) if self.lease_until else None,
            "expired": self.expired,
        }
        if self.unreadable is not None:
            doc["lease_until_raw"] = self.raw_lease_until
            doc["unreadable"] = self.unreadable
        return doc


@dataclass(frozen=True)
class TaskView:
    """What Mehanik reads from ``show <id> --json``."""

    id: int
    title: str | None
    status: str | None
    lease_holder: str | None
    lease_until: datetime | None
    raw_lease_until: RawTs | None
    unreadable: str | None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "lease_holder": self.lease_holder,
            "lease_until": (
                format_iso(self.lease_until) if self.lease_until else self.raw_lease_until
            ),
        }
        if self.unreadable is not None:
            doc["lease_until_error"] = self.unreadable
        return doc


@dataclass(frozen=True)
class UnreadableLease:
    """A held lease whose lease_until no parser can read: reported, never released by a sweep."""

    id: int
    title: str
    holder: str
    raw_lease_until: RawTs | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "holder": self.holder,
            "lease_until_raw": self.raw_lease_until,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ExpiredLease:
    id: int
    title: str
    holder: str
    lease_until: datetime
    raw_lease_until: RawTs  # exactly as stored (type too): the CAS release compares against it
    expired_for_s: float

    def to_json(self, released: bool) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "holder": self.holder,
            "lease_until": format_iso(self.lease_until),
            "expired_for_s": round(self.expired_for_s, 1),
            "released": released,
        }


def holder_of(actor: str, session: str) -> str:
    return f"{actor}:{session}"

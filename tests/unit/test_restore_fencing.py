"""The promotion fence and the role file as restore-loop obeys them, and the polled files behind
them, which are read again only when they change. Real files under tmp_path; no processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from daemons.restore_loop.fencing import Fencing
from daemons.restore_loop.policy import CheckSchedule
from daemons.restore_loop.state import FENCE_MAX_AGE_S, Fence, StatePaths, read_txid_file
from daemons.restore_loop.watched_file import WatchedFile
from shared.files import atomic_write_text

T0 = 1_800_000_000.0
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def counting(parse: Callable[[Path], T | None]) -> tuple[list[Path], Callable[[Path], T | None]]:
    calls: list[Path] = []

    def read(path: Path) -> T | None:
        calls.append(path)
        return parse(path)

    return calls, read


def test_a_watched_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "a-txid"
    calls, parse = counting(read_txid_file)
    watched = WatchedFile(path, parse)
    assert watched.read() is None and calls == []  # absent: a stat, no read
    atomic_write_text(path, f"{5:016x}\n")
    assert watched.read() == 5 and watched.read() == 5
    assert len(calls) == 1
    atomic_write_text(path, f"{6:016x}\n")  # replaced: a new inode
    assert watched.read() == 6 and len(calls) == 2
    path.write_text(f"{7:016x}\n")  # rewritten in place: a new mtime
    os.utime(path, ns=(1, 1))
    assert watched.read() == 7 and len(calls) == 3


def test_a_torn_read_is_never_remembered(tmp_path: Path) -> None:
    path = tmp_path / "a-txid"
    path.write_text("")  # truncated, not yet written
    calls, parse = counting(read_txid_file)
    watched = WatchedFile(path, parse)
    assert watched.read() is None and watched.read() is None
    assert len(calls) == 2
    path.unlink()
    assert watched.read() is None and len(calls) == 2


def fencing(tmp_path: Path, clock: Clock) -> tuple[Fencing, Path, StatePaths]:
    role = tmp_path / "state" / "role"
    paths = StatePaths.under(tmp_path / "state")
    return Fencing(role, paths.fence, clock), role, paths


def test_the_role_file_must_read_primary_twice_in_a_row(tmp_path: Path) -> None:
    fence, role, _ = fencing(tmp_path, Clock())
    assert not fence.role_confirms_primary()  # no role file: [fleet] role is not consulted
    role.parent.mkdir(parents=True)
    role.write_text("prim")  # torn mid-write
    assert not any(fence.role_confirms_primary() for _ in range(3))
    assert not fence.is_fenced("tasks")
    role.write_text("primary\n")
    assert fence.is_fenced("tasks")  # at once, before the promotion is confirmed
    assert not fence.role_confirms_primary()
    assert fence.role_confirms_primary()
    atomic_write_text(role, "standby\n")
    assert not fence.role_confirms_primary() and not fence.is_fenced("tasks")


def test_a_fence_covers_its_dbs_while_its_process_lives(tmp_path: Path) -> None:
    clock = Clock()
    fence, _, paths = fencing(tmp_path, clock)
    assert fence.active() is None and not fence.is_fenced("tasks")
    paths.write_fence(Fence("f1", os.getpid(), ("tasks",), T0))
    active = fence.active()
    assert active is not None and active.id == "f1"
    assert fence.is_fenced("tasks") and not fence.is_fenced("ledger")
    assert fence.stops(active, "tasks") and not fence.stops(active, "ledger")
    clock.now = T0 + FENCE_MAX_AGE_S
    assert fence.active() is None and not fence.is_fenced("tasks")  # too old
    clock.now = T0
    paths.write_fence(Fence("f2", 2**22 + 12345, ("tasks",), T0))  # its process is gone
    assert fence.active() is None and not fence.is_fenced("tasks")


def test_promotion_fences_everything_and_lifting_is_seen_once(tmp_path: Path) -> None:
    fence, _, paths = fencing(tmp_path, Clock())
    paths.write_fence(Fence("f1", os.getpid(), ("tasks",), T0))
    active = fence.active()
    assert not fence.lifted(active) and not fence.lifted(active)
    paths.clear_fence("f1")
    assert fence.lifted(fence.active())
    assert not fence.lifted(fence.active())
    fence.promoted = True
    assert fence.is_fenced("anything") and fence.stops(None, "anything")


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0.0, 5.0, 10.0, 19.9, 20.0], [True, False, True, False, True]),
        ([100.0, 100.0], [True, False]),
    ],
)
def test_check_rounds_run_at_once_then_every_interval(
    times: list[float], expected: list[bool]
) -> None:
    schedule = CheckSchedule(10.0)
    assert [schedule.due(t) for t in times] == expected

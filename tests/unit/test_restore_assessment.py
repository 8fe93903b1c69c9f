"""How fresh a standby copy is, from its TXID, the replica's listing and ``now``; when a snapshot
copy is due; whether any copy is usable. Table-driven, pure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemons.restore_loop.assessment import (
    CopyState,
    Freshness,
    SnapshotAction,
    SnapshotStep,
    assess_copy,
    copy_txid,
    first_unusable_error,
    needs_all_levels,
    snapshot_step,
    usable,
)
from daemons.restore_loop.policy import LtxFile, ReplicaView
from daemons.restore_loop.state import RestoreTarget

T0 = 1_800_000_000.0
OPENED = T0 - 1000.0


def view(*files: tuple[int, int, float], level: int = 0) -> ReplicaView:
    """LTX files (min TXID, max TXID, seconds after T0 they were written)."""
    return ReplicaView(tuple(LtxFile(level, lo, hi, 100, T0 + at) for lo, hi, at in files))


# The replica holds TXIDs 1..9, written 100 s, 50 s and 10 s before ``NOW``.
REPLICA = view((1, 3, -100.0), (4, 6, -50.0), (7, 9, -10.0))
EMPTY = ReplicaView(())
NOW = T0


def assess(**kw: Any) -> Freshness:
    args: dict[str, Any] = {
        "local_txid": None,
        "previous_txid": None,
        "replica": REPLICA,
        "reset": False,
        "applied_at": None,
        "verified_fresh_at": None,
        "last_success_at": None,
        "opened_at": OPENED,
        "now": NOW,
    }
    return assess_copy(**(args | kw))


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param(
            {"local_txid": 9, "previous_txid": 9},
            Freshness(False, 0.0, T0 - 10, NOW, NOW, compared=True),
            id="caught-up: verified fresh now",
        ),
        pytest.param(
            {"local_txid": 6, "previous_txid": 3, "last_success_at": T0 - 500},
            Freshness(False, 10.0, T0 - 50, None, NOW, compared=True),
            id="behind but advancing: a success, not verified fresh",
        ),
        pytest.param(
            {"local_txid": 6, "previous_txid": 6, "last_success_at": T0 - 500},
            Freshness(False, 10.0, T0 - 50, None, T0 - 500, compared=True),
            id="behind and not advancing: nothing new",
        ),
        pytest.param(
            {"local_txid": None},
            Freshness(False, 100.0, None, None, None, compared=True),
            id="nothing restored yet: everything the replica holds is at risk",
        ),
        pytest.param(
            {"local_txid": 12, "previous_txid": 12, "verified_fresh_at": T0 - 30},
            Freshness(True, 30.0, None, T0 - 30, None, compared=True),
            id="diverged: lag is the time since last verified fresh",
        ),
        pytest.param(
            {"local_txid": 12, "applied_at": T0 - 5},
            Freshness(True, 1000.0, None, None, None, compared=True),
            id="diverged, never verified: since the daemon opened",
        ),
        pytest.param(
            {"local_txid": 9, "reset": True},
            Freshness(True, 0.0, T0 - 10, NOW, NOW, compared=True),
            id="snapshot reset and restored: still diverged, but measured",
        ),
        pytest.param(
            {"local_txid": 9, "replica": None, "applied_at": T0 - 70, "verified_fresh_at": T0 - 60},
            Freshness(False, 60.0, T0 - 70, T0 - 60, None, compared=False),
            id="listing failed: time since verified, applied_at kept",
        ),
        pytest.param(
            {"local_txid": 9, "replica": EMPTY, "applied_at": T0 - 70},
            Freshness(False, 1000.0, T0 - 70, None, None, compared=False),
            id="replica missing: not compared",
        ),
        pytest.param(
            {"local_txid": 9, "replica": EMPTY, "reset": True},
            Freshness(True, 1000.0, None, None, None, compared=False),
            id="reset without a usable listing",
        ),
        pytest.param(
            {"local_txid": 9, "replica": None, "opened_at": NOW + 5},
            Freshness(False, 0.0, None, None, None, compared=False),
            id="never negative",
        ),
    ],
)
def test_assess_copy(kw: dict[str, Any], expected: Freshness) -> None:
    assert assess(**kw) == expected


@pytest.mark.parametrize(
    ("live", "seed", "exists", "expected"),
    [
        (7, 3, True, (7, None)),  # the live sidecar wins and the seed is dropped for good
        (7, None, False, (7, None)),
        (None, 3, True, (3, 3)),  # the previous run's copy is still there
        (None, 3, False, (None, 3)),  # ... or it is gone for now
        (None, None, True, (None, None)),
    ],
)
def test_copy_txid(
    live: int | None, seed: int | None, exists: bool, expected: tuple[int | None, int | None]
) -> None:
    assert copy_txid(live, seed, exists) == expected


@pytest.mark.parametrize(
    ("level0", "local", "expected"),
    [
        (view((5, 9, 0.0)), 4, False),  # level 0 starts right after the copy
        (view((5, 9, 0.0)), 3, True),  # TXID 4 was compacted away from level 0
        (view((5, 9, 0.0)), None, False),
        (EMPTY, 3, False),
    ],
)
def test_needs_all_levels(level0: ReplicaView, local: int | None, expected: bool) -> None:
    assert needs_all_levels(level0, local) is expected


RESTORE, WAIT, UP_TO_DATE = SnapshotAction.RESTORE, SnapshotAction.WAIT, SnapshotAction.UP_TO_DATE


@pytest.mark.parametrize(
    ("current", "replica", "last", "expected"),
    [
        (None, 9, None, SnapshotStep(RESTORE, reset=False)),  # never restored
        (9, 9, None, SnapshotStep(UP_TO_DATE, reset=False)),
        (9, None, T0 - 1, SnapshotStep(WAIT, reset=False)),
        (5, 9, T0 - 10, SnapshotStep(WAIT, reset=False)),  # restored 10 s ago, interval 30 s
        (5, 9, T0 - 30, SnapshotStep(RESTORE, reset=False)),
        (12, 9, T0 - 1, SnapshotStep(RESTORE, reset=True)),  # record ahead: restore now
    ],
)
def test_snapshot_step(
    current: int | None, replica: int | None, last: float | None, expected: SnapshotStep
) -> None:
    assert snapshot_step(current, replica, last, 30.0, T0) == expected


def copy(name: str, **kw: Any) -> CopyState:
    target = RestoreTarget(name, "P0", Path(f"/db/{name}.db"), "follow", 1.0, 60.0, 60.0)
    return CopyState(target, **kw)


def test_usable_and_the_first_error_when_none_is() -> None:
    good = copy("a", local_txid=3)
    assert usable(good)
    assert not usable(copy("b"))
    assert not usable(copy("c", local_txid=3, last_error="exit"))
    assert not usable(copy("d", local_txid=3, replica_error="timeout"))
    assert first_unusable_error([]) is None
    assert first_unusable_error([copy("b"), good]) is None
    failing = [copy("b"), copy("c", replica_error="ltx timed out"), copy("d", last_error="exit")]
    assert first_unusable_error(failing) == (
        "no standby copy is usable: 3 DB(s) all failing; first error: ltx timed out"
    )
    assert first_unusable_error([copy("b")]) == (
        "no standby copy is usable: 1 DB(s) all failing; first error: ?"
    )

"""The status document restore-loop writes (what `fleet restore status` and `fleet restore
promote` read) and what the next run takes back from it. Pure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemons.restore_loop.assessment import CopyState
from daemons.restore_loop.policy import LtxFile, ReplicaView
from daemons.restore_loop.state import RestoreTarget
from daemons.restore_loop.status_doc import (
    FollowerView,
    LeftoverFollower,
    database_row,
    leftover_followers,
    previous_incidents,
    previous_txids,
    status_document,
    worth_writing,
)

T0 = 1_800_000_000.0


def target(name: str, tier: str = "P0", mode: str = "follow") -> RestoreTarget:
    return RestoreTarget(name, tier, Path(f"/db/{name}.db"), mode, 1.0, 60.0, 45.0)


def test_a_following_copy_row() -> None:
    copy = CopyState(
        target("tasks"),
        replica=ReplicaView((LtxFile(0, 1, 9, 100, T0 - 5),)),
        local_txid=9,
        lag_s=0.12345,
        applied_at=T0 - 5,
        verified_fresh_at=T0,
        last_success_at=T0,
        checked_at=T0,
        failures=2,
        replica_error="old listing error",
    )
    copy.restarts.add(T0 - 7200, "exit")
    copy.restarts.add(T0 - 60, "stall")
    follower = FollowerView("following", 4242, Path("/w/tasks~1.db"), Path("/w/tasks~1.db-txid"))
    row = database_row(copy, follower, promoted=False, snapshot_txid_file=None, now=T0)
    assert row == {
        "db": "tasks",
        "tier": "P0",
        "mode": "follow",
        "path": "/db/tasks.db",
        "state": "following",
        "local_txid": 9,
        "replica_txid": 9,
        "replica_newest_at": T0 - 5,
        "applied_at": T0 - 5,
        "lag_s": 0.123,
        "stale_threshold_s": 45.0,
        "rpo_target_s": 60.0,
        "follow_interval_s": 1.0,
        "poll_interval_s": None,
        "listed_at": None,
        "writes_per_s": None,
        "last_success_at": T0,
        "verified_fresh_at": T0,
        "checked_at": T0,
        "restarts_1h": 1,
        "restarts_total": 2,
        "failures": 2,
        "follower_pid": 4242,
        "follower_output": "/w/tasks~1.db",
        "sidecar": "/w/tasks~1.db-txid",
        "snapshot_txid_file": None,
        "replica_missing": False,
        "diverged": False,
        "suspect": "",
        "last_error": "old listing error",  # the follower's own error comes first when set
    }
    json.dumps(row)


def test_a_snapshot_copy_row_and_promotion_override_the_state() -> None:
    copy = CopyState(target("ledger", mode="snapshot"), last_error="restore failed")
    record = Path("/w/ledger~snapshot.txid")
    row = database_row(
        copy, FollowerView("snapshot"), promoted=True, snapshot_txid_file=record, now=T0
    )
    assert row["state"] == "promoted"
    assert row["snapshot_txid_file"] == str(record)
    assert row["follower_pid"] is None and row["follower_output"] is None
    assert row["replica_txid"] is None and row["lag_s"] is None
    assert row["last_error"] == "restore failed"


def test_the_document_orders_rows_by_tier_then_name() -> None:
    rows = [
        database_row(CopyState(target(n, t)), FollowerView("idle"), promoted=False,
                     snapshot_txid_file=None, now=T0)
        for n, t in (("zeta", "P0"), ("alpha", "P1"), ("beta", "P0"))
    ]  # fmt: skip
    doc = status_document(
        host="forge",
        pid=99,
        now=T0,
        promoted=False,
        fence_ack="abc",
        incidents=[{"kind": "stale", "db": "zeta", "opened_at": T0, "detail": ""}],
        problems=[("x", "not in the tier table")],
        plan_error="",
        rows=rows,
    )
    assert [(r["tier"], r["db"]) for r in doc["databases"]] == [
        ("P0", "beta"),
        ("P0", "zeta"),
        ("P1", "alpha"),
    ]
    assert {k: v for k, v in doc.items() if k != "databases"} == {
        "host": "forge",
        "pid": 99,
        "updated_at": T0,
        "promoted": False,
        "fence_ack": "abc",
        "incidents": [{"kind": "stale", "db": "zeta", "opened_at": T0, "detail": ""}],
        "problems": [["x", "not in the tier table"]],
        "plan_error": "",
    }


PREVIOUS: dict[str, Any] = {
    "incidents": [{"kind": "stale", "db": "a"}],
    "databases": [
        {
            "db": "a",
            "mode": "follow",
            "local_txid": 7,
            "follower_pid": 11,
            "follower_output": "/w/a",
        },
        {"db": "b", "mode": "snapshot", "local_txid": 8, "follower_pid": None},
        {"db": "c", "mode": "follow", "local_txid": None, "follower_pid": 12},
        {"db": "d", "mode": "follow", "local_txid": "9", "follower_pid": 13, "follower_output": 5},
        {
            "db": "e",
            "mode": "follow",
            "local_txid": 3,
            "follower_pid": 500,
            "follower_output": "/w/e",
        },
    ],
}


def test_what_the_next_run_takes_back() -> None:
    assert previous_txids(PREVIOUS) == {"a": 7, "e": 3}  # follow mode, an int TXID
    assert previous_incidents(PREVIOUS) == [{"kind": "stale", "db": "a"}]
    # Its own PID is never a leftover; rows without a PID and an output path are skipped.
    assert leftover_followers(PREVIOUS, own_pid=500) == [LeftoverFollower(11, "/w/a", "a")]
    empty: dict[str, Any] = {}
    assert previous_txids(empty) == {} and previous_incidents(empty) == []
    assert leftover_followers({"databases": None}, own_pid=1) == []


def test_the_status_is_written_when_it_changes_or_once_a_check_interval() -> None:
    def doc(at: float, pid: int = 100, ack: str | None = None) -> dict[str, object]:
        row = {"db": "alpha", "tier": "P0", "follower_pid": pid, "local_txid": 7}
        return {"updated_at": at, "fence_ack": ack, "databases": [row]}

    first = doc(1000.0)
    assert worth_writing(None, first, written_at=0.0, every_s=10.0)
    assert not worth_writing(first, doc(1002.0), written_at=1000.0, every_s=10.0)  # a tick
    assert worth_writing(first, doc(1010.0), written_at=1000.0, every_s=10.0)  # alive
    assert worth_writing(first, doc(1002.0, pid=101), written_at=1000.0, every_s=10.0)
    assert worth_writing(first, doc(1000.5, ack="f1"), written_at=1000.0, every_s=10.0)

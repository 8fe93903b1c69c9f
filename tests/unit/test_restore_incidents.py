"""restore-loop's incidents: which are active for a copy and with what text, and the book that
sends one alert when an incident opens and one recovery when it closes. Table-driven, pure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemons.restore_loop.assessment import CopyState
from daemons.restore_loop.incidents import (
    AlertBook,
    CopyFacts,
    Observation,
    copy_facts,
    observations,
)
from daemons.restore_loop.policy import LtxFile, ReplicaView
from daemons.restore_loop.state import RestoreTarget

T0 = 1_800_000_000.0

HEALTHY = CopyFacts(
    db="tasks",
    tier="P0",
    stale_threshold_s=60.0,
    lag_s=0.0,
    local_txid=7,
    replica_txid=7,
    replica_error="",
    follower_state="following",
    restarts_last_hour=0,
    restart_reasons=(),
    max_restarts_per_hour=5,
    diverged=False,
    suspect="",
    replica_missing=False,
)


def by_kind(facts: CopyFacts) -> dict[str, Observation]:
    return {o.kind: o for o in observations(facts)}


def test_a_healthy_copy_has_no_active_incident_and_names_all_five() -> None:
    seen = observations(HEALTHY)
    assert [o.kind for o in seen] == ["stale", "restarts", "diverged", "suspect", "replica_missing"]
    assert not any(o.active for o in seen)
    assert [o.detail for o in seen] == [
        "lag 0.0s",
        "0 restarts in the last hour",
        "copy restored fresh from the replica",
        "copy replaced by a fresh restore",
        "replica present again",
    ]


@pytest.mark.parametrize(
    ("change", "kind", "detail"),
    [
        (
            {"lag_s": 120.0},
            "stale",
            "lag 2m > 60s (P0); local TXID 7, replica TXID 7, follower following",
        ),
        (
            {"lag_s": 120.0, "replica_error": "ltx failed: " + "x" * 300},
            "stale",
            "lag 2m > 60s (P0); replica unreachable (ltx failed: " + "x" * 148 + ")",
        ),
        (
            {"restarts_last_hour": 6, "restart_reasons": ("exit", "stall")},
            "restarts",
            "6 restarts in the last hour (exit, stall)",
        ),
        (
            {"diverged": True, "local_txid": 9, "replica_txid": 2},
            "diverged",
            "replica TXID 2 < local TXID 9; restoring fresh",
        ),
        ({"suspect": "q" * 400}, "suspect", "q" * 300),
        (
            {"replica_missing": True},
            "replica_missing",
            "litestream lists no LTX files for it: is the primary replicating it?",
        ),
    ],
)
def test_each_incident_opens_with_its_cause(change: dict[str, Any], kind: str, detail: str) -> None:
    seen = by_kind(replace(HEALTHY, **change))
    assert seen[kind].active and seen[kind].detail == detail
    assert [k for k, o in seen.items() if o.active] == [kind]


@pytest.mark.parametrize(
    ("lag", "restarts", "stale", "too_many"),
    [(60.0, 5, False, False), (60.1, 6, True, True), (None, 0, False, False)],
)
def test_thresholds_are_strictly_above(
    lag: float | None, restarts: int, stale: bool, too_many: bool
) -> None:
    seen = by_kind(replace(HEALTHY, lag_s=lag, restarts_last_hour=restarts))
    assert seen["stale"].active is stale and seen["restarts"].active is too_many


def test_a_missing_replica_needs_two_observations_the_others_one() -> None:
    assert {o.kind: o.confirm for o in observations(HEALTHY)} == {
        "stale": 1,
        "restarts": 1,
        "diverged": 1,
        "suspect": 1,
        "replica_missing": 2,
    }


def test_copy_facts_reads_the_copy_and_prunes_old_restarts() -> None:
    target = RestoreTarget("tasks", "P1", Path("/db/tasks.db"), "follow", 15.0, 300.0, 300.0)
    copy = CopyState(target, lag_s=4.0, local_txid=3, replica_missing=True, suspect="torn")
    copy.replica = ReplicaView((LtxFile(0, 1, 5, 10, T0),))
    copy.restarts.add(T0 - 7200, "exit")
    copy.restarts.add(T0 - 60, "stall")
    copy.restarts.add(T0 - 30, "exit")
    facts = copy_facts(copy, "following", 5, T0)
    assert facts == CopyFacts(
        db="tasks",
        tier="P1",
        stale_threshold_s=300.0,
        lag_s=4.0,
        local_txid=3,
        replica_txid=5,
        replica_error="",
        follower_state="following",
        restarts_last_hour=2,
        restart_reasons=["exit", "stall"],
        max_restarts_per_hour=5,
        diverged=False,
        suspect="torn",
        replica_missing=True,
    )


def test_observe_records_lazily_and_yields_alerts_in_order() -> None:
    book = AlertBook(host="forge", channel="#ops")
    facts = replace(HEALTHY, lag_s=120.0, diverged=True, replica_missing=True)
    messages = book.observe(facts, T0)
    first = next(messages)
    assert first.dedup_key == f"restore-stale:forge:tasks:{int(T0)}"
    # Only the first observation is recorded until the caller asks for the next message.
    assert set(book.open) == {("stale", "tasks")}
    rest = list(messages)
    assert [m.dedup_key.split(":")[0] for m in rest] == ["restore-diverged"]
    assert set(book.open) == {("stale", "tasks"), ("diverged", "tasks")}
    assert [m.dedup_key for m in book.observe(facts, T0 + 10)] == [
        f"restore-replica_missing:forge:tasks:{int(T0 + 10)}"
    ]
    recovered = list(book.observe(HEALTHY, T0 + 70))
    assert len(recovered) == 3 and all("recovered" in m.text for m in recovered)
    assert not book.open


def test_alert_book_one_alert_per_incident_and_a_recovery() -> None:
    book = AlertBook(host="forge", channel="#ops")
    first = book.update("stale", "mission-control", True, T0, "lag 2m > 60s")
    assert first is not None and first.channel == "#ops" and first.kind == "alert"
    assert "mission-control" in first.text and "stale" in first.text
    assert book.update("stale", "mission-control", True, T0 + 10, "lag 3m") is None
    assert book.update("stale", "hivemind", False, T0 + 10, "") is None
    recovered = book.update("stale", "mission-control", False, T0 + 100, "lag 0.0s")
    assert recovered is not None and "recovered" in recovered.text
    assert recovered.dedup_key == first.dedup_key + ":recovered"
    again = book.update("stale", "mission-control", True, T0 + 200, "lag 2m")
    assert again is not None and again.dedup_key != first.dedup_key


def test_alert_book_survives_a_restart_without_realerting() -> None:
    book = AlertBook(host="forge", channel="#ops")
    assert book.update("replica_missing", "tasks", True, T0, "no LTX files") is not None
    reloaded = AlertBook(host="forge", channel="#ops")
    reloaded.load([*json.loads(json.dumps(book.to_json())), {"garbage": 1}])
    assert reloaded.update("replica_missing", "tasks", True, T0 + 60, "still") is None
    recovery = reloaded.update("replica_missing", "tasks", False, T0 + 90, "present")
    assert recovery is not None and recovery.dedup_key.endswith(f"{int(T0)}:recovered")


def test_alert_book_confirm_needs_consecutive_observations() -> None:
    book = AlertBook(host="forge", channel="#ops")
    assert book.update("replica_missing", "new-db", True, T0, "none", confirm=2) is None
    assert book.update("replica_missing", "new-db", False, T0 + 1, "ok", confirm=2) is None
    assert book.update("replica_missing", "new-db", True, T0 + 2, "none", confirm=2) is None
    opened = book.update("replica_missing", "new-db", True, T0 + 3, "none", confirm=2)
    assert opened is not None and opened.dedup_key.endswith(f":{int(T0 + 3)}")

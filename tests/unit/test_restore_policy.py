"""restore-loop's pure decisions: LTX listings, lag, stall detection, snapshot replacement and
the blob request cost (incidents: test_restore_incidents). Table-driven, no processes, no clock."""

from __future__ import annotations

import json

import pytest

from daemons.restore_loop.policy import (
    LtxFile,
    ReplicaView,
    RestartLog,
    StallWatch,
    diverged,
    format_age,
    lag_seconds,
    parse_ltx_json,
    parse_txid,
    should_replace,
    stall_threshold_s,
)

T0 = 1_800_000_000.0


def view(*files: tuple[int, int, float], level: int = 0) -> ReplicaView:
    return ReplicaView(tuple(LtxFile(level, lo, hi, 100, T0 + ts) for lo, hi, ts in files))


def test_parse_ltx_json_real_output_shape() -> None:
    text = json.dumps(
        [
            {
                "level": 0,
                "min_txid": "0000000000000001",
                "max_txid": "0000000000000001",
                "size": 587,
                "timestamp": "2026-11-23T21:43:38Z",
            },
            {
                "level": 1,
                "min_txid": "0000000000000002",
                "max_txid": "00000000000000ff",
                "size": 297,
                "timestamp": "2026-11-23T21:43:57.250Z",
            },
        ]
    )
    files = parse_ltx_json(text)
    assert [(f.level, f.min_txid, f.max_txid) for f in files] == [(0, 1, 1), (1, 2, 255)]
    assert files[1].timestamp - files[0].timestamp == pytest.approx(19.25)
    assert parse_ltx_json("[]") == []
    assert parse_ltx_json("null") == []


@pytest.mark.parametrize(
    "bad",
    ["not json", "{}", '[{"level": 0}]', '[{"min_txid": "zz", "max_txid": "1", "timestamp": "x"}]'],
)
def test_parse_ltx_json_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_ltx_json(bad)


def test_parse_txid() -> None:
    assert parse_txid("0000000000000010\n") == 16
    for bad in ("", "g", "1" * 17):
        with pytest.raises(ValueError):
            parse_txid(bad)


def test_replica_view_newest_and_applied() -> None:
    v = view((1, 1, 0), (2, 2, 5), (3, 3, 9), (1, 3, 9))
    assert v.newest_txid == 3 and v.newest_at == T0 + 9
    assert v.applied_at(2) == T0 + 5
    assert v.applied_at(None) is None
    assert v.oldest_unapplied_at(1) == T0 + 5
    assert v.oldest_unapplied_at(3) is None
    assert view().missing and view().newest_txid is None


@pytest.mark.parametrize(
    ("local", "now", "expected"),
    [
        (3, 20, 0.0),  # caught up
        (2, 20, 11.0),  # txid 3 written at +9 is missing
        (1, 20, 15.0),  # the oldest missing change (+5) is what is at risk
        (None, 20, 20.0),  # nothing applied: everything since the first file
        (5, 20, 0.0),  # ahead of a listing taken a moment ago
    ],
)
def test_lag_is_age_of_oldest_unapplied_change(
    local: int | None, now: float, expected: float
) -> None:
    v = view((1, 1, 0), (2, 2, 5), (3, 3, 9))
    assert lag_seconds(local, v, T0 + now) == pytest.approx(expected)


def test_stall_watch_detects_a_follower_that_stopped_while_the_replica_moves() -> None:
    w = StallWatch()
    threshold = stall_threshold_s(60, 1)
    assert threshold == 60
    assert w.observe(10, 10, 0.0, T0, threshold) is None  # caught up
    assert w.observe(10, 12, 1.0, T0 + 10, threshold) is None  # behind since +10
    assert w.observe(10, 30, 40.0, T0 + 50, threshold) is None
    assert w.observe(10, 40, 60.0, T0 + 70, threshold) == "stall"


def test_stall_watch_resets_on_progress_and_catch_up() -> None:
    w = StallWatch()
    assert w.observe(10, 12, 1.0, T0, 60) is None
    assert w.observe(11, 14, 1.0, T0 + 50, 60) is None  # advancing
    assert w.observe(12, 16, 1.0, T0 + 100, 60) is None
    assert w.observe(16, 16, 0.0, T0 + 200, 60) is None  # caught up clears behind_since
    assert w.observe(16, 17, 1.0, T0 + 210, 60) is None
    assert w.behind_since == T0 + 210


def test_stall_watch_flags_a_follower_that_advances_but_falls_behind() -> None:
    # The abs follower that applies one LTX file per poll: TXID moves, lag keeps growing.
    w = StallWatch()
    for i, lag in enumerate([5.0, 20.0, 40.0]):
        assert w.observe(100 + i, 500 + 10 * i, lag, T0 + 10 * i, 60) is None
    assert w.observe(104, 540, 61.0, T0 + 40, 60) == "falling_behind"


def test_stall_threshold_respects_slow_follow_intervals() -> None:
    assert stall_threshold_s(60, 15) == 60
    assert stall_threshold_s(30, 15) == 45


def test_restart_log_window() -> None:
    log = RestartLog(window_s=3600)
    for i in range(6):
        log.add(T0 + i * 600, "exit")
    assert log.recent(T0 + 3000) == 6
    assert log.recent(T0 + 3700) == 5
    assert log.total == 6


@pytest.mark.parametrize(
    ("new", "current", "expected"),
    [(5, None, True), (5, 5, True), (6, 5, True), (4, 5, False), (None, 5, False)],
)
def test_snapshot_never_replaces_with_an_older_copy(
    new: int | None, current: int | None, expected: bool
) -> None:
    assert should_replace(new, current) is expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.25, "0.2s"), (42, "42s"), (600, "10m"), (7200, "2.0h"), (3 * 86400, "3.0d")],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


def test_check_round_gives_up_after_a_batch_of_timeouts() -> None:
    from daemons.restore_loop.policy import CheckRound

    down = CheckRound(give_up_after=3)
    for _ in range(2):
        down.record(timed_out=True)
    assert not down.unreachable
    down.record(timed_out=True)
    assert down.unreachable and down.timeouts == 3
    up = CheckRound(give_up_after=2)
    up.record(timed_out=False)
    for _ in range(5):
        up.record(timed_out=True)
    assert not up.unreachable  # one listing answered: the endpoint is not down for all


@pytest.mark.parametrize(
    ("local", "replica", "expected"),
    [(5, 3, True), (5, 5, False), (3, 5, False), (None, 3, False), (5, None, False)],
)
def test_a_replica_behind_the_copy_is_divergence(
    local: int | None, replica: int | None, expected: bool
) -> None:
    assert diverged(local, replica) is expected


def test_stall_watch_restarts_a_copy_ahead_of_its_replica() -> None:
    # Replica reset/recreated: its newest TXID (2) is behind the copy's (9). That is not
    # "caught up": the follower must restart fresh, at once.
    watch = StallWatch()
    assert watch.observe(9, 2, 0.0, T0, 60.0) == "diverged"
    assert watch.observe(9, 9, 0.0, T0 + 1, 60.0) is None

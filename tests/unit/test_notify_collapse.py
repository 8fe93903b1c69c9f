"""The collapse plan as a pure function: plain rows and ``now`` in, the summaries to make out.

Each case names the pending alerts (channel, age, held), the summaries still waiting, and the
summaries the plan must make (channel, why, the alerts they fold, what they absorb).
No database, no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shared.notify.collapse import (
    ARRIVED_AT_ONCE,
    DELAYED_BY_OUTAGE,
    HELD_DURING_SILENCE,
    CollapsePlan,
    PendingAlert,
    WaitingSummary,
    plan_collapse,
    summary_text,
)
from shared.notify.message import OutboxRow

NOW = 1_750_000_000.0
STALE_S = 3600.0
BURST = 4


def row(
    id: int,
    channel: str = "#ops",
    *,
    age: float = 0.0,
    sink: str = "slack",
    text: str | None = None,
) -> OutboxRow:
    return OutboxRow(
        id=id,
        dedup_key=f"k{id}",
        sink=sink,
        channel=channel,
        kind="alert",
        text=f"alert {id} on {channel}" if text is None else text,
        payload={},
        daemon="test",
        created_at=NOW - age,
        attempts=0,
    )


def pending(
    id: int, channel: str = "#ops", *, age: float = 0.0, held: bool = False, sink: str = "slack"
) -> PendingAlert:
    return PendingAlert(row(id, channel, age=age, sink=sink), held)


def waiting(
    id: int,
    channel: str = "#ops",
    folded: tuple[int, ...] = (),
    *,
    attempts: int = 1,
    next_attempt_at: float = NOW + 60,
    sink: str = "slack",
) -> WaitingSummary:
    alerts = tuple(row(i, channel, age=7200, sink=sink) for i in folded)
    return WaitingSummary(id, sink, channel, attempts, next_attempt_at, alerts)


@dataclass(frozen=True)
class Expect:
    """One summary the plan must make."""

    channel: str
    why: str
    collapses: tuple[int, ...]
    regroups: tuple[int, ...] = ()
    absorbs: tuple[int, ...] = ()
    sink: str = "slack"


@dataclass(frozen=True)
class Case:
    alerts: list[PendingAlert]
    expect: list[Expect] = field(default_factory=list)
    waiting: list[WaitingSummary] = field(default_factory=list)
    release: tuple[int, ...] = ()


def plan(case: Case) -> CollapsePlan:
    return plan_collapse(case.alerts, case.waiting, NOW, stale_alert_s=STALE_S, burst=BURST)


CASES = {
    "nothing pending": Case([]),
    "one fresh alert goes out as itself": Case([pending(1)]),
    "exactly burst is not a burst": Case([pending(i) for i in (1, 2, 3, 4)]),
    "more than burst collapses them all": Case(
        [pending(i) for i in (1, 2, 3, 4, 5)],
        [Expect("#ops", ARRIVED_AT_ONCE, (1, 2, 3, 4, 5))],
    ),
    "a burst on one channel leaves the others alone": Case(
        [pending(1, "#dev"), *(pending(i) for i in (2, 3, 4, 5, 6)), pending(7, "#dev")],
        [Expect("#ops", ARRIVED_AT_ONCE, (2, 3, 4, 5, 6))],
    ),
    "same channel name on two sinks is two channels": Case(
        [pending(i, sink="slack") for i in (1, 2)] + [pending(i, sink="pager") for i in (3, 4)]
    ),
    "two held alerts become one silence summary; fresh news stays": Case(
        [pending(1, held=True), pending(2), pending(3, held=True)],
        [Expect("#ops", HELD_DURING_SILENCE, (1, 3))],
    ),
    "a lone held alert is released, not summarized": Case(
        [pending(1, held=True), pending(2, "#dev", held=True), pending(3, "#dev", held=True)],
        [Expect("#dev", HELD_DURING_SILENCE, (2, 3))],
        release=(1,),
    ),
    "a burst beats a silence and takes the held one along": Case(
        [pending(1, held=True), *(pending(i) for i in (2, 3, 4, 5))],
        [Expect("#ops", ARRIVED_AT_ONCE, (1, 2, 3, 4, 5))],
    ),
    "silence beats staleness": Case(
        [pending(1, age=7200), pending(2, age=7200), pending(3, held=True), pending(4, held=True)],
        [Expect("#ops", HELD_DURING_SILENCE, (3, 4))],
    ),
    "two stale alerts collapse, current news is not folded in": Case(
        [pending(1, age=7200), pending(2, age=STALE_S + 1), pending(3, age=10)],
        [Expect("#ops", DELAYED_BY_OUTAGE, (1, 2))],
    ),
    "one stale alert goes out as itself": Case([pending(1, age=7200), pending(2)]),
    "exactly stale_alert_s old is not stale yet": Case(
        [pending(1, age=STALE_S), pending(2, age=STALE_S)]
    ),
    "a waiting summary absorbs even one fresh alert": Case(
        [pending(5)],
        [Expect("#ops", DELAYED_BY_OUTAGE, (5,), regroups=(1, 2), absorbs=(3,))],
        waiting=[waiting(3, "#ops", (1, 2))],
    ),
    "a waiting summary absorbs held and stale alerts too": Case(
        [pending(5, held=True), pending(6, age=7200)],
        [Expect("#ops", DELAYED_BY_OUTAGE, (5, 6), regroups=(1,), absorbs=(2,))],
        waiting=[waiting(2, "#ops", (1,))],
    ),
    "a waiting summary on another channel absorbs nothing here": Case(
        [pending(5)], waiting=[waiting(3, "#dev", (1, 2))]
    ),
    "a waiting summary with no new alerts is left as it is": Case(
        [], waiting=[waiting(3, "#ops", (1, 2))]
    ),
    "two waiting summaries are absorbed into one": Case(
        [pending(9)],
        [Expect("#ops", DELAYED_BY_OUTAGE, (9,), regroups=(1, 2, 4), absorbs=(3, 5))],
        waiting=[waiting(5, "#ops", (4,)), waiting(3, "#ops", (1, 2))],
    ),
    "channels are planned oldest pending alert first, whatever the input order": Case(
        [
            *(pending(i, "#b") for i in (9, 8, 7, 6, 5)),
            *(pending(i, "#a") for i in (10, 2, 3, 4, 11)),
        ],
        [
            Expect("#a", ARRIVED_AT_ONCE, (2, 3, 4, 10, 11)),
            Expect("#b", ARRIVED_AT_ONCE, (5, 6, 7, 8, 9)),
        ],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan(case: Case) -> None:
    result = plan(case)
    got = [
        Expect(s.channel, s.why, s.collapses, s.regroups, s.absorbs, s.sink)
        for s in result.summaries
    ]
    assert got == case.expect
    assert result.release == case.release


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_alert_ends_in_at_most_one_summary_and_only_alerts_it_was_given(
    case: Case,
) -> None:
    result = plan(case)
    folded = [i for s in result.summaries for i in s.collapses]
    assert len(folded) == len(set(folded))
    assert set(folded) <= {a.row.id for a in case.alerts}
    assert not set(folded) & set(result.release)
    for summary in result.summaries:
        assert summary.text.startswith(f"[summary] {len(summary.alert_ids)} alerts {summary.why}")
        assert summary.created_at == NOW


def test_the_plan_is_a_function_of_its_inputs() -> None:
    case = CASES["two waiting summaries are absorbed into one"]
    assert plan(case) == plan(case)
    assert plan(case) == plan(Case(list(reversed(case.alerts)), waiting=case.waiting[::-1]))


def test_absorbing_summary_keeps_the_latest_backoff_and_a_key_unique_to_what_it_absorbed() -> None:
    result = plan_collapse(
        [pending(7), pending(8)],
        [
            waiting(3, folded=(1, 2), attempts=4, next_attempt_at=NOW + 300),
            waiting(5, folded=(4,), attempts=2, next_attempt_at=NOW + 900),
        ],
        NOW,
        stale_alert_s=STALE_S,
        burst=BURST,
    )
    [summary] = result.summaries
    assert (summary.attempts, summary.next_attempt_at) == (4, NOW + 900)
    assert summary.dedup_key == "summary:slack:#ops:1-8:5:after5"
    assert summary.alert_ids == (1, 2, 4, 7, 8)


@pytest.mark.parametrize(
    ("alerts", "key"),
    [
        ([pending(i) for i in (4, 5, 6, 7, 8)], "summary:slack:#ops:4-8:5"),
        ([pending(2, held=True), pending(9, held=True)], "summary:slack:#ops:2-9:2"),
        ([pending(i, "#x", sink="pager") for i in (1, 2, 3, 4, 5)], "summary:pager:#x:1-5:5"),
    ],
)
def test_new_summary_starts_fresh_with_a_key_naming_its_span(
    alerts: list[PendingAlert], key: str
) -> None:
    [summary] = plan_collapse(alerts, [], NOW, stale_alert_s=STALE_S, burst=BURST).summaries
    assert summary.dedup_key == key
    assert (summary.attempts, summary.next_attempt_at) == (0, 0.0)


# the summary text --------------------------------------------------------------------------
def test_summary_text_counts_spans_and_lists_first_lines() -> None:
    rows = [
        row(1, age=7200, text="disk 91% on pi-orch\ndetails nobody needs here"),
        row(2, age=3600, text="x" * 300),
        row(3, age=0, text=""),
    ]
    assert summary_text(rows, DELAYED_BY_OUTAGE).split("\n") == [
        "[summary] 3 alerts delayed by an outage (2025-06-15 13:06:40Z .. 2025-06-15 15:06:40Z):",
        "• disk 91% on pi-orch",
        "• " + "x" * 200,
        "• ",
    ]


@pytest.mark.parametrize(("count", "listed", "more"), [(10, 10, None), (11, 10, 1), (25, 10, 15)])
def test_summary_text_lists_at_most_ten_then_says_how_many_more(
    count: int, listed: int, more: int | None
) -> None:
    lines = summary_text([row(i) for i in range(1, count + 1)], ARRIVED_AT_ONCE).split("\n")
    assert lines[0].startswith(f"[summary] {count} alerts arrived at once (")
    assert [line for line in lines if line.startswith("• ")] == [
        f"• alert {i} on #ops" for i in range(1, listed + 1)
    ]
    assert lines[-1] == (f"…and {more} more" if more else f"• alert {listed} on #ops")

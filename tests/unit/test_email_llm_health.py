"""The classifier-health window and its incident (daemons/email_reactor/llm_health.py): the
share of malformed answers over the last hour, one alert per incident, one recovery, a bounded
window, state that survives a restart, and #ops texts that escape what the config says."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from daemons.email_reactor.config import EmailReactorSection
from daemons.email_reactor.llm_health import (
    BUCKET_S,
    WINDOW_S,
    AnswerWindow,
    HealthEvent,
    LLMHealth,
    event_message,
)
from daemons.email_reactor.manifest import MANIFEST, malformed_share_expr

T0 = 29_666_667 * 60.0  # 2026-05-28, on a minute boundary
MODEL = "mlx-community/Qwen2.5-Coder-32B-Instruct-4bit"


def fed(answers: list[bool], start: float = T0, step: float = 10.0) -> LLMHealth:
    """An LLMHealth that saw ``answers`` (True: malformed), ``step`` seconds apart."""
    health = LLMHealth(MODEL)
    for i, malformed in enumerate(answers):
        health.record(start + i * step, malformed)
    return health


@pytest.mark.parametrize(
    ("answers", "min_answers", "opens"),
    [
        ([True] * 4, 5, False),  # one bad night-time burst below min_answers: no page
        ([True] * 5, 5, True),
        ([True, False] * 5, 5, False),  # exactly the threshold is not above it
        ([True] * 6 + [False] * 4, 5, True),
        ([False] * 20, 5, False),
        ([True], 1, True),
    ],
)
def test_an_incident_opens_above_the_share_with_enough_answers(
    answers: list[bool], min_answers: int, opens: bool
) -> None:
    health = fed(answers)
    event = health.evaluate(T0 + 300, 0.5, min_answers)
    assert (event is not None) == opens
    if event is not None:
        assert event.kind == "malformed" and event.answers == len(answers)
        assert event.malformed == sum(answers) and health.incident_at == T0 + 300


def test_one_alert_per_incident_then_one_recovery() -> None:
    health = fed([True] * 10)
    first = health.evaluate(T0 + 100, 0.5, 5)
    assert first is not None and first.kind == "malformed"
    for t in range(200, 2000, 100):  # still malformed: the incident stays open, silent
        health.record(T0 + t, True)
        assert health.evaluate(T0 + t, 0.5, 5) is None
    for i in range(40):  # fixed: good answers outweigh the bad ones of the hour
        health.record(T0 + 2000 + i, False)
    back = health.evaluate(T0 + 2100, 0.5, 5)
    assert back is not None and back.kind == "recovered"
    assert back.incident_at == first.incident_at and back.at == T0 + 2100
    assert (back.malformed, back.answers) == (28, 68)
    assert health.incident_at is None
    assert health.evaluate(T0 + 2200, 0.5, 5) is None, "recovered once"


def test_a_quiet_hour_proves_nothing_and_old_answers_age_out() -> None:
    health = fed([True] * 10)
    assert health.evaluate(T0 + 100, 0.5, 5) is not None
    later = T0 + WINDOW_S + 2 * BUCKET_S
    assert health.window.counts(later) == (0, 0)
    assert health.share(later) == 0.0
    assert health.evaluate(later, 0.5, 5) is None, "no answers: the incident stays open"
    assert health.incident_at is not None
    for i in range(5):
        health.record(later + i, False)
    event = health.evaluate(later + 10, 0.5, 5)
    assert event is not None and event.kind == "recovered" and event.answers == 5


def test_the_window_is_the_last_hour_to_the_minute() -> None:
    window = AnswerWindow()
    window.record(T0, True)  # minute [T0, T0 + 60)
    window.record(T0 + 30, False)
    assert window.counts(T0 + WINDOW_S) == (2, 1), "the minute still overlaps the hour"
    assert window.counts(T0 + WINDOW_S + BUCKET_S) == (0, 0)


def test_memory_is_bounded_whatever_the_volume() -> None:
    window = AnswerWindow()
    for i in range(50_000):  # five hours of answers, one every 0.36 s
        window.record(T0 + i * 0.36, i % 3 == 0)
        assert len(window.buckets) <= WINDOW_S // BUCKET_S + 1
    answers, malformed = window.counts(T0 + 49_999 * 0.36)
    # the hour, plus at most the minute it began in
    assert 10_000 <= answers <= (WINDOW_S + BUCKET_S) / 0.36
    assert abs(malformed / answers - 1 / 3) < 0.01


def test_a_clock_stepping_back_drops_minutes_from_the_future() -> None:
    window = AnswerWindow()
    window.record(T0 + 7200, True)
    window.record(T0, False)
    assert window.counts(T0) == (1, 0)
    assert len(window.buckets) == 1


def test_state_survives_a_restart_as_json() -> None:
    health = fed([True] * 8)
    health.evaluate(T0 + 100, 0.5, 5)
    data = json.loads(json.dumps(health.to_json()))
    again = LLMHealth.from_json(data, MODEL)
    assert again.incident_at == health.incident_at
    assert again.window.counts(T0 + 100) == (8, 8)
    assert again.evaluate(T0 + 200, 0.5, 5) is None, "the open incident is not re-alerted"


def test_another_models_window_is_dropped_but_its_incident_kept() -> None:
    health = fed([True] * 8)
    health.evaluate(T0 + 100, 0.5, 5)
    other = LLMHealth.from_json(health.to_json(), "example-org/fixed-model")
    assert other.window.buckets == {} and other.incident_at == T0 + 100
    for i in range(5):
        other.record(T0 + 200 + i, False)
    event = other.evaluate(T0 + 300, 0.5, 5)
    assert event is not None and event.kind == "recovered"


@pytest.mark.parametrize(
    "data",
    [
        None,
        "garbage",
        [],
        {"model": MODEL, "incident_at": "yesterday", "buckets": "x"},
        {"model": MODEL, "incident_at": float("nan"), "buckets": []},
        {"model": MODEL, "incident_at": True, "buckets": [[1, 2], [1, 1, 5], "x", [1, -1, 0]]},
    ],
)
def test_an_unreadable_state_starts_fresh(data: object) -> None:
    health = LLMHealth.from_json(data, MODEL)
    assert health.incident_at is None and health.window.buckets == {}


def test_the_alert_escapes_the_model_and_hides_url_credentials() -> None:
    # Credentials in the URL itself are refused when the config loads (issue 14); a key in
    # the query string is allowed and must still stay out of Slack.
    with pytest.raises(ValidationError, match="credentials") as info:
        EmailReactorSection(llm_url="http://user:secret@10.0.0.2:11435/v1/chat/completions")
    assert "secret" not in str(info.value.errors(include_input=False))
    section = EmailReactorSection(
        llm_model="evil/<!channel> & <https://example.com|click>",
        llm_url="http://10.0.0.2:11435/v1/chat/completions?key=abc",
    )
    event = HealthEvent("malformed", T0, T0, 12, 12, 0.5)
    msg = event_message(event, section, "#ops")
    assert msg.channel == "#ops" and msg.kind == "alert" and msg.daemon == "email-reactor"
    assert msg.dedup_key == f"llm-malformed:{int(T0)}"
    assert "<" not in msg.text and ">" not in msg.text
    # escaped and defanged (shared.notify.escape): no mention, no live link
    assert "evil/&lt;!channel&gt; &amp; &lt;hxxps[:]//example[.]com|click&gt;" in msg.text
    assert "secret" not in msg.text and "key=abc" not in msg.text
    assert "hxxp[:]//10.0.0.2:11435/v1/chat/completions" in msg.text
    assert "100% of the last hour's answers (12 of 12)" in msg.text
    assert "YES or NO" in msg.text and "llm_malformed" in msg.text
    back = event_message(HealthEvent("recovered", T0, T0 + 1800, 40, 10, 0.5), section, "#ops")
    assert back.dedup_key == f"llm-recovered:{int(T0)}"
    assert "25% of the last hour's answers (10 of 40)" in back.text
    assert "lasted 30 min" in back.text


def test_the_prometheus_rules_take_their_thresholds_from_the_section() -> None:
    section = EmailReactorSection(
        malformed_alert_share=0.3, malformed_alert_min_answers=9, stale_after_h=4
    )
    expr = malformed_share_expr(section)
    assert "> 0.3 and " in expr and expr.endswith(">= 9")
    assert expr.count("fleet_email_llm_requests_total") == 3
    rules = {r.name: r for r in MANIFEST.alerts(section)}
    assert rules["FleetEmailLLMMalformed"].expr == expr
    assert rules["FleetEmailStale"].expr == "fleet_email_stale > 0"
    assert "past 4 h" in rules["FleetEmailStale"].summary


def test_the_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="malformed_alert_share"):
        EmailReactorSection(malformed_alert_share=1.5)
    with pytest.raises(ValueError, match="malformed_alert_min_answers"):
        EmailReactorSection(malformed_alert_min_answers=0)

"""The classifier's health over the last hour: a sliding window of its answers (well-formed or
malformed) and the incident it opens when the malformed share is above ``malformed_alert_share``
with at least ``malformed_alert_min_answers`` answers: one #ops alert when it opens, one
recovery message when the share is back at or below the threshold. (The seed's reasoning-model
bug: a model that answered malformed every time silently filed every unknown sender llm_no.)

An answer is one request that got a reply (what ``fleet_email_llm_requests_total`` counts as
yes, no or malformed; the strict retry is a second answer), so the daemon's share and the
Prometheus rule measure the same thing. The window keeps per-minute counts, at most 61 of them
whatever the mail volume. Pure: plain data and ``now`` in, messages and JSON out; this module
must never read a file, the clock or the network (the daemon persists ``to_json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import isfinite
from typing import Any, Literal

from daemons.email_reactor.config import EmailReactorSection
from shared.notify import Message
from shared.notify.escape import slack_text
from shared.timestamps import format_iso
from shared.urls import redact_url

__all__ = [
    "BUCKET_S",
    "STATE_FILE",
    "WINDOW_S",
    "AnswerWindow",
    "HealthEvent",
    "LLMHealth",
    "config_message",
    "event_message",
]

WINDOW_S = 3600
BUCKET_S = 60
STATE_FILE = "llm-health.json"  # under [email_reactor] state_dir: LLMHealth.to_json()


@dataclass
class AnswerWindow:
    """Answers of the last hour as per-minute counts: minute index -> (answers, malformed).
    A minute counts while any part of it lies in the hour before ``now``."""

    buckets: dict[int, tuple[int, int]] = field(default_factory=dict)

    @staticmethod
    def _span(now: float) -> tuple[int, int]:
        return int((now - WINDOW_S) // BUCKET_S), int(now // BUCKET_S)

    def prune(self, now: float) -> None:
        """Forget minutes outside the hour before ``now`` (also after the clock stepped back)."""
        first, last = self._span(now)
        for minute in [m for m in self.buckets if not first <= m <= last]:
            del self.buckets[minute]

    def record(self, now: float, malformed: bool) -> None:
        minute = int(now // BUCKET_S)
        answers, bad = self.buckets.get(minute, (0, 0))
        self.buckets[minute] = (answers + 1, bad + int(malformed))
        self.prune(now)

    def counts(self, now: float) -> tuple[int, int]:
        """(answers, malformed) in the hour before ``now``."""
        self.prune(now)
        return (
            sum(a for a, _ in self.buckets.values()),
            sum(m for _, m in self.buckets.values()),
        )


@dataclass(frozen=True)
class HealthEvent:
    """An incident opened (``malformed``) or closed (``recovered``); ``incident_at`` is when it
    opened (its identity in dedup keys)."""

    kind: Literal["malformed", "recovered"]
    incident_at: float
    at: float
    answers: int
    malformed: int
    threshold: float

    @property
    def share(self) -> float:
        return self.malformed / self.answers if self.answers else 0.0


@dataclass
class LLMHealth:
    """The window of one model's answers and its open incident (None: none open)."""

    model: str
    window: AnswerWindow = field(default_factory=AnswerWindow)
    incident_at: float | None = None

    def record(self, now: float, malformed: bool) -> None:
        self.window.record(now, malformed)

    def share(self, now: float) -> float:
        """Malformed answers / answers in the last hour (0.0 with no answers)."""
        answers, malformed = self.window.counts(now)
        return malformed / answers if answers else 0.0

    def evaluate(self, now: float, threshold: float, min_answers: int) -> HealthEvent | None:
        """Open or close the incident. With fewer than ``min_answers`` answers nothing changes
        either way: one bad answer at 03:00 does not page, and a quiet hour proves no recovery."""
        answers, malformed = self.window.counts(now)
        if answers < min_answers:
            return None
        above = malformed / answers > threshold
        if self.incident_at is None and above:
            self.incident_at = now
            return HealthEvent("malformed", now, now, answers, malformed, threshold)
        if self.incident_at is not None and not above:
            opened, self.incident_at = self.incident_at, None
            return HealthEvent("recovered", opened, now, answers, malformed, threshold)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "incident_at": self.incident_at,
            "buckets": [[m, a, b] for m, (a, b) in sorted(self.window.buckets.items())],
        }

    @classmethod
    def from_json(cls, data: object, model: str) -> LLMHealth:
        """The saved state for ``model``. Unreadable parts are dropped (a lost window only
        delays an alert; a lost incident can repeat one). Another model's answers say nothing
        about this one: its window is dropped, its open incident kept (it closes with one
        recovery once this model answers well)."""
        health = cls(model)
        if not isinstance(data, dict):
            return health
        opened = data.get("incident_at")
        if isinstance(opened, int | float) and not isinstance(opened, bool) and isfinite(opened):
            health.incident_at = float(opened)
        buckets = data.get("buckets")
        if data.get("model") != model or not isinstance(buckets, list):
            return health
        for item in buckets:
            if (
                isinstance(item, list)
                and len(item) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) for x in item)
                and 0 <= item[2] <= item[1]
            ):
                health.window.buckets[item[0]] = (item[1], item[2])
        return health


def _who(section: EmailReactorSection) -> str:
    """The classifier for #ops: its URL without credentials or query, both escaped."""
    model, url = slack_text(section.llm_model, 120), slack_text(redact_url(section.llm_url), 160)
    return f"model {model} at {url}"


def config_message(
    status: int | None, section: EmailReactorSection, channel: str, day: str
) -> Message:
    """The #ops message (once a day per status) for an LLM answering 401/403/404."""
    text = (
        f"[email-reactor] the LLM classifier answers HTTP {status} for {_who(section)}: wrong "
        "model name or key? Unknown-sender mail waits and is retried; after llm_max_attempts "
        f"cycles on_unreachable={section.on_unreachable} decides."
    )
    return Message(channel, text, f"llm-config:{status}:{day}", daemon="email-reactor")


def event_message(event: HealthEvent, section: EmailReactorSection, channel: str) -> Message:
    """The #ops message for ``event``; the model name and URL are escaped (untrusted)."""
    who = _who(section)
    counts = f"{event.share:.0%} of the last hour's answers ({event.malformed} of {event.answers})"
    incident = int(event.incident_at)
    if event.kind == "malformed":
        text = (
            f"[email-reactor] :warning: the LLM classifier answers malformed: {counts}, above "
            f"malformed_alert_share {event.threshold:.0%}, from {who}. Unknown-sender mail "
            "whose answer is still malformed after the strict retry is filed llm_no "
            "(reason llm_malformed: no task, no push). Check that the model answers exactly YES "
            "or NO (a reasoning model's think preamble or null content, its chat template, "
            "llm_max_tokens); `fleet email explain ID --ask` shows one answer. Afterwards "
            "review the mail decided llm_malformed (audit.jsonl)."
        )
        return Message(channel, text, f"llm-malformed:{incident}", daemon="email-reactor")
    since = format_iso(datetime.fromtimestamp(event.incident_at, UTC))
    minutes = max(0, round((event.at - event.incident_at) / 60))
    text = (
        f"[email-reactor] :large_green_circle: the LLM classifier answers well again: {counts} "
        f"malformed, from {who}. The incident began {since} and lasted {minutes} min. Mail "
        "decided llm_malformed meanwhile stays llm_no: review it (audit.jsonl)."
    )
    return Message(channel, text, f"llm-recovered:{incident}", daemon="email-reactor")

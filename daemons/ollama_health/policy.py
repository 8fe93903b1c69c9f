"""Health policy: probe results through failure/recovery thresholds, the manual override merged
on top, failover-rule activation, and the #ops alert for each transition.

Pure functions of data and ``now`` (no I/O, no clock reads). A host changes state only after
``failure_threshold`` failed or ``recovery_threshold`` good probes in a row, so one lost probe
never flips routing; with no history a good probe decides directly, while failed ones leave it
unknown (routed as down) and alert only once ``failure_threshold`` is met. This module
must never send or write anything: it returns what changed and the messages to enqueue.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from daemons.ollama_health.table import FailoverRule
from shared.notify import Message
from shared.notify.escape import slack_text

__all__ = [
    "MAX_OVERRIDE_BYTES",
    "HostState",
    "Override",
    "OverrideEntry",
    "OverrideError",
    "RuleChange",
    "Transition",
    "alert_channel",
    "config_error_alert",
    "describe_duration",
    "effective_health",
    "format_iso",
    "host_alert",
    "link_error_alert",
    "observe",
    "override_error_alert",
    "parse_iso",
    "parse_override",
    "rule_alert",
    "rule_changes",
]

DAEMON = "ollama-health"
MAX_OVERRIDE_BYTES = 64 * 1024


def format_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: Any) -> float | None:
    """ISO-8601 text (``Z`` or an offset; naive means UTC) or epoch seconds -> epoch, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def describe_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


# thresholds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostState:
    """What the monitor remembers about one host between cycles (probes only, no override)."""

    healthy: bool | None = None  # None: never probed, or only failed below the threshold
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    since: float | None = None  # when ``healthy`` last changed
    last_error: str | None = None  # the latest probe error, kept through a recovery

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "consecutive_failures": self.consecutive_failures,
            "consecutive_successes": self.consecutive_successes,
            "since": self.since,
            "last_error": self.last_error,
        }

    @classmethod
    def from_json(cls, raw: Any) -> HostState | None:
        """A remembered state from the memory file, or None when it is not one."""
        if not isinstance(raw, Mapping):
            return None
        healthy = raw.get("healthy")
        fails = raw.get("consecutive_failures", 0)
        oks = raw.get("consecutive_successes", 0)
        since = raw.get("since")
        error = raw.get("last_error")
        if (
            not (healthy is None or isinstance(healthy, bool))
            or not isinstance(fails, int)
            or not isinstance(oks, int)
            or not (since is None or isinstance(since, int | float))
            or not (error is None or isinstance(error, str))
        ):
            return None
        return cls(
            healthy=healthy,
            consecutive_failures=max(0, fails),
            consecutive_successes=max(0, oks),
            since=float(since) if since is not None else None,
            last_error=error,
        )


@dataclass(frozen=True)
class Transition:
    host: str
    to: Literal["down", "up"]
    at: float
    error: str | None  # down: the probe error; up: the last error of the outage
    failures: int = 0  # down: failed probes in a row when it went down
    outage_s: float | None = None  # up: how long the host was down
    down_since: float | None = None  # up: when the outage began (dedup key)


def observe(
    state: HostState,
    ok: bool,
    error: str | None,
    now: float,
    *,
    host: str,
    failure_threshold: int,
    recovery_threshold: int,
) -> tuple[HostState, Transition | None]:
    """Fold one probe result into ``state``; return the new state and a transition, if any."""
    if ok:
        state = replace(
            state, consecutive_failures=0, consecutive_successes=state.consecutive_successes + 1
        )
        if state.healthy is None:
            return replace(state, healthy=True, since=now), None
        if not state.healthy and state.consecutive_successes >= recovery_threshold:
            began = state.since if state.since is not None else now
            transition = Transition(
                host=host,
                to="up",
                at=now,
                error=state.last_error,
                outage_s=now - began,
                down_since=began,
            )
            return replace(state, healthy=True, since=now), transition
        return state, None
    state = replace(
        state,
        consecutive_failures=state.consecutive_failures + 1,
        consecutive_successes=0,
        last_error=error,
    )
    # No history: routing already treats the host as down (effective_health), but the alert
    # waits for the threshold like any other outage, so a restart without memory cannot page.
    if state.healthy is not False and state.consecutive_failures >= failure_threshold:
        return replace(state, healthy=False, since=now), Transition(
            host=host, to="down", at=now, error=error, failures=state.consecutive_failures
        )
    return state, None


# override --------------------------------------------------------------------------------------
class OverrideError(ValueError):
    """The override file is unusable; it is ignored as a whole (never half-applied)."""


@dataclass(frozen=True)
class OverrideEntry:
    healthy: bool
    expires_at: float | None = None


@dataclass(frozen=True)
class Override:
    """The override file's host entries (those with a boolean ``healthy``)."""

    entries: Mapping[str, OverrideEntry] = field(default_factory=dict)
    unknown_hosts: tuple[str, ...] = ()

    def active(self, now: float) -> dict[str, bool]:
        return {
            host: entry.healthy
            for host, entry in self.entries.items()
            if entry.expires_at is None or entry.expires_at > now
        }

    def expired(self, now: float) -> list[str]:
        return [
            host
            for host, entry in self.entries.items()
            if entry.expires_at is not None and entry.expires_at <= now
        ]

    def expires_at(self, now: float) -> float | None:
        """When the first active entry ends (None: some entry never does, or none active)."""
        ends = [e.expires_at for h, e in self.entries.items() if h in self.active(now)]
        if not ends or any(end is None for end in ends):
            return None
        return min(end for end in ends if end is not None)


def _expiry(raw: Any, path: str) -> float | None:
    if raw is None:
        return None
    try:
        parsed = parse_iso(raw)
        if parsed is not None and math.isfinite(parsed):
            format_iso(parsed)  # the status file shows it; must be a representable time
    except (ValueError, OverflowError, OSError):
        parsed = math.inf
    if parsed is None:
        raise OverrideError(f"{path}: not an ISO-8601 time or epoch seconds: {raw!r}")
    if not math.isfinite(parsed):
        raise OverrideError(f"{path}: {raw!r} is out of range (epoch seconds, not milliseconds)")
    return parsed


def parse_override(text: str, hosts: Mapping[str, Any]) -> Override:
    """Parse the override file (the seed's ``{"forge": {"healthy": false, "override": true}}``).

    Every host entry with a boolean ``healthy`` forces that host's health, unless it says
    ``"override": false``; ``expires_at`` (top level or per host) ends it. Entries for hosts
    not in ``hosts`` are listed as unknown and ignored; anything else malformed raises."""
    if len(text.encode("utf-8", errors="replace")) > MAX_OVERRIDE_BYTES:
        raise OverrideError(f"larger than {MAX_OVERRIDE_BYTES} bytes")
    if not text.strip():
        return Override()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise OverrideError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise OverrideError(f"must be a JSON object, got {type(doc).__name__}")
    default_expiry = _expiry(doc.get("expires_at"), "expires_at")
    entries: dict[str, OverrideEntry] = {}
    unknown: list[str] = []
    for name, raw in doc.items():
        if name == "expires_at" or name.startswith("_"):
            continue
        if not isinstance(raw, dict):
            raise OverrideError(f'{name}: must be an object like {{"healthy": false}}')
        if raw.get("override") is False:
            continue
        healthy = raw.get("healthy")
        if not isinstance(healthy, bool):
            raise OverrideError(f"{name}.healthy: must be true or false, got {healthy!r}")
        if "override" in raw and not isinstance(raw["override"], bool):
            raise OverrideError(f"{name}.override: must be true or false")
        expiry = _expiry(raw.get("expires_at"), f"{name}.expires_at")
        if name not in hosts:
            unknown.append(name)
            continue
        entries[name] = OverrideEntry(
            healthy=healthy, expires_at=expiry if expiry is not None else default_expiry
        )
    return Override(entries=entries, unknown_hosts=tuple(unknown))


def effective_health(
    states: Mapping[str, HostState], forced: Mapping[str, bool]
) -> dict[str, bool]:
    """Health as routing sees it: the override wins; a never-probed host counts as down."""
    return {
        name: forced[name] if name in forced else bool(state.healthy)
        for name, state in states.items()
    }


# rules -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleChange:
    rule: str
    activated: bool
    at: float
    since: float  # when the rule became active (dedup key of both alerts)


def rule_changes(
    previous: Mapping[str, float], active: set[str], now: float
) -> tuple[dict[str, float], list[RuleChange]]:
    """Compare the active rules (name -> active since) with this cycle's set."""
    current: dict[str, float] = {}
    changes: list[RuleChange] = []
    for rule in sorted(active):
        if rule in previous:
            current[rule] = previous[rule]
        else:
            current[rule] = now
            changes.append(RuleChange(rule, True, now, now))
    for rule in sorted(set(previous) - active):
        changes.append(RuleChange(rule, False, now, previous[rule]))
    return current, changes


# alerts ----------------------------------------------------------------------------------------
def host_alert(
    transition: Transition,
    *,
    channel: str,
    monitor_host: str,
    role: str,
    forced: bool | None,
) -> Message:
    """#ops message for a host going down or coming back. One per transition (dedup key)."""
    name = transition.host
    shown = slack_text(name, 80)
    label = f"{shown} ({slack_text(role, 40)})" if role else shown
    error = slack_text(transition.error, 300) if transition.error else None
    forced_note = ""
    if forced is not None:
        forced_note = f" Note: the override file forces {shown} {'healthy' if forced else 'down'}."
    if transition.to == "down":
        text = (
            f"[ollama-health@{monitor_host}] :red_circle: {label} is DOWN: "
            f"{error or 'probe failed'} ({transition.failures} failed probe(s) in a row,"
            f" since {format_iso(transition.at)}).{forced_note}"
        )
        key = f"ollama-down:{name}:{int(transition.at)}"
    else:
        text = (
            f"[ollama-health@{monitor_host}] :large_green_circle: {label} recovered after "
            f"{describe_duration(transition.outage_s or 0)} down"
            f" (last error: {error or 'none recorded'}).{forced_note}"
        )
        key = f"ollama-up:{name}:{int(transition.down_since or transition.at)}"
    return Message(channel=channel, text=text, dedup_key=key, kind="alert", daemon=DAEMON)


def rule_alert(
    change: RuleChange,
    rule: FailoverRule,
    *,
    channel: str,
    monitor_host: str,
    redirects: Mapping[str, str],
    forced: bool,
) -> Message:
    """#ops message for a failover rule turning on or off. ``redirects``: tier -> destination
    (a host, ``claude`` or ``unavailable``) at the time of the change."""
    why = " (forced by the override file)" if forced else ""
    rule_name, source = slack_text(rule.name, 80), slack_text(rule.source, 80)
    if change.activated:
        where = (
            ", ".join(
                f"{slack_text(tier, 40)}->{slack_text(dest, 80)}"
                for tier, dest in sorted(redirects.items())
            )
            or "-"
        )
        text = (
            f"[ollama-health@{monitor_host}] failover rule {rule_name} ACTIVATED{why}: "
            f"{source} unhealthy; tiers {where}."
        )
        key = f"ollama-rule-on:{rule.name}:{int(change.since)}"
    else:
        text = (
            f"[ollama-health@{monitor_host}] failover rule {rule_name} cleared after "
            f"{describe_duration(change.at - change.since)}: tiers "
            f"{', '.join(slack_text(t, 40) for t in rule.tiers)} are back on {source}."
        )
        key = f"ollama-rule-off:{rule.name}:{int(change.since)}"
    return Message(channel=channel, text=text, dedup_key=key, kind="alert", daemon=DAEMON)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def config_error_alert(
    error: str, *, path: str, channel: str, monitor_host: str, since: float
) -> Message:
    """``since``: when this error episode began (the file last turned unusable)."""
    text = (
        f"[ollama-health@{monitor_host}] tier routing file {path} is unusable: "
        f"{slack_text(error, 300)}. "
        "Probing and routing continue with the last good version; fix the file."
    )
    return Message(
        channel=channel,
        text=text,
        dedup_key=f"ollama-config-error:{_digest(path + error)}:{int(since)}",
        kind="alert",
        daemon=DAEMON,
    )


def override_error_alert(
    error: str, *, path: str, channel: str, monitor_host: str, since: float
) -> Message:
    """``since``: when this error episode began (the file last turned unusable)."""
    text = (
        f"[ollama-health@{monitor_host}] override file {path} ignored: "
        f"{slack_text(error, 300)}. "
        "No manual failover is in effect until it is fixed or removed."
    )
    return Message(
        channel=channel,
        text=text,
        dedup_key=f"ollama-override-error:{_digest(path + error)}:{int(since)}",
        kind="alert",
        daemon=DAEMON,
    )


def link_error_alert(
    error: str, *, link: str, target: str, channel: str, monitor_host: str, since: float
) -> Message:
    """The legacy status path cannot carry the daemon's link (another user's file is there,
    or the link cannot be made). ``since``: when this episode began."""
    text = (
        f"[ollama-health@{monitor_host}] legacy status path {link} is not "
        f"published: {slack_text(error, 300)}. Routers reading {link} may see "
        f"stale or forged routing; the real status is {target}. "
        "Once the path is free the daemon publishes its link there within one interval."
    )
    return Message(
        channel=channel,
        text=text,
        dedup_key=f"ollama-link-error:{_digest(link + error)}:{int(since)}",
        kind="alert",
        daemon=DAEMON,
    )


def alert_channel(channel: str, *, ops_channel: str, ceo_channel: str) -> str:
    """Where an alert may go: a channel ``[slack]`` configures (ops, ceo) as named; any other
    (a row restored from the memory file, however it got there) goes to the ops channel."""
    return channel if channel in (ops_channel, ceo_channel) else ops_channel

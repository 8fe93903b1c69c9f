"""Heartbeat decisions, pure functions of plain data and ``now``: the peer incident state
machine (alert, escalate, recover), the "two primaries" check, the host's fleet verdict for
/health, which ping URL to hit, and the alert texts with their dedup keys.

Incident rules: ``alert_after`` consecutive failed probes open an incident and alert #ops once;
``escalate_after`` consecutive failures escalate once; the incident closes only after
``recovery_after`` consecutive good probes, with one recovery message naming the outage length.
A flapping peer (good probes that do not hold) stays in its incident, so it never re-alerts.
Nothing here does I/O, reads a clock or knows a URL's secret.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from shared.epochs import Epoch
from shared.heartbeats import HeartbeatStatus
from shared.notify import Message
from shared.notify.escape import slack_text
from shared.roles import Role

__all__ = [
    "EventKind",
    "FleetReport",
    "Level",
    "PeerEvent",
    "PeerState",
    "Thresholds",
    "describe_duration",
    "event_message",
    "fleet_report",
    "iso",
    "observe",
    "ping_target",
    "stand_down_verdict",
    "url_hash",
]

Level = Literal["ok", "down", "escalated"]
EventKind = Literal["down", "escalated", "recovered", "two_primaries", "two_primaries_resolved"]
LEVELS: tuple[Level, ...] = ("ok", "down", "escalated")
UNREADABLE = "unreadable heartbeat file"  # the reason shared.heartbeats gives a bad file


@dataclass(frozen=True)
class Thresholds:
    alert_after: int = 2
    escalate_after: int = 5
    recovery_after: int = 2


@dataclass(frozen=True)
class PeerState:
    """What this host knows about one peer. ``incident_at`` is when the failure run that
    opened the current incident began (also its identity in dedup keys)."""

    peer: str
    level: Level = "ok"
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    incident_at: float | None = None
    recovering_at: float | None = None
    last_probe_at: float | None = None
    last_ok: bool | None = None
    last_error: str = ""
    peer_role: Role | None = None
    peer_status: str | None = None
    two_primaries_at: float | None = None
    probes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, peer: str, raw: Mapping[str, Any]) -> PeerState:
        """Rebuild from the state file; a field of the wrong type is dropped (the default
        applies), so a hand-edited or older file degrades to a fresh state, never a crash."""
        kwargs: dict[str, Any] = {}
        for name, kind in _FIELD_KINDS.items():
            if name in raw and _fits(kind, raw[name]):
                value = raw[name]
                if value is not None and kind == "float?":
                    value = float(value)
                elif value is not None and kind == "role?":
                    value = Role(value)
                kwargs[name] = value
        state = cls(peer=peer, **kwargs)
        if state.level != "ok" and state.incident_at is None:
            state = replace(state, level="ok")
        return state


_FIELD_KINDS = {
    "level": "level",
    "consecutive_failures": "int",
    "consecutive_successes": "int",
    "probes": "int",
    "incident_at": "float?",
    "recovering_at": "float?",
    "last_probe_at": "float?",
    "two_primaries_at": "float?",
    "last_ok": "bool?",
    "last_error": "str",
    "peer_role": "role?",
    "peer_status": "str?",
}


def _fits(kind: str, value: Any) -> bool:
    if kind == "level":
        return value in LEVELS
    if value is None:
        return kind.endswith("?")
    if isinstance(value, bool):
        return kind == "bool?"
    if kind == "int":
        return isinstance(value, int) and value >= 0
    if kind == "float?":
        return isinstance(value, int | float)
    if kind == "role?":
        return isinstance(value, str) and value in tuple(Role)
    return kind.startswith("str") and isinstance(value, str)


@dataclass(frozen=True)
class PeerEvent:
    kind: EventKind
    peer: str
    incident_at: float  # identity of the incident (dedup)
    at: float
    failures: int = 0
    successes: int = 0
    outage_s: float | None = None
    error: str = ""
    #: for two_primaries: which host must stand down, and why (from the promotion epochs)
    stand_down: str = ""


def observe(
    state: PeerState,
    *,
    ok: bool,
    now: float,
    thresholds: Thresholds,
    local_role: Role,
    peer_role: Role | None = None,
    peer_status: str | None = None,
    error: str = "",
) -> tuple[PeerState, list[PeerEvent]]:
    """Fold one probe result into ``state``; return the new state and what to announce."""
    events: list[PeerEvent] = []
    base = replace(state, last_probe_at=now, last_ok=ok, probes=state.probes + 1)
    if not ok:
        failures = state.consecutive_failures + 1
        incident_at = state.incident_at if state.incident_at is not None else now
        level = state.level
        if level == "ok" and failures >= thresholds.alert_after:
            level = "down"
            events.append(PeerEvent("down", state.peer, incident_at, now, failures, error=error))
        if level == "down" and failures >= thresholds.escalate_after:
            level = "escalated"
            events.append(
                PeerEvent(
                    "escalated",
                    state.peer,
                    incident_at,
                    now,
                    failures,
                    outage_s=now - incident_at,
                    error=error,
                )
            )
        new = replace(
            base,
            level=level,
            consecutive_failures=failures,
            consecutive_successes=0,
            incident_at=incident_at,
            recovering_at=None,
            last_error=error,
        )
        return new, events

    new = replace(
        base,
        consecutive_failures=0,
        last_error="",
        peer_role=peer_role,
        peer_status=peer_status,
    )
    if state.level == "ok":
        # A failure run too short to alert is forgotten at the first good probe.
        new = replace(new, consecutive_successes=0, incident_at=None, recovering_at=None)
    else:
        successes = state.consecutive_successes + 1
        recovering_at = state.recovering_at if state.recovering_at is not None else now
        incident_at = state.incident_at if state.incident_at is not None else now
        if successes >= thresholds.recovery_after:
            events.append(
                PeerEvent(
                    "recovered",
                    state.peer,
                    incident_at,
                    now,
                    successes=successes,
                    outage_s=max(0.0, recovering_at - incident_at),
                )
            )
            new = replace(
                new, level="ok", consecutive_successes=0, incident_at=None, recovering_at=None
            )
        else:
            new = replace(new, consecutive_successes=successes, recovering_at=recovering_at)

    both_primary = peer_role == Role.PRIMARY and local_role == Role.PRIMARY
    if both_primary and state.two_primaries_at is None:
        events.append(PeerEvent("two_primaries", state.peer, now, now))
        new = replace(new, two_primaries_at=now)
    elif not both_primary and state.two_primaries_at is not None and peer_role is not None:
        events.append(PeerEvent("two_primaries_resolved", state.peer, state.two_primaries_at, now))
        new = replace(new, two_primaries_at=None)
    return new, events


# messages ------------------------------------------------------------------------------------
def describe_duration(seconds: float) -> str:
    """``45s``, ``4m10s``, ``2h05m``, ``3d4h``: short enough for a phone notification."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _render(ts: float | None) -> str | Literal[False] | None:
    """``iso(ts)``, None for no timestamp, False when ``ts`` cannot be rendered."""
    if ts is None:
        return None
    try:
        return iso(ts)
    except (ValueError, OverflowError, OSError, TypeError):
        return False


def _key(event: PeerEvent) -> str:
    incident = int(event.incident_at * 1000)
    if event.kind in ("two_primaries", "two_primaries_resolved"):
        return f"heartbeat:two-primaries:{event.peer}:{incident}:{event.kind}"
    return f"heartbeat:peer:{event.peer}:{incident}:{event.kind}"


def event_message(
    event: PeerEvent, *, host: str, ops_channel: str, escalation_channel: str, escalated: bool
) -> list[Message]:
    """The Slack messages for one event. Escalations go to the escalation target (#ops when
    none is configured); a recovery also tells the escalation target if it was escalated."""
    who = f"[heartbeat@{host}]"
    peer, error = slack_text(event.peer, 80), slack_text(event.error or "unknown error", 200)
    since = iso(event.incident_at)
    target = escalation_channel or ops_channel
    if event.kind == "down":
        text = (
            f":red_circle: {who} {peer} is not answering: {event.failures} failed probes in a"
            f" row since {since} (last: {error}). Check the host and"
            f" Tailscale; if {peer} is gone, follow docs/runbooks/heartbeat.md (failover)."
        )
        return [Message(ops_channel, text, _key(event), daemon="heartbeat")]
    if event.kind == "escalated":
        text = (
            f":rotating_light: {who} ESCALATION: {peer} still down after {event.failures}"
            f" failed probes ({describe_duration(event.outage_s or 0.0)} since {since};"
            f" last: {error}). Decide on failover now."
        )
        if not escalation_channel:
            text += " (no [heartbeat] escalation_channel configured)"
        return [Message(target, text, _key(event), daemon="heartbeat")]
    if event.kind == "recovered":
        text = (
            f":large_green_circle: {who} {peer} is answering again after"
            f" {describe_duration(event.outage_s or 0.0)} down (since {since};"
            f" {event.successes} good probes in a row)."
        )
        out = [Message(ops_channel, text, _key(event), daemon="heartbeat")]
        if escalated and target != ops_channel:
            out.append(Message(target, text, _key(event) + ":escalation", daemon="heartbeat"))
        return out
    if event.kind == "two_primaries":
        verdict = (
            slack_text(event.stand_down, 300)
            if event.stand_down
            else (
                "The old primary must be demoted (`fleet role set standby` on it) before its"
                " fleet writes anything."
            )
        )
        text = (
            f":warning: {who} TWO PRIMARIES: {peer} reports role primary and so does {host}."
            f" {verdict}"
        )
        return [Message(ops_channel, text, _key(event), daemon="heartbeat")]
    text = (
        f":white_check_mark: {who} two primaries resolved: {peer} and {host} no longer both"
        f" report primary (since {since})."
    )
    return [Message(ops_channel, text, _key(event), daemon="heartbeat")]


# fleet verdict and pings ---------------------------------------------------------------------
@dataclass(frozen=True)
class FleetReport:
    ok: bool
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def stale(self) -> list[str]:
        return list(self.body.get("stale", []))


def stand_down_verdict(host: str, local: Epoch | None, peer: str, peer_epoch: Epoch | None) -> str:
    """Which of two hosts that both report primary must stand down: the one with the older
    promotion epoch (no epoch counts as 0). Equal epochs decide nothing."""
    mine = local.number if local is not None else 0
    theirs = peer_epoch.number if peer_epoch is not None else 0
    if mine == theirs:
        return (
            f"Both hold epoch {mine}: the epochs do not tell which history is newer; compare"
            " the newest rows on both and demote the other (`fleet role set standby` on it)."
        )
    loser, winner = (host, peer) if mine < theirs else (peer, host)
    return (
        f"{loser} MUST STAND DOWN: {winner} holds the newer epoch"
        f" ({max(mine, theirs)} against {min(mine, theirs)}); {loser}'s writers refuse to start"
        f" and its /health says fenced. On {loser} run `fleet dr failback`."
    )


def fleet_report(
    *,
    host: str,
    role: Role | None,
    version: str,
    now: float,
    statuses: Mapping[str, HeartbeatStatus],
    role_error: str = "",
    epoch: Epoch | None = None,
    fenced: str = "",
) -> FleetReport:
    """The /health answer for the daemons enabled on this host: ``degraded`` as soon as one is
    stale (no success for 3 expected intervals) or has no heartbeat file, or when the role file
    is garbled (``role`` None, ``role_error`` saying why); ``fenced`` (never ok) when a peer
    holds a newer promotion epoch (``fenced`` saying why)."""
    daemons: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    for name in sorted(statuses):
        st = statuses[name]
        last_ok_at = _render(st.last_ok_at)
        if last_ok_at is False or (st.age_s is not None and not math.isfinite(st.age_s)):
            # A foreign or hand-edited file (milliseconds, 1e20, NaN) must not break /health.
            st = replace(st, ok=False, last_ok_at=None, age_s=None, reason=UNREADABLE)
            last_ok_at = None
        if not st.ok:
            stale.append(name)
        daemons[name] = {
            "ok": st.ok,
            "last_ok_at": last_ok_at,
            "age_s": round(st.age_s, 1) if st.age_s is not None else None,
            "expected_interval_s": st.expected_interval_s,
            "reason": st.reason,
        }
    ok = not stale and not role_error and not fenced
    body: dict[str, Any] = {
        "status": "fenced" if fenced else ("ok" if ok else "degraded"),
        "host": host,
        "role": role,
        "ts": iso(now),
        "version": version,
        "daemons": daemons,
        "stale": stale,
    }
    if role_error:
        body["role_error"] = role_error
    body["epoch"] = epoch.to_json() if epoch is not None else None
    if fenced:
        body["fenced"] = fenced
    return FleetReport(ok, body)


def ping_target(url: str, *, degraded: bool) -> str:
    """healthchecks.io convention: the check URL signals success, ``<url>/fail`` failure."""
    if not degraded:
        return url
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/fail"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def url_hash(url: str) -> str:
    """The loggable, label-safe stand-in for a secret URL."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]

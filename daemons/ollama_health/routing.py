"""Tier routing: which host (or Claude) serves a tier, from the failover rules and host health.

``route(tier, model, status)`` is the library call the routers use; ``decide`` is the same
logic over every tier, written into the status file's ``_routing`` block, so the file and the
call always agree. Pure (the clock is a parameter); a status file older than
``STALE_INTERVALS`` intervals counts as unknown and the tier goes to its configured primary,
saying so. This module must never probe, read or write files.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from daemons.ollama_health.policy import describe_duration, parse_iso
from daemons.ollama_health.table import (
    CLAUDE,
    FailoverRule,
    RoutingTable,
    TableError,
    parse_tier_routing,
)

__all__ = [
    "STALE_INTERVALS",
    "Route",
    "RouteError",
    "RoutingDecision",
    "Unavailable",
    "UnknownTier",
    "decide",
    "resolve",
    "route",
    "status_age",
]

STALE_INTERVALS = 3.0
DEFAULT_INTERVAL_S = 15.0


@dataclass(frozen=True)
class Route:
    """Where a tier goes: ``host`` is a watched host or ``"claude"`` (then ``url`` is None).
    ``model`` is the model name to ask for there (None for Claude, or when none was given)."""

    host: str
    url: str | None
    model: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RouteError(Exception):
    """A tier cannot be routed."""


class UnknownTier(RouteError):
    """No failover rule names this tier, so it has no known primary."""


class Unavailable(RouteError):
    """Every host that may serve the tier is down and its rule does not allow Claude."""


@dataclass(frozen=True)
class RoutingDecision:
    active_rules: list[str] = field(default_factory=list)
    redirects: dict[str, dict[str, Any]] = field(default_factory=dict)
    to_claude: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "active_rules": list(self.active_rules),
            "redirects": {tier: dict(dest) for tier, dest in self.redirects.items()},
            "to_claude": list(self.to_claude),
            "unavailable": list(self.unavailable),
        }

    def destinations(self, rule: FailoverRule) -> dict[str, str]:
        """tier -> host / ``claude`` / ``unavailable`` for one active rule's tiers."""
        out: dict[str, str] = {}
        for tier in rule.tiers:
            if tier in self.redirects:
                out[tier] = str(self.redirects[tier]["host"])
            elif tier in self.to_claude:
                out[tier] = CLAUDE
            elif tier in self.unavailable:
                out[tier] = "unavailable"
        return out


def _rule_or_raise(table: RoutingTable, tier: str) -> FailoverRule:
    rule = table.rule_for(tier)
    if rule is None:
        known = ", ".join(table.tiers) or "none configured"
        raise UnknownTier(f"tier {tier!r} is in no failover rule (known tiers: {known})")
    return rule


def resolve(
    table: RoutingTable,
    healthy: Mapping[str, bool],
    tier: str,
    model: str | None,
    urls: Mapping[str, str] | None = None,
) -> Route:
    """Route ``tier`` given each host's (effective) health; ``urls``: the base URL that
    answered per host (default: its configured ``url``)."""
    rule = _rule_or_raise(table, tier)
    answered = urls or {}

    def url_of(host: str) -> str:
        return answered.get(host) or table.hosts[host].url

    primary, target = rule.source, rule.target
    if healthy.get(primary, False):
        return Route(
            primary, url_of(primary), model, f"{primary} healthy (primary for tier {tier})"
        )
    if target is not None and healthy.get(target, False):
        mapped = rule.models.get(model, model) if model is not None else None
        renamed = f", model {model} -> {mapped}" if mapped != model else ""
        return Route(
            target,
            url_of(target),
            mapped,
            f"{rule.name}: {primary} unhealthy, tier {tier} redirected to {target}{renamed}",
        )
    also = f" and {target}" if target is not None else ""
    if rule.to_claude:
        return Route(
            CLAUDE, None, None, f"{rule.name}: {primary}{also} unhealthy, tier {tier} to claude"
        )
    raise Unavailable(
        f"tier {tier} unavailable: {primary}{also} unhealthy and rule {rule.name} "
        "does not allow claude (to_claude)"
    )


def decide(
    table: RoutingTable, healthy: Mapping[str, bool], urls: Mapping[str, str] | None = None
) -> RoutingDecision:
    """The status file's ``_routing`` block: rules in force and where their tiers go."""
    decision = RoutingDecision()
    for rule in table.rules.values():
        if healthy.get(rule.source, False):
            continue
        decision.active_rules.append(rule.name)
        for tier in rule.tiers:
            try:
                chosen = resolve(table, healthy, tier, None, urls)
            except Unavailable:
                decision.unavailable.append(tier)
                continue
            if chosen.host == CLAUDE:
                decision.to_claude.append(tier)
            else:
                decision.redirects[tier] = {"host": chosen.host, "model": dict(rule.models)}
    return decision


def status_age(status: Mapping[str, Any], now: float) -> float | None:
    """Seconds since the status file was generated, or None if it does not say."""
    generated = parse_iso(status.get("_generated_at"))
    return None if generated is None else now - generated


def _interval(status: Mapping[str, Any]) -> float:
    value = status.get("_interval_s")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return DEFAULT_INTERVAL_S


def _unknown_reason(status: Mapping[str, Any] | None, now: float) -> str | None:
    """Why the status cannot be trusted, or None when it is fresh."""
    if status is None:
        return "no status file"
    age = status_age(status, now)
    if age is None:
        return "status file has no valid _generated_at"
    limit = STALE_INTERVALS * _interval(status)
    if age > limit:
        return f"status file stale ({describe_duration(age)} old > {STALE_INTERVALS:g} intervals)"
    if age < -limit:
        return "status file dated in the future (clock skew?)"
    return None


def _table_from_status(status: Mapping[str, Any] | None) -> RoutingTable:
    if status is None or "_config" not in status:
        raise RouteError("no routing table: give table= or a status file with _config")
    try:
        return parse_tier_routing(status["_config"])
    except TableError as exc:
        raise RouteError(f"status file _config unusable: {exc}") from None


def route(
    tier: str,
    model: str | None,
    status: Mapping[str, Any] | None,
    *,
    table: RoutingTable | None = None,
    now: float | None = None,
) -> Route:
    """Resolve ``tier`` (and ``model``) exactly as the failover rules say, from a parsed status
    file (None when missing). ``table`` defaults to the one the status file embeds. A missing,
    stale or incomplete status means unknown health: the tier's configured primary, with the
    reason saying so. Raises UnknownTier or Unavailable."""
    table = table if table is not None else _table_from_status(status)
    when = time.time() if now is None else now
    rule = _rule_or_raise(table, str(tier))
    tier = str(tier)
    unknown = _unknown_reason(status, when)
    involved = [rule.source, *([rule.target] if rule.target else [])]
    if unknown is None and status is not None:
        missing = [h for h in involved if not isinstance(status.get(h), Mapping)]
        if missing or not all(isinstance(status[h].get("healthy"), bool) for h in involved):
            unknown = f"status file has no health for {', '.join(missing or involved)}"
    if unknown is not None or status is None:
        primary = rule.source
        return Route(
            primary,
            table.hosts[primary].url,
            model,
            f"{unknown}; health unknown, using configured primary {primary} for tier {tier}",
        )
    healthy = {h: bool(status[h]["healthy"]) for h in involved}
    urls = {h: table.hosts[h].endpoint(status[h].get("via")) for h in involved}
    return resolve(table, healthy, tier, model, urls)

"""The failover table: watched hosts and failover rules, parsed from the seed's tier-routing.json
shape (``ollamaHosts``, ``failoverRules``) or from the inline ``[ollama_health]`` keys.

Pure: plain data in, frozen data or one ``TableError`` naming the bad key out. Keys it does not
know are ignored (the file belongs to the routers, which keep other blocks in it); this module
must never read files, write anything, or guess a missing host.

A rule ``NAME`` fires when the host in its ``redirect_<host>_tiers`` key is unhealthy; those
tiers then go to the host in its ``to_<host>_models`` key (model names mapped through it, a
model missing from the map keeps its name), or to Claude when ``to_claude`` is true and no
healthy host takes them. A tier's primary host is the one whose rule lists it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from daemons.ollama_health.config import OllamaHostSection

if TYPE_CHECKING:
    from daemons.ollama_health.config import OllamaHealthSection

__all__ = [
    "CLAUDE",
    "FailoverRule",
    "HostSpec",
    "RoutingTable",
    "TableError",
    "parse_tier_routing",
    "table_from_section",
]

CLAUDE = "claude"
_REDIRECT_RE = re.compile(r"^redirect_(.+)_tiers$")
_TO_MODELS_RE = re.compile(r"^to_(.+)_models$")
_HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class TableError(ValueError):
    """The hosts/rules are unusable; the message starts with the dotted path of the bad key."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    url: str
    tailscale_url: str | None
    health_path: str
    timeout_s: float
    role: str
    kind: str

    def endpoint(self, via: str | None) -> str:
        """The base URL that answered (``via`` "tailscale"), else the LAN URL."""
        if via == "tailscale" and self.tailscale_url:
            return self.tailscale_url
        return self.url

    def to_json(self) -> dict[str, Any]:
        """This host in the seed's ``ollamaHosts`` shape."""
        return {
            "url": self.url,
            "tailscale_url": self.tailscale_url,
            "health_path": self.health_path,
            "health_timeout_ms": round(self.timeout_s * 1000),
            "role": self.role,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class FailoverRule:
    name: str
    source: str  # the host whose failure fires the rule
    tiers: tuple[str, ...]
    target: str | None  # the host that takes the tiers (to_<host>_models), if any
    models: Mapping[str, str] = field(default_factory=dict)
    to_claude: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """This rule in the seed's ``failoverRules`` shape."""
        out: dict[str, Any] = {f"redirect_{self.source}_tiers": list(self.tiers)}
        if self.target is not None:
            out[f"to_{self.target}_models"] = dict(self.models)
        if self.to_claude:
            out["to_claude"] = True
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class RoutingTable:
    hosts: Mapping[str, HostSpec]
    rules: Mapping[str, FailoverRule]

    def rule_for(self, tier: str) -> FailoverRule | None:
        for rule in self.rules.values():
            if tier in rule.tiers:
                return rule
        return None

    @property
    def tiers(self) -> list[str]:
        return [tier for rule in self.rules.values() for tier in rule.tiers]

    def to_json(self) -> dict[str, Any]:
        """The table in tier-routing.json's shape (what the status file embeds as ``_config``)."""
        return {
            "ollamaHosts": {name: host.to_json() for name, host in self.hosts.items()},
            "failoverRules": {name: rule.to_json() for name, rule in self.rules.items()},
        }


def _host_spec(name: str, section: OllamaHostSection) -> HostSpec:
    return HostSpec(
        name=name,
        url=section.url,
        tailscale_url=section.tailscale_url,
        health_path=section.probe_path,
        timeout_s=section.health_timeout_ms / 1000.0,
        role=section.role,
        kind=section.kind,
    )


def _check_host_name(name: Any, path: str) -> str:
    if not isinstance(name, str) or not _HOST_NAME_RE.match(name):
        raise TableError(f"{path}: host name {name!r} must be letters, digits, '-', '_', '.'")
    if name == CLAUDE:
        raise TableError(f"{path}: 'claude' is reserved for the Claude fallback")
    return name


def _parse_file_host(name: str, raw: Any, path: str) -> HostSpec:
    if not isinstance(raw, Mapping):
        raise TableError(f"{path}: must be an object, got {type(raw).__name__}")
    known = {k: v for k, v in raw.items() if k in OllamaHostSection.model_fields}
    try:
        section = OllamaHostSection.model_validate(known)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"{path}.{loc}" if loc else path
        raise TableError(f"{where}: {first['msg']}") from None
    return _host_spec(name, section)


def _tier_list(raw: Any, path: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise TableError(f"{path}: must be a non-empty list of tier names")
    tiers: list[str] = []
    for i, item in enumerate(raw):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise TableError(f"{path}[{i}]: tier names are strings, got {item!r}")
        tier = str(item).strip()
        if not tier:
            raise TableError(f"{path}[{i}]: empty tier name")
        tiers.append(tier)
    return tuple(tiers)


def _parse_rule(name: str, raw: Any, path: str, hosts: Mapping[str, HostSpec]) -> FailoverRule:
    if not isinstance(raw, Mapping):
        raise TableError(f"{path}: must be an object, got {type(raw).__name__}")
    sources = [(m.group(1), k) for k in raw if (m := _REDIRECT_RE.match(str(k)))]
    if len(sources) != 1:
        raise TableError(
            f"{path}: needs exactly one redirect_<host>_tiers key, found {len(sources)}"
        )
    source, source_key = sources[0]
    if source not in hosts:
        raise TableError(f"{path}.{source_key}: no host {source!r} in the watched hosts")
    tiers = _tier_list(raw[source_key], f"{path}.{source_key}")
    targets = [(m.group(1), k) for k in raw if (m := _TO_MODELS_RE.match(str(k)))]
    if len(targets) > 1:
        raise TableError(f"{path}: at most one to_<host>_models key, found {len(targets)}")
    target: str | None = None
    models: dict[str, str] = {}
    if targets:
        target, target_key = targets[0]
        if target not in hosts:
            raise TableError(f"{path}.{target_key}: no host {target!r} in the watched hosts")
        if target == source:
            raise TableError(f"{path}.{target_key}: a host cannot take over its own tiers")
        mapping = raw[target_key]
        if not isinstance(mapping, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in mapping.items()
        ):
            raise TableError(f"{path}.{target_key}: must map model names to model names")
        models = dict(mapping)
    to_claude = raw.get("to_claude", False)
    if not isinstance(to_claude, bool):
        raise TableError(f"{path}.to_claude: must be true or false, got {to_claude!r}")
    if target is None and not to_claude:
        raise TableError(f"{path}: names no destination (to_<host>_models or to_claude = true)")
    note = raw.get("note", "")
    return FailoverRule(
        name=name,
        source=source,
        tiers=tiers,
        target=target,
        models=models,
        to_claude=to_claude,
        note=note if isinstance(note, str) else "",
    )


def _parse_rules(
    raw_rules: Mapping[str, Any], path: str, hosts: Mapping[str, HostSpec]
) -> dict[str, FailoverRule]:
    rules: dict[str, FailoverRule] = {}
    owner: dict[str, str] = {}
    for name, raw in raw_rules.items():
        rule_path = f"{path}.{name}"
        rule = _parse_rule(str(name), raw, rule_path, hosts)
        for tier in rule.tiers:
            if tier in owner:
                raise TableError(
                    f"{rule_path}: tier {tier!r} is already redirected by {owner[tier]}"
                )
            owner[tier] = rule.name
        rules[rule.name] = rule
    return rules


def parse_tier_routing(doc: Any) -> RoutingTable:
    """The table from a parsed tier-routing.json: its ``ollamaHosts`` and ``failoverRules``
    blocks (the latter optional); every other key is ignored."""
    if not isinstance(doc, Mapping):
        raise TableError(f"<top>: must be a JSON object, got {type(doc).__name__}")
    raw_hosts = doc.get("ollamaHosts")
    if not isinstance(raw_hosts, Mapping) or not raw_hosts:
        raise TableError("ollamaHosts: missing or empty (needs at least one host object)")
    hosts: dict[str, HostSpec] = {}
    for name, raw in raw_hosts.items():
        path = f"ollamaHosts.{name}"
        hosts[_check_host_name(name, path)] = _parse_file_host(name, raw, path)
    raw_rules = doc.get("failoverRules", {})
    if not isinstance(raw_rules, Mapping):
        raise TableError(f"failoverRules: must be an object, got {type(raw_rules).__name__}")
    return RoutingTable(hosts=hosts, rules=_parse_rules(raw_rules, "failoverRules", hosts))


def table_from_section(section: OllamaHealthSection) -> RoutingTable:
    """The table from the inline ``hosts`` / ``rules`` keys."""
    if not section.hosts:
        raise TableError("hosts: needs at least one host (or set tier_routing_file)")
    hosts = {
        _check_host_name(name, f"hosts.{name}"): _host_spec(name, host)
        for name, host in section.hosts.items()
    }
    return RoutingTable(hosts=hosts, rules=_parse_rules(section.rules, "rules", hosts))

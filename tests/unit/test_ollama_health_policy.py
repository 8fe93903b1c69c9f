"""The pure core of ollama-health, table-driven: the tier-routing table parser, the failure /
recovery thresholds, the override file, tier routing (``decide``, ``route``), and where alerts
may go."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from daemons.ollama_health import Route, Unavailable, UnknownTier, route
from daemons.ollama_health.config import OllamaHealthSection
from daemons.ollama_health.policy import (
    HostState,
    OverrideError,
    alert_channel,
    describe_duration,
    effective_health,
    format_iso,
    host_alert,
    link_error_alert,
    observe,
    parse_iso,
    parse_override,
    rule_changes,
)
from daemons.ollama_health.routing import decide, resolve
from daemons.ollama_health.table import TableError, parse_tier_routing, table_from_section

T0 = 1_795_000_000.0

# The seed's tier-routing.json blocks (section 4.2), with example addresses, plus keys the
# routers keep in the same file that the monitor must ignore.
SEED_DOC: dict[str, Any] = {
    "tiers": {"1": {"model": "llama3.1:8b"}, "2c": {"model": "qwen2.5-coder:32b"}},
    "providerFallback": {"default": "ollama:qwen2.5-coder:32b@anvil"},
    "ollamaHosts": {
        "anvil": {
            "url": "http://127.0.0.1:11434",
            "tailscale_url": "http://anvil.example.org:11434",
            "health_path": "/api/tags",
            "health_timeout_ms": 3000,
            "role": "primary-infra",
            "comment": "unknown keys are ignored",
        },
        "forge": {
            "url": "http://forge.example.org:11434",
            "tailscale_url": "http://forge-ts.example.org:11434",
            "health_path": "/api/tags",
            "health_timeout_ms": 3000,
            "role": "primary-compute",
        },
    },
    "failoverRules": {
        "anvil-down": {
            "redirect_anvil_tiers": ["1", "2", "2t", "2cHQ"],
            "to_forge_models": {
                "llama3.1:8b": "llama3.1:8b",
                "qwen2.5-coder:32b": "qwen2.5-coder:32b-instruct-q8_0",
            },
            "note": "When ANVIL is unreachable, Tier 1/2 go to FORGE equivalents",
        },
        "forge-down": {
            "redirect_forge_tiers": ["2c", "2cf", "2d", "3", "3s", "3r"],
            "to_claude": True,
            "note": "FORGE failure is rare; Claude cost is acceptable",
        },
    },
}
ANVIL_TIERS = ["1", "2", "2t", "2cHQ"]
FORGE_TIERS = ["2c", "2cf", "2d", "3", "3s", "3r"]


def seed_table() -> Any:
    return parse_tier_routing(copy.deepcopy(SEED_DOC))


# table ----------------------------------------------------------------------------------------
def test_seed_table_parses_with_seed_key_names() -> None:
    table = seed_table()
    assert set(table.hosts) == {"anvil", "forge"}
    anvil = table.hosts["anvil"]
    assert anvil.url == "http://127.0.0.1:11434"
    assert anvil.tailscale_url == "http://anvil.example.org:11434"
    assert anvil.health_path == "/api/tags" and anvil.timeout_s == 3.0
    assert anvil.role == "primary-infra" and anvil.kind == "ollama"
    down = table.rules["anvil-down"]
    assert down.source == "anvil" and down.target == "forge" and not down.to_claude
    assert down.tiers == tuple(ANVIL_TIERS)
    assert down.models["qwen2.5-coder:32b"] == "qwen2.5-coder:32b-instruct-q8_0"
    forge = table.rules["forge-down"]
    assert forge.source == "forge" and forge.target is None and forge.to_claude
    assert table.rule_for("3s") is forge and table.rule_for("9") is None
    # The embedded copy round-trips through the same parser.
    again = parse_tier_routing(table.to_json())
    assert again.rules == table.rules and again.hosts == table.hosts


def test_openai_kind_defaults_to_v1_models() -> None:
    doc = {"ollamaHosts": {"mlx": {"url": "http://127.0.0.1:11435", "kind": "openai"}}}
    assert parse_tier_routing(doc).hosts["mlx"].health_path == "/v1/models"


def _broken(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SEED_DOC)
    *parents, last = path.split("/")
    node = doc
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ([1, 2], "<top>: must be a JSON object"),
        (_broken("ollamaHosts", KeyError), "ollamaHosts: missing"),
        (_broken("ollamaHosts/forge", "http://x"), "ollamaHosts.forge: must be an object"),
        (_broken("ollamaHosts/forge/url", "ftp://x"), "ollamaHosts.forge.url"),
        # A port out of range passes a prefix check but would fail every probe at connect.
        (_broken("ollamaHosts/forge/url", "http://127.0.0.1:114340"), "ollamaHosts.forge.url"),
        (_broken("ollamaHosts/forge/tailscale_url", "http://h:x1"), "forge.tailscale_url"),
        (_broken("ollamaHosts/forge/health_timeout_ms", -5), "health_timeout_ms"),
        (_broken("ollamaHosts/forge/health_path", "api/tags"), "health_path"),
        (_broken("ollamaHosts/claude", {"url": "http://127.0.0.1:1"}), "reserved"),
        (_broken("ollamaHosts/_meta", {"url": "http://127.0.0.1:1"}), "host name '_meta'"),
        (_broken("failoverRules", []), "failoverRules: must be an object"),
        (_broken("failoverRules/forge-down/to_claude", "yes"), "to_claude: must be true"),
        (
            _broken("failoverRules/forge-down/redirect_nowhere_tiers", ["x"]),
            "exactly one redirect_<host>_tiers",
        ),
        (_broken("failoverRules/anvil-down/redirect_anvil_tiers", []), "non-empty list"),
        (_broken("failoverRules/anvil-down/to_forge_models", ["a"]), "must map model names"),
        (
            _broken("failoverRules/anvil-down/to_anvil_models", {}),
            "at most one to_<host>_models",
        ),
        (_broken("failoverRules/forge-down/to_claude", False), "names no destination"),
        (
            _broken("failoverRules/x", {"redirect_mars_tiers": ["9"], "to_claude": True}),
            "no host 'mars'",
        ),
        (
            _broken("failoverRules/x", {"redirect_forge_tiers": ["1"], "to_claude": True}),
            "tier '1' is already redirected by anvil-down",
        ),
    ],
)
def test_malformed_tables_name_the_bad_key(doc: Any, needle: str) -> None:
    with pytest.raises(TableError) as info:
        parse_tier_routing(doc)
    assert needle in str(info.value)


def test_inline_section_uses_the_same_parser() -> None:
    hosts = {
        name: {k: v for k, v in host.items() if k != "comment"}
        for name, host in SEED_DOC["ollamaHosts"].items()
    }
    section = OllamaHealthSection.model_validate(
        {"hosts": hosts, "rules": SEED_DOC["failoverRules"]}
    )
    assert table_from_section(section).rules == seed_table().rules
    assert table_from_section(section).hosts == seed_table().hosts
    with pytest.raises(ValueError, match="comment"):  # inline keys are checked strictly
        OllamaHealthSection.model_validate({"hosts": SEED_DOC["ollamaHosts"]})
    with pytest.raises(ValueError, match="no host 'mars'"):
        OllamaHealthSection.model_validate(
            {"rules": {"x": {"redirect_mars_tiers": ["1"], "to_claude": True}}}
        )
    with pytest.raises(ValueError, match="cycle_timeout_s"):
        OllamaHealthSection.model_validate(
            {"cycle_timeout_s": 3, "hosts": {"a": {"url": "http://127.0.0.1:1"}}}
        )
    assert OllamaHealthSection.model_validate({"tier_routing_file": ""}).tier_routing_file is None


# thresholds -----------------------------------------------------------------------------------
def run_probes(
    outcomes: str, start: HostState | None = None, fail_n: int = 2, ok_n: int = 2
) -> list[tuple[bool | None, str | None]]:
    """Feed 'o' (ok) / 'x' (failed) probes; return (healthy, transition) after each."""
    state = start or HostState()
    seen = []
    for i, c in enumerate(outcomes):
        state, tr = observe(
            state,
            c == "o",
            None if c == "o" else f"err{i}",
            T0 + i * 15,
            host="anvil",
            failure_threshold=fail_n,
            recovery_threshold=ok_n,
        )
        seen.append((state.healthy, tr.to if tr else None))
    return seen


HEALTHY = HostState(healthy=True, since=T0 - 100)
DOWN = HostState(healthy=False, since=T0 - 100, last_error="old")


@pytest.mark.parametrize(
    ("start", "outcomes", "expected"),
    [
        # One lost probe never flips a healthy host.
        (HEALTHY, "xo", [(True, None), (True, None)]),
        (HEALTHY, "xoxo", [(True, None)] * 4),
        (HEALTHY, "xx", [(True, None), (False, "down")]),
        (HEALTHY, "xxxx", [(True, None), (False, "down"), (False, None), (False, None)]),
        # One good probe does not bring a down host back.
        (DOWN, "oxoo", [(False, None), (False, None), (False, None), (True, "up")]),
        # No history: a good probe decides; failed ones stay unknown (routed as down) and
        # alert only at the threshold, so a restart without memory cannot page.
        (None, "x", [(None, None)]),
        (None, "xx", [(None, None), (False, "down")]),
        (None, "xo", [(None, None), (True, None)]),
        (None, "o", [(True, None)]),
    ],
)
def test_thresholds(
    start: HostState | None, outcomes: str, expected: list[tuple[bool | None, str | None]]
) -> None:
    assert run_probes(outcomes, start) == expected


def test_recovery_reports_outage_and_last_error() -> None:
    state = HostState(healthy=True, since=T0)
    transitions = []
    for i, ok in enumerate([False, False, False, True, True]):
        state, tr = observe(
            state,
            ok,
            None if ok else f"HTTP 50{i}",
            T0 + 60 * (i + 1),
            host="forge",
            failure_threshold=2,
            recovery_threshold=2,
        )
        if tr:
            transitions.append(tr)
    down, up = transitions
    assert (down.to, down.error, down.failures, down.at) == ("down", "HTTP 501", 2, T0 + 120)
    assert up.to == "up" and up.error == "HTTP 502" and up.outage_s == 180
    assert up.down_since == T0 + 120
    msg = host_alert(up, channel="#ops", monitor_host="testhost", role="compute", forced=None)
    assert "forge (compute) recovered after 3m00s down" in msg.text and "HTTP 502" in msg.text
    assert msg.dedup_key == f"ollama-up:forge:{int(T0 + 120)}"
    down_msg = host_alert(down, channel="#ops", monitor_host="h", role="", forced=False)
    assert "DOWN: HTTP 501" in down_msg.text and "forces forge down" in down_msg.text


def test_state_round_trips_and_rejects_junk() -> None:
    state = HostState(True, 1, 0, T0, "timed out")
    assert HostState.from_json(json.loads(json.dumps(state.to_json()))) == state
    # A host with failures below the threshold and no history yet is remembered too.
    pending = HostState(None, 1, 0, None, "connection refused")
    assert HostState.from_json(json.loads(json.dumps(pending.to_json()))) == pending
    for junk in (None, [], {"healthy": "yes"}, {"healthy": True, "consecutive_failures": "1"}):
        assert HostState.from_json(junk) is None


# override -------------------------------------------------------------------------------------
HOSTS = {"anvil": object(), "forge": object()}


def test_seed_manual_failover_command() -> None:
    text = '{"anvil":{"healthy":true},"forge":{"healthy":false,"override":true}}'
    override = parse_override(text, HOSTS)
    assert override.active(T0) == {"anvil": True, "forge": False}
    assert override.expires_at(T0) is None


def test_override_expiry_and_opt_out() -> None:
    text = json.dumps(
        {
            "expires_at": format_iso(T0 + 3600),
            "forge": {"healthy": False},
            "anvil": {"healthy": True, "override": False},
            "mars": {"healthy": False},
            "_comment": "set by john during the FORGE drill",
        }
    )
    override = parse_override(text, HOSTS)
    assert override.active(T0) == {"forge": False}
    assert override.unknown_hosts == ("mars",)
    assert override.expires_at(T0) == T0 + 3600
    assert override.active(T0 + 3600) == {} and override.expired(T0 + 3600) == ["forge"]
    per_host = parse_override('{"forge": {"healthy": false, "expires_at": 1795000100}}', HOSTS)
    assert per_host.active(T0 + 99) == {"forge": False} and per_host.active(T0 + 100) == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"forge": {"healthy": fals', "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"forge": false}', "forge: must be an object"),
        ('{"forge": {"healthy": "no"}}', "forge.healthy"),
        ('{"forge": {"override": true}}', "forge.healthy"),
        ('{"forge": {"healthy": false, "override": "yes"}}', "forge.override"),
        ('{"expires_at": "tomorrow", "forge": {"healthy": false}}', "expires_at"),
        # Milliseconds, or values no datetime can show, are refused rather than crashing later.
        ('{"expires_at": 1795000900000, "forge": {"healthy": false}}', "expires_at: 1795000900000"),
        ('{"forge": {"healthy": false, "expires_at": 1e400}}', "forge.expires_at: inf"),
        ('{"expires_at": NaN, "forge": {"healthy": false}}', "out of range"),
        ('{"expires_at": 1' + "0" * 400 + ', "forge": {"healthy": false}}', "out of range"),
        ('{"expires_at": "9999-12-31T23:59:59-05:00", "forge": {"healthy": false}}', "range"),
        ("{" + " " * 70_000 + "}", "larger than"),
    ],
)
def test_malformed_override(text: str, needle: str) -> None:
    with pytest.raises(OverrideError) as info:
        parse_override(text, HOSTS)
    assert needle in str(info.value)


def test_effective_health_override_wins() -> None:
    states = {"anvil": HostState(healthy=True), "forge": HostState(healthy=True), "x": HostState()}
    assert effective_health(states, {"forge": False}) == {
        "anvil": True,
        "forge": False,
        "x": False,
    }


def test_rule_changes() -> None:
    current, changes = rule_changes({}, {"forge-down"}, T0)
    assert current == {"forge-down": T0} and [c.activated for c in changes] == [True]
    current, changes = rule_changes(current, {"forge-down"}, T0 + 15)
    assert current == {"forge-down": T0} and changes == []
    current, changes = rule_changes(current, set(), T0 + 30)
    assert current == {} and changes[0].since == T0 and not changes[0].activated


# routing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("healthy", "active", "redirected", "claude", "unavailable"),
    [
        ({"anvil": True, "forge": True}, [], [], [], []),
        ({"anvil": False, "forge": True}, ["anvil-down"], ANVIL_TIERS, [], []),
        ({"anvil": True, "forge": False}, ["forge-down"], [], FORGE_TIERS, []),
        # Both down: tiers whose rule allows Claude go there; the rest are unavailable.
        (
            {"anvil": False, "forge": False},
            ["anvil-down", "forge-down"],
            [],
            FORGE_TIERS,
            ANVIL_TIERS,
        ),
    ],
)
def test_decide(
    healthy: dict[str, bool],
    active: list[str],
    redirected: list[str],
    claude: list[str],
    unavailable: list[str],
) -> None:
    decision = decide(seed_table(), healthy)
    assert decision.active_rules == active
    assert sorted(decision.redirects) == sorted(redirected)
    assert decision.to_claude == claude and decision.unavailable == unavailable
    for tier in redirected:
        assert decision.redirects[tier]["host"] == "forge"
        assert decision.redirects[tier]["model"]["qwen2.5-coder:32b"].endswith("q8_0")


@pytest.mark.parametrize(
    ("healthy", "tier", "model", "expected"),
    [
        (
            {"anvil": True, "forge": True},
            "2",
            "qwen2.5-coder:32b",
            ("anvil", "http://127.0.0.1:11434", "qwen2.5-coder:32b"),
        ),
        (
            {"anvil": False, "forge": True},
            "2",
            "qwen2.5-coder:32b",
            ("forge", "http://forge.example.org:11434", "qwen2.5-coder:32b-instruct-q8_0"),
        ),
        # A model missing from to_forge_models keeps its name on the other host.
        (
            {"anvil": False, "forge": True},
            "1",
            "mistral:7b",
            ("forge", "http://forge.example.org:11434", "mistral:7b"),
        ),
        ({"anvil": True, "forge": False}, "3", "qwen2.5-coder:32b", ("claude", None, None)),
        ({"anvil": False, "forge": False}, "2c", None, ("claude", None, None)),
    ],
)
def test_resolve(
    healthy: dict[str, bool], tier: str, model: str | None, expected: tuple[Any, ...]
) -> None:
    chosen = resolve(seed_table(), healthy, tier, model)
    assert (chosen.host, chosen.url, chosen.model) == expected
    assert chosen.reason


def test_resolve_unavailable_and_unknown() -> None:
    with pytest.raises(Unavailable, match="does not allow claude"):
        resolve(seed_table(), {"anvil": False, "forge": False}, "1", "llama3.1:8b")
    with pytest.raises(UnknownTier, match="known tiers: 1, 2"):
        resolve(seed_table(), {"anvil": True, "forge": True}, "9", None)


def status_doc(
    anvil: bool, forge: bool, *, generated: float = T0, via: str = "url"
) -> dict[str, Any]:
    table = seed_table()
    return {
        "anvil": {"healthy": anvil, "via": via if anvil else None},
        "forge": {"healthy": forge, "via": "url" if forge else None},
        "_generated_at": format_iso(generated),
        "_interval_s": 15,
        "_config": table.to_json(),
    }


def test_route_from_a_fresh_status_file() -> None:
    chosen = route("2t", "llama3.1:8b", status_doc(False, True), now=T0 + 5)
    assert chosen == Route(
        "forge",
        "http://forge.example.org:11434",
        "llama3.1:8b",
        "anvil-down: anvil unhealthy, tier 2t redirected to forge",
    )
    # Answering over Tailscale: the route says which address works.
    chosen = route("1", "llama3.1:8b", status_doc(True, True, via="tailscale"), now=T0)
    assert chosen.url == "http://anvil.example.org:11434"
    assert route("3r", "x", status_doc(True, False), now=T0).host == "claude"
    with pytest.raises(Unavailable):
        route("2cHQ", "qwen2.5-coder:32b", status_doc(False, False), now=T0)


@pytest.mark.parametrize(
    ("status", "now", "why"),
    [
        (status_doc(True, False), T0 + 46, "stale"),
        (status_doc(True, False), T0 - 3600, "future"),
        ({**status_doc(True, False), "_generated_at": "yesterday"}, T0, "no valid _generated_at"),
        ({k: v for k, v in status_doc(True, False).items() if k != "forge"}, T0, "no health"),
    ],
)
def test_route_with_unknown_health_uses_configured_primary(
    status: dict[str, Any], now: float, why: str
) -> None:
    chosen = route("2c", "qwen2.5-coder:32b", status, now=now)
    assert chosen.host == "forge" and chosen.url == "http://forge.example.org:11434"
    assert chosen.model == "qwen2.5-coder:32b"
    assert why in chosen.reason and "configured primary forge" in chosen.reason
    # Fresh, the same file sends the tier to Claude.
    assert route("2c", None, status_doc(True, False), now=T0 + 44).host == "claude"


def test_route_without_status_needs_a_table() -> None:
    chosen = route("1", None, None, table=seed_table(), now=T0)
    assert chosen.host == "anvil" and "no status file" in chosen.reason
    with pytest.raises(Exception, match="no routing table"):
        route("1", None, None)
    with pytest.raises(UnknownTier):
        route("42", None, status_doc(True, True), now=T0)


def test_small_formatters() -> None:
    assert parse_iso(format_iso(T0)) == T0
    assert parse_iso("2026-11-23T10:00:00+01:00") == parse_iso("2026-11-23T09:00:00Z")
    assert parse_iso(True) is None and parse_iso("nope") is None
    assert [describe_duration(s) for s in (5, 180, 7300, 200_000)] == [
        "5s",
        "3m00s",
        "2h01m",
        "2d7h",
    ]


@pytest.mark.parametrize(
    ("channel", "goes_to"),
    [
        ("#ops", "#ops"),
        ("#ceo", "#ceo"),
        ("#random", "#ops"),
        ("U0SOMEONE", "#ops"),
        ("", "#ops"),
        ("#OPS", "#ops"),
        ("#ops ", "#ops"),
    ],
)
def test_alerts_only_go_to_configured_channels(channel: str, goes_to: str) -> None:
    assert alert_channel(channel, ops_channel="#ops", ceo_channel="#ceo") == goes_to


def test_link_error_alert_names_both_paths_and_is_one_per_episode() -> None:
    first = link_error_alert(
        "a file owned by uid 65534 is in the way",
        link="/tmp/ollama-health.json",
        target="/home/alai/system/state/ollama-health.json",
        channel="#ops",
        monitor_host="anvil",
        since=T0,
    )
    assert first.channel == "#ops" and first.kind == "alert"
    assert first.text.startswith("[ollama-health@anvil] legacy status path /tmp/ollama-health.json")
    assert "uid 65534" in first.text and "/home/alai/system/state/ollama-health.json" in first.text
    again = link_error_alert(
        "a file owned by uid 65534 is in the way",
        link="/tmp/ollama-health.json",
        target="/elsewhere",
        channel="#ops",
        monitor_host="anvil",
        since=T0,
    )
    assert again.dedup_key == first.dedup_key
    later = link_error_alert(
        "a file owned by uid 65534 is in the way",
        link="/tmp/ollama-health.json",
        target="/elsewhere",
        channel="#ops",
        monitor_host="anvil",
        since=T0 + 3600,
    )
    assert later.dedup_key != first.dedup_key

"""The "alai-fleet overview" dashboard as Grafana sees it: loaded into the Grafana Foundation SDK
(its typed models of Grafana 11's dashboard schema: nothing we write may be unknown to them or
hold a value their enums refuse), the host variable read from `up` (the scrape target's label,
not one a daemon exports), every timestamp shown as time ago, every panel with thresholds of
its own (never Grafana's default "red from 80"), colours that follow each daemon's schedule,
and titles a person can read. The dashboard's queries against a real Prometheus:
tests/system/test_prometheus.py."""

from __future__ import annotations

import copy
import enum
import json
import os
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus, stat, timeseries
from grafana_foundation_sdk.models.dashboard import Dashboard

from fleet.config import load_config
from fleet.examples import load_example_config
from fleet.registry import by_name, manifests
from shared.config import FleetConfig
from shared.observability import overview_dashboard, render_grafana

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "config" / "grafana" / "dashboards" / "fleet-overview.json"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> FleetConfig:
    return load_example_config(
        REPO / "config" / "fleet.example.toml", tmp_path_factory.mktemp("home")
    )


@pytest.fixture(scope="module")
def dashboard(config: FleetConfig) -> dict[str, Any]:
    return overview_dashboard(config, manifests())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dash["panels"] if p["type"] != "row"]


def panel_reading(dash: dict[str, Any], metric: str) -> dict[str, Any]:
    found = [p for p in panels(dash) if any(metric in t["expr"] for t in p["targets"])]
    assert len(found) == 1, (metric, [p["title"] for p in found])
    return found[0]


def colour(panel: dict[str, Any], value: float) -> str:
    """The colour Grafana gives ``value`` by the panel's thresholds (absolute mode: the last
    step whose value is at or below it; the first step is the base)."""
    thresholds = panel["fieldConfig"]["defaults"]["thresholds"]
    assert thresholds["mode"] == "absolute"
    steps = thresholds["steps"]
    assert steps[0]["value"] is None
    chosen = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            chosen = step["color"]
    return str(chosen)


# the Grafana Foundation SDK -------------------------------------------------------------------
def _lost(ours: Any, theirs: Any, path: str) -> list[str]:
    """Where the SDK's round trip dropped or changed what we wrote."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{path}: became {type(theirs).__name__}"]
        out = []
        for key, value in ours.items():
            if key not in theirs:
                out.append(f"{path}.{key}: not in the SDK's schema")
            else:
                out += _lost(value, theirs[key], f"{path}.{key}")
        return out
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(ours) != len(theirs):
            return [f"{path}: list changed"]
        return [
            e
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for e in _lost(a, b, f"{path}[{i}]")
        ]
    return [] if ours == theirs else [f"{path}: {ours!r} became {theirs!r}"]


def _choices(hint: Any) -> tuple[list[type[enum.Enum]], list[Any], bool]:
    """The enums and literals a type hint allows, and whether it also allows a free value."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        enums: list[type[enum.Enum]] = []
        literals: list[Any] = []
        free = False
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            e, lit, f = _choices(arg)
            enums, literals, free = enums + e, literals + lit, free or f
        return enums, literals, free
    if origin is typing.Literal:
        return [], list(typing.get_args(hint)), False
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [hint], [], False
    return [], [], True


def _member(cls: type[enum.Enum], value: Any) -> bool:
    try:
        cls(value)
    except ValueError:
        return False
    return True


def _bad_enums(obj: Any, path: str) -> list[str]:
    """Values the SDK's models hold in an enum- or literal-typed field that the enum refuses
    (from_json keeps raw strings, so a misspelt ``colorMode`` loads without complaint)."""
    if isinstance(obj, list):
        return [e for i, x in enumerate(obj) for e in _bad_enums(x, f"{path}[{i}]")]
    if isinstance(obj, dict):
        return [e for k, x in obj.items() for e in _bad_enums(x, f"{path}.{k}")]
    if not hasattr(obj, "__dict__") or isinstance(obj, enum.Enum):
        return []
    hints = typing.get_type_hints(type(obj))
    out = []
    for name, value in vars(obj).items():
        if value is None:
            continue
        enums, literals, free = _choices(hints.get(name, Any))
        scalar = isinstance(value, str | int | float | bool)
        constrained = scalar and (enums or literals) and not free
        if constrained and value not in literals and not any(_member(e, value) for e in enums):
            out.append(f"{path}.{name}: {value!r} is not one of {enums or literals}")
        out += _bad_enums(value, f"{path}.{name}")
    return out


def sdk_problems(dash: dict[str, Any]) -> list[str]:
    """Load ``dash`` into the SDK's typed models and report what they do not accept."""
    register_default_plugins()
    model = Dashboard.from_json(copy.deepcopy(dash))
    back = json.loads(JSONEncoder().encode(model))
    problems = _lost(dash, back, "dashboard") + _bad_enums(model, "dashboard")
    for i, panel in enumerate(model.panels or []):
        raw = dash["panels"][i]
        if raw["type"] == "stat" and not isinstance(panel.options, stat.Options):
            problems.append(f"{raw['title']}: options not decoded as a stat panel's")
        if raw["type"] == "timeseries":
            custom = panel.field_config.defaults.custom if panel.field_config else None
            if not isinstance(panel.options, timeseries.Options):
                problems.append(f"{raw['title']}: options not decoded as a time series'")
            if not isinstance(custom, timeseries.FieldConfig):
                problems.append(f"{raw['title']}: fieldConfig.custom not a time series'")
        for target in getattr(panel, "targets", None) or []:
            if not isinstance(target, prometheus.Dataquery):
                problems.append(f"{raw['title']}: a target is not a Prometheus query")
    return problems


def test_the_dashboard_loads_into_the_grafana_foundation_sdk(dashboard: dict[str, Any]) -> None:
    assert sdk_problems(dashboard) == []
    # the committed file is the same dashboard (test_observability checks it is current)
    assert sdk_problems(json.loads(COMMITTED.read_text())) == []


def test_the_sdk_check_bites(dashboard: dict[str, Any]) -> None:
    broken = copy.deepcopy(dashboard)
    first = panels(broken)[0]
    first["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    first["options"]["colourMode"] = "background"
    graph = next(p for p in panels(broken) if p["type"] == "timeseries")
    graph["fieldConfig"]["defaults"]["custom"] = {"thresholdStyle": {"mode": "line"}}
    problems = "\n".join(sdk_problems(broken))
    assert "'absolut' is not one of" in problems
    assert "colourMode: not in the SDK's schema" in problems
    assert "thresholdStyle" in problems


def test_the_provisioned_file_is_the_dashboard(config: FleetConfig) -> None:
    files = render_grafana(config, manifests())
    assert json.loads(files["dashboards/fleet-overview.json"]) == overview_dashboard(
        config, manifests()
    )


# labels ------------------------------------------------------------------------------------------
def test_the_host_variable_comes_from_up(dashboard: dict[str, Any]) -> None:
    (host,) = [v for v in dashboard["templating"]["list"] if v["name"] == "host"]
    assert host["query"]["query"] == 'label_values(up{job=~"fleet-.+"}, host)'
    assert host["multi"] and host["includeAll"]
    # every panel is filtered by it, through the target's host label
    for panel in panels(dashboard):
        for target in panel["targets"]:
            assert 'host=~"$host"' in target["expr"], (panel["title"], target["expr"])


def test_the_llm_server_is_llm_host_on_the_ollama_panels(dashboard: dict[str, Any]) -> None:
    up = panel_reading(dashboard, "fleet_ollama_up")
    assert up["targets"][0]["legendFormat"] == "{{host}}: {{llm_host}}"
    assert (
        "llm_host"
        in panel_reading(dashboard, "fleet_ollama_transitions_total")["targets"][0]["expr"]
    )


# timestamps, thresholds ------------------------------------------------------------------------
def test_timestamps_are_shown_as_time_ago(dashboard: dict[str, Any]) -> None:
    ages = 0
    for panel in panels(dashboard):
        for target in panel["targets"]:
            for name in re.findall(r"fleet_[a-z_]+_timestamp_seconds", target["expr"]):
                ages += 1
                assert target["expr"].startswith(f"time() - {name}{{"), target["expr"]
                assert panel["fieldConfig"]["defaults"]["unit"] == "s", panel["title"]
    assert ages >= len(manifests()) + 1  # a tile per daemon and restore-loop's per-DB panel
    restore = panel_reading(dashboard, "fleet_restore_last_success_timestamp_seconds")
    assert restore["type"] == "stat" and "time ago" in restore["title"]


def test_no_panel_keeps_grafanas_default_thresholds(dashboard: dict[str, Any]) -> None:
    grafana_default = [{"color": "green", "value": None}, {"color": "red", "value": 80}]
    for panel in panels(dashboard):
        defaults = panel["fieldConfig"]["defaults"]
        assert "thresholds" in defaults, panel["title"]
        assert defaults["thresholds"]["steps"] != grafana_default, panel["title"]
        if panel["type"] == "stat":  # stats are coloured by their thresholds
            assert defaults["color"] == {"mode": "thresholds"}, panel["title"]


def last_success_tile(dash: dict[str, Any], daemon: str) -> dict[str, Any]:
    (tile,) = [
        p
        for p in panels(dash)
        if p["type"] == "stat"
        and any(
            f'fleet_last_success_timestamp_seconds{{daemon="{daemon}"' in t["expr"]
            for t in p["targets"]
        )
    ]
    return tile


def test_last_success_colours_follow_each_daemons_schedule(dashboard: dict[str, Any]) -> None:
    hour = 3600.0
    nightly = last_success_tile(dashboard, "blueprint-watchdog")  # a daily job
    assert colour(nightly, 2 * hour) == "green"
    assert colour(nightly, 25 * hour) == "green"
    assert colour(nightly, 27 * hour) == "yellow"
    assert colour(nightly, 4 * 24 * hour) == "red"  # FleetCycleStale fired after 3 days
    sweeper = last_success_tile(dashboard, "claim-sweeper")  # every 60 s
    assert colour(sweeper, 70) == "green"
    assert colour(sweeper, 200) == "yellow"
    assert colour(sweeper, 10 * 60) == "red"
    for manifest in manifests():
        tile = last_success_tile(dashboard, manifest.name)
        assert tile["fieldConfig"]["defaults"]["noValue"] == "no success yet"
        assert manifest.name in tile["title"]


def test_config_intervals_move_the_colours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "fleet.toml"
    cfg.write_text("[claim_sweeper]\ninterval_s = 3600.0\n")
    tile = last_success_tile(overview_dashboard(load_config(cfg), manifests()), "claim-sweeper")
    assert colour(tile, 10 * 60) == "green"  # red with the default 60 s


def test_up_and_ok_gauges_are_red_at_zero(dashboard: dict[str, Any]) -> None:
    for metric in (
        "up{job=",
        "fleet_ollama_up",
        "fleet_heartbeat_peer_up",
        "fleet_zakon_registry_ok",
    ):
        panel = panel_reading(dashboard, metric)
        assert panel["type"] == "stat", metric
        assert colour(panel, 0) == "red" and colour(panel, 1) == "green", metric
        texts = {
            value: option["text"]
            for mapping in panel["fieldConfig"]["defaults"]["mappings"]
            for value, option in mapping["options"].items()
        }
        assert set(texts) == {"0", "1"}, metric


def levels(panel: dict[str, Any]) -> list[tuple[float, str]]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [(s["value"], s["color"]) for s in steps[1:]]


def test_alert_levels_are_drawn_on_their_graphs(dashboard: dict[str, Any]) -> None:
    def drawn(panel: dict[str, Any]) -> bool:
        custom = panel["fieldConfig"]["defaults"]["custom"]
        return bool(custom["thresholdsStyle"]["mode"] == "dashed")

    # a manifest's alert `metric > N`: a dashed line at N, orange for a warning, red critical
    stale = panel_reading(dashboard, "fleet_email_stale{")
    assert levels(stale) == [(0, "orange")] and drawn(stale)
    two = panel_reading(dashboard, "fleet_heartbeat_two_primaries")
    assert levels(two) == [(0, "red")]
    oldest = panel_reading(dashboard, "fleet_claims_oldest_expired_age_seconds")
    assert levels(oldest) == [(3600, "orange")]  # the config's alert_after_s
    # the fleet-wide ones
    assert levels(panel_reading(dashboard, "fleet_notifications_pending")) == [(50, "orange")]
    assert levels(panel_reading(dashboard, "fleet_start_time_seconds")) == [(3, "orange")]
    # no alert: nothing drawn, one neutral colour
    backlog = panel_reading(dashboard, "fleet_email_backlog")
    assert levels(backlog) == [] and not drawn(backlog)


# titles ----------------------------------------------------------------------------------------
def test_panel_titles_are_readable(dashboard: dict[str, Any]) -> None:
    titles = [p["title"] for p in panels(dashboard)]
    for title in titles:
        assert "fleet_" not in title and "_" not in title.replace("-", " ").split(":")[-1], title
        assert title[0].isupper() or title.split(" ")[0] in by_name(), title
    assert len(titles) == len(set(titles)), "two panels share a title"
    by_metric = {
        "fleet_email_llm_requests_total": "Email LLM requests",
        "fleet_restore_lag_seconds": "Restore lag",
        "fleet_restore_last_success_timestamp_seconds": "Restore last success: time ago",
        "fleet_zakon_registry_ok": "ZAKON registry OK",
        "fleet_heartbeat_peer_up": "Heartbeat peer up",
        "fleet_ollama_probe_duration_seconds": "Ollama probe duration",
    }
    for metric, title in by_metric.items():
        assert panel_reading(dashboard, metric)["title"] == title
    for panel in panels(dashboard):  # the metric's help is the panel's description
        for manifest in manifests():
            for spec in manifest.metrics:
                if panel["title"] == by_metric.get(spec.name):
                    assert panel["description"] == spec.help

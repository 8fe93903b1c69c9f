"""The Prometheus/Grafana pack as generated code: the committed files equal what the generators
render from config/fleet.example.toml, every metric a dashboard panel or an alert reads is one
a daemon exports (the catalogue in shared/observability.py; claim-sweeper's part is checked
against a real scrape in test_prometheus.py), and the dashboard is laid out sanely."""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import pytest

from daemons import REGISTRY
from shared import __version__
from shared.config import load_config
from shared.logging import get_logger
from shared.metrics import DaemonMetrics
from shared.notify import NotifyMetrics
from shared.observability import (
    DAEMON_METRICS,
    NOTIFY_METRICS,
    RUNTIME_METRICS,
    alert_rules,
    dashboard_exprs,
    exported_series,
    metric_names_in,
    overview_dashboard,
    render_examples,
    render_grafana,
    render_rules,
    unknown_metrics,
)
from shared.runtime import DaemonContext
from tests.conftest import run_fleet

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "fleet.example.toml"


@pytest.fixture
def example_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    return load_config(EXAMPLE)


def test_committed_pack_equals_the_generated_one() -> None:
    for rel, text in render_examples(EXAMPLE).items():
        path = REPO / rel
        assert path.is_file(), f"{rel} missing: run `fleet observability example`"
        assert path.read_text() == text, f"{rel} drifted: run `fleet observability example`"


@pytest.mark.system
def test_example_check_command_reports_drift(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    ok = run_fleet(["observability", "example", "--check"], env, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "fleet.example.toml").write_text(EXAMPLE.read_text())
    drift = run_fleet(["observability", "example", "--check", "--repo", str(repo)], env, tmp_path)
    assert drift.returncode == 1
    assert "config/prometheus/rules/fleet.rules.yml: missing" in drift.stdout
    fixed = run_fleet(["observability", "example", "--repo", str(repo)], env, tmp_path)
    assert fixed.returncode == 0
    assert (repo / "config/grafana/dashboards/fleet-overview.json").is_file()


def test_every_alert_reads_only_exported_metrics(example_config) -> None:  # type: ignore[no-untyped-def]
    for alert in alert_rules(example_config):
        used = metric_names_in(alert.expr)
        assert used or alert.expr.startswith("up{"), f"{alert.name} reads no fleet_ metric"
        if alert.daemons:
            assert unknown_metrics([alert.expr], alert.daemons) == set(), alert.name
        else:
            assert unknown_metrics([alert.expr]) == set(), alert.name


def test_every_alert_links_a_runbook_and_its_doc_section(example_config) -> None:  # type: ignore[no-untyped-def]
    alerts_doc = (REPO / "docs" / "alerts.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", alerts_doc, re.M)
    }
    for alert in alert_rules(example_config):
        assert alert.anchor in anchors, f"docs/alerts.md has no section for {alert.name}"
        m = re.fullmatch(r"docs/runbooks/(.+)\.md", alert.runbook)
        if m:
            page = m.group(1)
            assert page == "{{ $labels.daemon }}" or page in REGISTRY, alert.runbook
        else:
            assert (REPO / alert.runbook).is_file(), alert.runbook
    assert (REPO / "docs/runbooks/claim-sweeper.md").is_file()


def test_rules_take_thresholds_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text("[claim_sweeper]\ninterval_s = 42.0\nalert_after_s = 7200.0\n")
    text = render_rules(load_config(cfg))
    assert 'expr: "vector(42)"\n        labels:\n          daemon: claim-sweeper' in text
    assert "fleet_claims_oldest_expired_age_seconds > 7200" in text


def test_dashboard_reads_only_exported_metrics() -> None:
    dash = overview_dashboard()
    exprs = dashboard_exprs(dash)
    assert len(exprs) > 10
    assert unknown_metrics(exprs) == set()
    # the check bites: a renamed metric in a panel is reported
    assert unknown_metrics([*exprs, "fleet_claims_helt"]) == {"fleet_claims_helt"}


def test_dashboard_layout_and_rows() -> None:
    dash = overview_dashboard()
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        for other in boxes:
            overlap = (
                g["x"] < other["x"] + other["w"]
                and other["x"] < g["x"] + g["w"]
                and g["y"] < other["y"] + other["h"]
                and other["y"] < g["y"] + g["h"]
            )
            assert not overlap, (p["title"], g, other)
        boxes.append(g)
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows[0] == "Fleet health"
    assert rows[1:] == [d for d in REGISTRY if DAEMON_METRICS.get(d)]
    # every daemon's own metric has a panel in its row; the health row covers the runtime ones
    current = None
    by_row: dict[str, str] = {}
    for p in panels:
        if p["type"] == "row":
            current = p["title"]
            continue
        for t in p.get("targets", []):
            by_row[t["expr"]] = current or ""
    for daemon, metrics in DAEMON_METRICS.items():
        row_exprs = " ".join(e for e, r in by_row.items() if r == daemon)
        for metric in metrics:
            assert metric.name in row_exprs, (daemon, metric.name)
    health = " ".join(e for e, r in by_row.items() if r == "Fleet health")
    for metric in (*RUNTIME_METRICS, *NOTIFY_METRICS):
        if metric.name != "fleet_notifications_collapsed_total":
            assert metric.name in health, metric.name


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    files = render_grafana()
    dash = json.loads(files["dashboards/fleet-overview.json"])
    assert dash["uid"] == "alai-fleet-overview"
    assert "type: prometheus" in files["provisioning/datasources/alai-fleet.yml"]
    assert "type: file" in files["provisioning/dashboards/alai-fleet.yml"]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_daemon_registers_only_catalogued_metrics(
    name: str,
    example_config,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Instantiating each daemon registers its metrics (claim-sweeper does it in __init__); any
    fleet_ family it registers must be in the catalogue, so a rename in a daemon shows up here.
    A daemon that registers in open() is covered by its own process tests."""
    spec = REGISTRY[name]
    cls = getattr(importlib.import_module(spec.module), spec.class_name)
    metrics = DaemonMetrics(name, "testhost", __version__)
    NotifyMetrics(metrics.registry)
    ctx = DaemonContext(
        config=example_config,
        section=example_config.daemon_section(spec.section),
        role="primary",
        log=get_logger(daemon=name),
        metrics=metrics,
        outbox=None,
        dry_run=True,
    )
    try:
        cls(ctx)
    except Exception as exc:  # a daemon mid-construction elsewhere: not this test's subject
        pytest.skip(f"{name} cannot be constructed bare: {type(exc).__name__}: {exc}")
    registered = set()
    for family in metrics.registry.collect():
        registered |= {s.name for s in family.samples}
    fleet = {n for n in registered if n.startswith("fleet_")}
    assert fleet - exported_series([name]) == set(), f"add these to DAEMON_METRICS[{name!r}]"

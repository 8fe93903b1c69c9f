"""The Prometheus/Grafana pack as generated code: the committed files equal what the generators
render from config/fleet.example.toml, every metric a dashboard panel or an alert reads is one
a daemon exports (the metric lists in the daemons' manifests; claim-sweeper's is checked against
a real scrape in test_prometheus.py), and the dashboard is laid out sanely."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from fleet.config import load_config
from fleet.examples import pack_examples
from fleet.registry import by_name, manifests
from shared import __version__
from shared.config import FleetConfig
from shared.daemon import DaemonContext
from shared.logging import get_logger
from shared.metrics import NOTIFY_METRICS, RUNTIME_METRICS, DaemonMetrics
from shared.notify import NotifyMetrics
from shared.observability import (
    alert_rules,
    dashboard_exprs,
    exported_series,
    metric_names_in,
    overview_dashboard,
    render_grafana,
    render_rules,
    unknown_metrics,
)
from shared.roles import Role
from tests.conftest import run_fleet

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "fleet.example.toml"


@pytest.fixture
def example_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FleetConfig:
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    return load_config(EXAMPLE)


def test_committed_pack_equals_the_generated_one() -> None:
    files = pack_examples(EXAMPLE)
    assert {"config/prometheus/prometheus.yml", "config/prometheus/rules/fleet.rules.yml"} <= set(
        files
    )
    for rel, data in files.items():
        path = REPO / rel
        assert path.is_file(), f"{rel} missing: run `fleet observability example`"
        assert path.read_bytes() == data, f"{rel} drifted: run `fleet observability example`"


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
    assert "regenerate with: fleet observability example" in drift.stderr
    assert not (repo / "config/prometheus").exists(), "--check wrote"
    fixed = run_fleet(["observability", "example", "--repo", str(repo)], env, tmp_path)
    assert fixed.returncode == 0
    assert (repo / "config/grafana/dashboards/fleet-overview.json").is_file()
    again = run_fleet(["observability", "example", "--check", "--repo", str(repo)], env, tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout


@pytest.mark.system
def test_grafana_command_takes_the_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """The dashboard's colours follow the config's intervals, so the command reads it; a bad
    one exits 78 naming each key, and nothing is written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["HOME"] = str(tmp_path / "home")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('[claim_sweeper]\ninterval_s = "soon"\nbogus = 1\n')
    out = tmp_path / "grafana"
    bad = run_fleet(
        ["observability", "grafana", "--out", str(out), "--config", str(cfg)], env, tmp_path
    )
    assert bad.returncode == 78, bad.stdout + bad.stderr
    assert "claim_sweeper.interval_s" in bad.stderr and "claim_sweeper.bogus" in bad.stderr
    assert "Traceback" not in bad.stderr and not out.exists()
    cfg.write_text("[claim_sweeper]\ninterval_s = 3600.0\n")
    ok = run_fleet(
        ["observability", "grafana", "--out", str(out), "--config", str(cfg)], env, tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dash = json.loads((out / "dashboards" / "fleet-overview.json").read_text())
    (tile,) = [p for p in dash["panels"] if p["title"] == "claim-sweeper last success: time ago"]
    steps = tile["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, round(1.1 * 3600 + 60), 3 * 3600 + 120]


def test_every_alert_reads_only_exported_metrics(example_config: FleetConfig) -> None:
    known = by_name()
    for alert in alert_rules(example_config, manifests()):
        used = metric_names_in(alert.expr)
        assert used or alert.expr.startswith("up{"), f"{alert.name} reads no fleet_ metric"
        if alert.daemons:
            readers = [known[d] for d in alert.daemons]
            assert unknown_metrics([alert.expr], readers) == set(), alert.name
        else:
            assert unknown_metrics([alert.expr], manifests()) == set(), alert.name
    # the check bites: a misspelt metric in an alert is reported
    assert unknown_metrics(["fleet_claims_expird > 0"], manifests()) == {"fleet_claims_expird"}


def test_every_alert_links_a_runbook_and_its_doc_section(example_config: FleetConfig) -> None:
    alerts_doc = (REPO / "docs" / "alerts.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", alerts_doc, re.M)
    }
    for alert in alert_rules(example_config, manifests()):
        assert alert.anchor in anchors, f"docs/alerts.md has no section for {alert.name}"
        m = re.fullmatch(r"docs/runbooks/(.+)\.md", alert.runbook)
        if m:
            page = m.group(1)
            assert page == "{{ $labels.daemon }}" or page in by_name(), alert.runbook
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
    text = render_rules(load_config(cfg), manifests())
    groups = {g["name"]: g["rules"] for g in yaml.safe_load(text)["groups"]}
    intervals = {r["labels"]["daemon"]: r["expr"] for r in groups["alai-fleet-constants"]}
    assert intervals["claim-sweeper"] == "vector(42)"
    assert intervals["email-reactor"] == "vector(300)"  # the others keep their defaults
    claims = next(r for r in groups["alai-fleet"] if r["alert"] == "FleetClaimsExpired")
    assert claims["expr"].endswith("fleet_claims_oldest_expired_age_seconds > 7200")
    assert "expired over 120 minutes ago" in claims["annotations"]["summary"]


def test_dashboard_reads_only_exported_metrics(example_config: FleetConfig) -> None:
    dash = overview_dashboard(example_config, manifests())
    exprs = dashboard_exprs(dash)
    assert len(exprs) > 10
    assert unknown_metrics(exprs, manifests()) == set()
    # the check bites: a renamed metric in a panel is reported
    assert unknown_metrics([*exprs, "fleet_claims_helt"], manifests()) == {"fleet_claims_helt"}


def test_dashboard_layout_and_rows(example_config: FleetConfig) -> None:
    dash = overview_dashboard(example_config, manifests())
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
    assert rows[1:] == [m.name for m in manifests() if m.metrics]
    # every daemon's own metric has a panel in its row; the health row covers the runtime ones
    current = None
    by_row: dict[str, str] = {}
    for p in panels:
        if p["type"] == "row":
            current = p["title"]
            continue
        for t in p.get("targets", []):
            by_row[t["expr"]] = current or ""
    for manifest in manifests():
        row_exprs = " ".join(e for e, r in by_row.items() if r == manifest.name)
        for metric in manifest.metrics:
            assert metric.name in row_exprs, (manifest.name, metric.name)
    health = " ".join(e for e, r in by_row.items() if r == "Fleet health")
    for metric in (*RUNTIME_METRICS, *NOTIFY_METRICS):
        if metric.name != "fleet_notifications_collapsed_total":
            assert metric.name in health, metric.name


def test_grafana_provisioning_points_at_the_dashboard(example_config: FleetConfig) -> None:
    files = render_grafana(example_config, manifests())
    dash = json.loads(files["dashboards/fleet-overview.json"])
    assert dash["uid"] == "alai-fleet-overview"
    assert "type: prometheus" in files["provisioning/datasources/alai-fleet.yml"]
    assert "type: file" in files["provisioning/dashboards/alai-fleet.yml"]


@pytest.mark.parametrize("name", list(by_name()))
def test_each_daemon_registers_only_catalogued_metrics(
    name: str, example_config: FleetConfig, tmp_path: Path
) -> None:
    """Instantiating each daemon registers its metrics (claim-sweeper does it in __init__); any
    fleet_ family it registers must be in its manifest, so a metric registered outside the
    manifest's list shows up here. A daemon that registers in open() is covered by its own
    process tests."""
    manifest = by_name()[name]
    cls = manifest.load_daemon()
    metrics = DaemonMetrics(name, __version__)
    NotifyMetrics(metrics.registry)
    ctx = DaemonContext(
        config=example_config,
        section=example_config.daemon_section(manifest.section_name),
        role=Role.PRIMARY,
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
    assert fleet - exported_series([manifest]) == set(), f"add these to {name}'s manifest"

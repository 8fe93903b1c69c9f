"""The alerting half of the pack as rendered text: the Prometheus `alerting:` block, the
Alertmanager routing (severity, grouping, the alerts a daemon announces itself), inhibition,
Slack receivers reading their URL from files, absolute runbook links, the restart-loop metric
and its alert. The real amtool/alertmanager/prometheus: tests/system/test_alertmanager.py and
test_alerting.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from fleet.alerting import DAEMON_ANNOUNCED
from fleet.config import load_config
from fleet.registry import manifests
from shared.config import ConfigError, FleetConfig
from shared.metrics import DaemonMetrics
from shared.observability import (
    HostTarget,
    alert_rules,
    render_alertmanager_config,
    render_prometheus_config,
    render_rules,
)


@pytest.fixture(autouse=True)
def _no_fleet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))


def config(tmp_path: Path, toml: str = "") -> FleetConfig:
    path = tmp_path / "fleet.toml"
    path.write_text(toml)
    return load_config(path)


def am(cfg: FleetConfig, quiet: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        render_alertmanager_config(cfg, quiet_alerts=DAEMON_ANNOUNCED if quiet is None else quiet)
    )
    return doc


def test_prometheus_sends_to_the_configured_alertmanagers(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[alerting]\nalertmanagers = ["am1:9093", "10.0.0.2:9093"]\n')
    text = render_prometheus_config(cfg, manifests(), [HostTarget("anvil", "anvil")])
    assert yaml.safe_load(text)["alerting"] == {
        "alertmanagers": [{"static_configs": [{"targets": ["am1:9093", "10.0.0.2:9093"]}]}]
    }
    none = config(tmp_path, "[alerting]\nalertmanagers = []\n")
    assert "alerting" not in yaml.safe_load(
        render_prometheus_config(none, manifests(), [HostTarget("anvil", "anvil")])
    )
    assert yaml.safe_load(
        render_prometheus_config(config(tmp_path), manifests(), [HostTarget("a", "a")])
    )["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]


def test_severity_routes_criticals_to_the_escalation_channel(tmp_path: Path) -> None:
    cfg = config(
        tmp_path, '[slack]\nops_channel = "#fleet-ops"\n[alerting]\nescalation_channel = "#page"\n'
    )
    doc = am(cfg, quiet={})
    route = doc["route"]
    assert route["receiver"] == "slack-ops"
    assert route["group_by"] == ["alertname", "host"]
    assert route["routes"] == [
        {"receiver": "slack-escalation", "matchers": ['severity="critical"']}
    ]
    channels = {
        r["name"]: [s["channel"] for s in r.get("slack_configs", [])] for r in doc["receivers"]
    }
    assert channels == {"slack-ops": ["#fleet-ops"], "slack-escalation": ["#page"]}
    # no escalation channel: criticals go to #ops too (still their own receiver)
    plain = am(config(tmp_path), quiet={})
    assert {r["name"]: r["slack_configs"][0]["channel"] for r in plain["receivers"]} == {
        "slack-ops": "#ops",
        "slack-escalation": "#ops",
    }


def test_alerts_a_daemon_announces_itself_go_to_no_one(tmp_path: Path) -> None:
    doc = am(config(tmp_path), quiet={"FleetB": "why", "FleetA": "why"})
    first = doc["route"]["routes"][0]
    assert first == {"receiver": "daemon-announced", "matchers": ['alertname=~"FleetA|FleetB"']}
    announced = next(r for r in doc["receivers"] if r["name"] == "daemon-announced")
    assert announced == {"name": "daemon-announced"}  # no integration: nothing is sent
    with pytest.raises(ValueError, match="not an alert name"):
        render_alertmanager_config(config(tmp_path), quiet_alerts={"Fleet.*": "a regex"})


def test_grouping_timing_and_resolved_messages_come_from_the_config(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "[alerting]\ngroup_wait_s = 1\ngroup_interval_s = 2.5\nrepeat_interval_s = 7200\n",
    )
    route = am(cfg)["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "1s",
        "2500ms",
        "2h",
    )
    default = am(config(tmp_path))["route"]
    assert (default["group_wait"], default["group_interval"], default["repeat_interval"]) == (
        "30s",
        "5m",
        "4h",
    )
    for receiver in am(cfg)["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert slack["send_resolved"] is True
            assert "runbook_url" in slack["text"]


def test_warnings_are_inhibited_by_a_critical_of_the_same_daemon_and_host(tmp_path: Path) -> None:
    assert am(config(tmp_path))["inhibit_rules"] == [
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["daemon", "host"],
        }
    ]


def test_slack_urls_and_tokens_are_files_never_values(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        "[alerting]\n"
        'slack_api_url_file = "/etc/prometheus/alai-fleet/slack-ops.url"\n'
        'escalation_slack_api_url_file = "/etc/prometheus/alai-fleet/slack-page.url"\n'
        'slack_bot_token_file = "/etc/prometheus/alai-fleet/slack-bot-token"\n',
    )
    receivers = {r["name"]: r for r in am(cfg)["receivers"]}
    ops = receivers["slack-ops"]["slack_configs"][0]
    page = receivers["slack-escalation"]["slack_configs"][0]
    assert ops["api_url_file"] == "/etc/prometheus/alai-fleet/slack-ops.url"
    assert page["api_url_file"] == "/etc/prometheus/alai-fleet/slack-page.url"
    for slack in (ops, page):
        assert "api_url" not in slack
        assert slack["http_config"] == {
            "authorization": {
                "type": "Bearer",
                "credentials_file": "/etc/prometheus/alai-fleet/slack-bot-token",
            }
        }
    # without a second file both receivers use the first; without a token, no http_config
    plain = {r["name"]: r for r in am(config(tmp_path))["receivers"]}
    files = {
        n: r["slack_configs"][0]["api_url_file"]
        for n, r in plain.items()
        if n != "daemon-announced"
    }
    assert set(files.values()) == {"/etc/prometheus/alai-fleet/slack-webhook.url"}
    assert all(
        "http_config" not in r["slack_configs"][0]
        for n, r in plain.items()
        if n != "daemon-announced"
    )


def test_runbook_and_doc_links_are_absolute(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[alerting]\nrunbook_base_url = "https://docs.example.com/fleet"\n')
    doc = yaml.safe_load(render_rules(cfg, manifests()))
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert alerts
    for rule in alerts:
        notes = rule["annotations"]
        assert notes["runbook_url"].startswith("https://docs.example.com/fleet/docs/"), notes
        assert notes["doc_url"].startswith("https://docs.example.com/fleet/docs/alerts.md#")
    down = next(r for r in alerts if r["alert"] == "FleetDaemonDown")
    assert down["annotations"]["runbook_url"] == (
        "https://docs.example.com/fleet/docs/runbooks/{{ $labels.daemon }}.md"
    )


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('alertmanagers = ["nohost"]', "alerting.alertmanagers"),
        ('alertmanagers = ["http://am:9093"]', "alerting.alertmanagers"),
        ('runbook_base_url = "/docs"', "alerting.runbook_base_url"),
        ('escalation_channel = "has space"', "alerting.escalation_channel"),
        ("repeat_interval_s = -1", "alerting.repeat_interval_s"),
    ],
)
def test_bad_alerting_keys_are_named(tmp_path: Path, toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(tmp_path, f"[alerting]\n{toml}\n")
    assert key in err.value.render()


def test_each_daemon_exports_its_process_start_time() -> None:
    metrics = DaemonMetrics("claim-sweeper", "1.0", started_at=1234.5)
    text = generate_latest(metrics.registry).decode()
    assert 'fleet_start_time_seconds{daemon="claim-sweeper"} 1234.5' in text
    # by default, the time this process started (the same for every daemon in it)
    a = DaemonMetrics("a", "1.0").render().decode()
    b = DaemonMetrics("b", "1.0").render().decode()
    start_a = a.split('fleet_start_time_seconds{daemon="a"} ')[1].split()[0]
    start_b = b.split('fleet_start_time_seconds{daemon="b"} ')[1].split()[0]
    assert start_a == start_b and float(start_a) > 1.6e9


def test_the_crash_loop_alert_counts_start_time_changes(tmp_path: Path) -> None:
    rules = {a.name: a for a in alert_rules(config(tmp_path), manifests())}
    loop = rules["FleetDaemonCrashLooping"]
    assert loop.expr == "changes(fleet_start_time_seconds[15m]) > 3"
    assert loop.severity == "warning"  # FleetDaemonDown pages once systemd gives up

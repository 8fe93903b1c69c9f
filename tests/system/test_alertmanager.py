"""The generated Alertmanager config with the real tools: `amtool check-config` on the committed
example, `amtool config routes test` for the routing by severity (and the alerts a daemon
announces itself going to no one), a real alertmanager inhibiting a warning under a firing
critical of the same daemon and host, and bad `[alerting]` keys refused with exit 78. The whole
chain with Prometheus and a running daemon: test_alerting.py."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.alerting import DAEMON_ANNOUNCED
from fleet.registry import manifests
from shared.observability import alert_rules
from tests.conftest import free_port, http_get, run_fleet, wait_until
from tests.fakes.slack_webhook import FakeSlackWebhook
from tests.prometheus_support import (
    REPO,
    alertmanager_binary,
    amtool,
    example_config,
    running_server,
)

pytestmark = pytest.mark.system

COMMITTED = REPO / "config" / "alertmanager" / "alertmanager.yml"


def test_amtool_checks_the_committed_config() -> None:
    res = amtool("check-config", str(COMMITTED))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def receiver_for(config: Path, *labels: str) -> str:
    res = amtool("config", "routes", "test", f"--config.file={config}", *labels)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_routes_by_severity_and_announced_alerts_go_to_no_one() -> None:
    assert receiver_for(COMMITTED, "alertname=FleetDaemonDown", "severity=critical") == (
        "slack-escalation"
    )
    assert receiver_for(COMMITTED, "alertname=FleetCycleStale", "severity=warning") == "slack-ops"
    assert receiver_for(COMMITTED, "alertname=SomethingNew") == "slack-ops"
    for name in DAEMON_ANNOUNCED:
        assert receiver_for(COMMITTED, f"alertname={name}", "severity=critical") == (
            "daemon-announced"
        ), name
    # the table names real alerts (a renamed alert would silently page again)
    assert set(DAEMON_ANNOUNCED) <= {a.name for a in alert_rules(example_config(), manifests())}


def am_config(tmp_path: Path, env: dict[str, str], hook: FakeSlackWebhook) -> Path:
    url = tmp_path / "slack.url"
    url.write_text(hook.hook_url("ops"))
    esc = tmp_path / "escalation.url"
    esc.write_text(hook.hook_url("escalation"))
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        "[alerting]\n"
        f'slack_api_url_file = "{url}"\nescalation_slack_api_url_file = "{esc}"\n'
        "group_wait_s = 1\ngroup_interval_s = 1\n"
    )
    res = run_fleet(
        ["observability", "alertmanager", "--out", str(tmp_path / "am"), "--config", str(cfg)],
        env,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return tmp_path / "am" / "alertmanager.yml"


def post_alerts(base: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{base}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def alert(name: str, severity: str, daemon: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "daemon": daemon, "host": "anvil"},
        "annotations": {"summary": f"{name} {daemon}", "runbook_url": "https://x.example.com/"},
    }


@pytest.fixture
def webhook() -> Iterator[FakeSlackWebhook]:
    with FakeSlackWebhook() as hook:
        yield hook


def test_a_firing_critical_inhibits_warnings_of_the_same_daemon_and_host(
    fleet_env: dict[str, str], tmp_path: Path, webhook: FakeSlackWebhook
) -> None:
    binary = alertmanager_binary()
    config = am_config(tmp_path, fleet_env, webhook)
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
    with running_server(argv, f"http://127.0.0.1:{port}", tmp_path, "alertmanager") as base:
        post_alerts(
            base,
            [
                alert("FleetDaemonDown", "critical", "claim-sweeper"),
                alert("FleetCycleStale", "warning", "claim-sweeper"),
                alert("FleetCycleStale", "warning", "heartbeat"),
            ],
        )

        def states() -> dict[tuple[str, str], str]:
            _status, body = http_get(f"{base}/api/v2/alerts")
            return {
                (a["labels"]["alertname"], a["labels"]["daemon"]): a["status"]["state"]
                for a in json.loads(body)
            }

        assert wait_until(lambda: len(webhook.requests) >= 2, timeout=30), webhook.requests
        assert wait_until(lambda: len(states()) == 3, timeout=10)
        assert states() == {
            ("FleetDaemonDown", "claim-sweeper"): "active",
            ("FleetCycleStale", "claim-sweeper"): "suppressed",
            ("FleetCycleStale", "heartbeat"): "active",
        }
        assert len(webhook.requests) == 2
        [critical] = webhook.payloads("escalation")
        [warning] = webhook.payloads("ops")
        assert "FleetDaemonDown" in json.dumps(critical) and "claim-sweeper" in json.dumps(critical)
        assert "heartbeat" in json.dumps(warning) and "claim-sweeper" not in json.dumps(warning)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('alertmanagers = ["no-port"]', "alerting.alertmanagers"),
        ('alertmanagers = ["127.0.0.1:9093/path"]', "alerting.alertmanagers"),
        ('runbook_base_url = "docs/"', "alerting.runbook_base_url"),
        ("group_wait_s = 0", "alerting.group_wait_s"),
        ('slack_api_url = "https://hooks.slack.com/services/T/B/x"', "alerting.slack_api_url"),
    ],
)
def test_bad_alerting_keys_exit_78_naming_the_key(
    fleet_env: dict[str, str], tmp_path: Path, toml: str, key: str
) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f"[alerting]\n{toml}\n")
    for args in (["check-config"], ["observability", "alertmanager", "--out", str(tmp_path)]):
        res = run_fleet([*args, "--config", str(cfg)], fleet_env, tmp_path)
        assert res.returncode == 78, res.stdout + res.stderr
        assert key in res.stderr and "Traceback" not in res.stderr
        assert "hooks.slack.com" not in res.stdout + res.stderr
    assert not (tmp_path / "alertmanager.yml").exists()


def test_the_generated_config_names_files_never_the_secrets(
    fleet_env: dict[str, str], tmp_path: Path, webhook: FakeSlackWebhook
) -> None:
    config = am_config(tmp_path, fleet_env, webhook)
    doc = yaml.safe_load(config.read_text())
    slack = [s for r in doc["receivers"] for s in r.get("slack_configs", [])]
    assert len(slack) == 2
    assert all("api_url" not in s and s["api_url_file"].endswith(".url") for s in slack)
    assert webhook.base_url not in config.read_text()
    res = amtool("check-config", str(config))
    assert res.returncode == 0, res.stdout + res.stderr

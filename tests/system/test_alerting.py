"""Alerting end to end with the real binaries: `fleet observability prometheus` and
`fleet observability alertmanager` generate the configs (checked by promtool and
`amtool check-config`), a real `fleet run claim-sweeper` is scraped by a real prometheus, which
sends to a real alertmanager posting to a fake Slack webhook on 127.0.0.1. Stopping the daemon
makes exactly one alert message arrive; starting it again exactly one resolved message.

Only the timings are shortened for the test (scrape and evaluation every second,
FleetDaemonDown's `for` 1 s, group_wait/group_interval 1 s); the routing, templates, receivers
and rules are what the commands generate."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes.slack_webhook import FakeSlackWebhook
from tests.prometheus_support import (
    alertmanager_binary,
    amtool,
    need,
    promtool,
    running_server,
)

pytestmark = pytest.mark.system

RUNBOOK_BASE = "https://docs.example.com/alai-fleet/"
OTHER_DAEMONS = (
    "email_reactor",
    "ollama_health",
    "restore_loop",
    "heartbeat",
    "blueprint_watchdog",
)


def fleet_toml(tmp_path: Path, sweeper_port: int, am_port: int, hook: FakeSlackWebhook) -> Path:
    """Only claim-sweeper enabled; the Slack webhook URLs in files, as on a real host."""
    ops_url = tmp_path / "slack-ops.url"
    ops_url.write_text(hook.hook_url("ops") + "\n")
    esc_url = tmp_path / "slack-escalation.url"
    esc_url.write_text(hook.hook_url("escalation") + "\n")
    for secret in (ops_url, esc_url):
        secret.chmod(0o600)
    disabled = "".join(f"[{name}]\nenabled = false\n" for name in OTHER_DAEMONS)
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f"{disabled}"
        f"[claim_sweeper]\nmetrics_port = {sweeper_port}\ninterval_s = 5.0\n"
        "[alerting]\n"
        f'runbook_base_url = "{RUNBOOK_BASE}"\n'
        f'alertmanagers = ["127.0.0.1:{am_port}"]\n'
        'escalation_channel = "#ops-escalation"\n'
        f'slack_api_url_file = "{ops_url}"\n'
        f'escalation_slack_api_url_file = "{esc_url}"\n'
        "group_wait_s = 1\ngroup_interval_s = 1\nrepeat_interval_s = 3600\n"
    )
    return cfg


def shorten_rules(rules: Path) -> None:
    """FleetDaemonDown waits 2m in production; 1s here (the rule is otherwise unchanged)."""
    doc = yaml.safe_load(rules.read_text())
    changed = 0
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "FleetDaemonDown":
                rule["for"] = "1s"
                changed += 1
    assert changed == 1
    rules.write_text(yaml.safe_dump(doc, sort_keys=False))


def shorten_intervals(prometheus_yml: Path) -> None:
    doc = yaml.safe_load(prometheus_yml.read_text())
    doc["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    prometheus_yml.write_text(yaml.safe_dump(doc, sort_keys=False))


class Sweeper:
    """`fleet run claim-sweeper` as a real process, stopped and started again by the test."""

    def __init__(self, cfg: Path, env: dict[str, str], cwd: Path, notify: NotifySocket) -> None:
        self.cfg, self.env, self.cwd, self.notify = cfg, env, cwd, notify
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        ready_before = self.notify.count("READY=1")
        self.proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "claim-sweeper", "--config", str(self.cfg)],
            env={**self.env, "NOTIFY_SOCKET": self.notify.path},
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if not wait_until(lambda: self.notify.count("READY=1") > ready_before, timeout=30):
            self.proc.kill()
            _out, err = self.proc.communicate()
            pytest.fail(f"claim-sweeper did not become ready: {err[-2000:]}")

    def stop(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            return ""
        self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        assert self.proc.returncode == 0, err[-2000:]
        return err


@pytest.fixture
def webhook() -> Iterator[FakeSlackWebhook]:
    with FakeSlackWebhook() as hook:
        yield hook


def query(base: str, promql: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert status == 200, body
    return list(json.loads(body)["data"]["result"])


def received(am_base: str, status: str) -> float:
    """Alerts alertmanager received from Prometheus with ``status`` (firing/resolved)."""
    _code, text = http_get(f"{am_base}/metrics")
    pattern = rf'^alertmanager_alerts_received_total\{{[^}}]*status="{status}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))  # one series per API version


def message(payload: Any) -> str:
    """The text a Slack user sees from one webhook post (title and attachment text)."""
    parts = [str(payload.get("text", ""))]
    for att in payload.get("attachments", []):
        parts += [str(att.get("title", "")), str(att.get("text", ""))]
    return "\n".join(parts)


def test_a_stopped_daemon_pages_once_and_resolves_once(
    fleet_env: dict[str, str],
    tmp_path: Path,
    notify_socket: NotifySocket,
    webhook: FakeSlackWebhook,
) -> None:
    prometheus = need("prometheus")
    alertmanager = alertmanager_binary()
    sweeper_port, prom_port, am_port = free_port(), free_port(), free_port()
    cfg = fleet_toml(tmp_path, sweeper_port, am_port, webhook)
    prom_dir, am_dir = tmp_path / "prom", tmp_path / "am"
    for command, out in (("prometheus", prom_dir), ("alertmanager", am_dir)):
        res = run_fleet(
            ["observability", command, "--out", str(out), "--config", str(cfg)], fleet_env, tmp_path
        )
        assert res.returncode == 0, res.stdout + res.stderr
    am_yml = am_dir / "alertmanager.yml"
    check = amtool("check-config", str(am_yml))
    assert check.returncode == 0, check.stdout + check.stderr
    assert webhook.base_url not in am_yml.read_text()  # the URL stays in its file
    prom_yml = prom_dir / "prometheus.yml"
    check = promtool("check", "config", str(prom_yml))
    assert check.returncode == 0, check.stdout + check.stderr
    assert yaml.safe_load(prom_yml.read_text())["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}
    ]
    shorten_intervals(prom_yml)
    shorten_rules(prom_dir / "rules" / "fleet.rules.yml")

    sweeper = Sweeper(cfg, fleet_env, tmp_path, notify_socket)
    sweeper.start()
    am_argv = [
        alertmanager,
        f"--config.file={am_yml}",
        f"--storage.path={am_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=",  # no HA gossip port (it would bind 0.0.0.0)
        "--log.level=warn",
    ]
    prom_argv = [
        prometheus,
        f"--config.file={prom_yml}",
        f"--storage.tsdb.path={prom_dir / 'data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--rules.alert.resend-delay=1s",
        "--log.level=warn",
    ]
    try:
        with (
            running_server(am_argv, f"http://127.0.0.1:{am_port}", am_dir, "alertmanager") as am,
            running_server(
                prom_argv, f"http://127.0.0.1:{prom_port}", prom_dir, "prometheus"
            ) as pr,
        ):
            up = 'up{job="fleet-claim-sweeper"} == 1'
            assert wait_until(lambda: len(query(pr, up)) == 1, timeout=30), query(pr, "up")
            assert not webhook.requests, "an alert fired while everything was up"

            sweeper.stop()
            assert wait_until(lambda: len(webhook.requests) >= 1, timeout=60), query(pr, "ALERTS")
            # Prometheus keeps re-sending the firing alert; alertmanager must not post it again
            seen = received(am, "firing")
            assert wait_until(lambda: received(am, "firing") >= seen + 3, timeout=30)
            [firing] = webhook.payloads()
            assert len(webhook.requests) == 1
            assert webhook.payloads("escalation") == [firing]  # critical: the escalation hook
            assert firing["channel"] == "#ops-escalation"
            text = message(firing)
            assert "FIRING" in text and "FleetDaemonDown" in text and "claim-sweeper" in text
            assert f"{RUNBOOK_BASE}docs/runbooks/claim-sweeper.md" in text

            sweeper.start()
            assert wait_until(lambda: len(webhook.requests) >= 2, timeout=60), query(pr, "ALERTS")
            seen = received(am, "resolved")
            assert wait_until(lambda: received(am, "resolved") >= seen + 3, timeout=30)
            assert len(webhook.requests) == 2
            resolved = webhook.payloads("escalation")[1]
            text = message(resolved)
            assert "RESOLVED" in text and "FleetDaemonDown" in text and "claim-sweeper" in text
            # the restart is visible as a new start time (what FleetDaemonCrashLooping counts)
            restarts = query(pr, 'changes(fleet_start_time_seconds{daemon="claim-sweeper"}[5m])')
            assert [r["value"][1] for r in restarts] == ["1"]
    finally:
        sweeper.stop()

"""Prometheus with a running daemon: `promtool check metrics` on its /metrics, its manifest's
metric list against that scrape, and a real `prometheus` on 127.0.0.1 scraping a running
`fleet run claim-sweeper` and answering `up == 1`, a fleet_ series, the recording rules and
every dashboard query over its HTTP API, with `$host` chosen as Grafana would from the
dashboard's variable; `fleet observability prometheus` targeting each host that runs a daemon.
The scrape target names the machine (`SCRAPED_AS`, not the daemon's own `[fleet] host`): every
series carries the target's `host` and nothing is left as `exported_*`. The rules' promtool unit
tests: test_prometheus_rules.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.registry import by_name, manifests
from shared.observability import (
    HostTarget,
    dashboard_exprs,
    metric_names_in,
    metrics_for,
    overview_dashboard,
    render_prometheus_config,
)
from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.prometheus_support import RULES, example_config, need, promtool

pytestmark = pytest.mark.system

# The target's name in prometheus.yml; the daemon itself runs with [fleet] host = "testhost".
SCRAPED_AS = "scrapehost"


# a running daemon ----------------------------------------------------------------------------
@dataclass
class RunningDaemon:
    proc: subprocess.Popen[str]
    port: int

    def scrape(self) -> str:
        status, body = http_get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200
        return body


def ok_cycles(text: str) -> float:
    m = re.search(r'^fleet_cycles_total\{daemon="claim-sweeper",outcome="ok"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def sweeper(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> Iterator[RunningDaemon]:
    port = free_port()
    env = {
        **fleet_env,
        "NOTIFY_SOCKET": notify_socket.path,
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(port),
        "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.2",
    }
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert notify_socket.wait_for("READY=1", timeout=15), notify_socket.messages
        daemon = RunningDaemon(proc, port)
        assert wait_until(lambda: ok_cycles(daemon.scrape()) >= 1, timeout=15)
        yield daemon
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def families(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_claim_sweeper_metrics_lint_clean_and_match_the_catalogue(sweeper: RunningDaemon) -> None:
    text = sweeper.scrape()
    res = promtool("check", "metrics", stdin=text)
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", (
        res.stdout + res.stderr
    )
    scraped = {n: k for n, k in families(text).items() if n.startswith("fleet_")}
    catalogue = {m.name: m.kind for m in metrics_for(by_name()["claim-sweeper"])}
    assert scraped == catalogue


def query(base: str, promql: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"
    status, body = http_get(url)
    payload: dict[str, Any] = json.loads(body)
    assert status == 200 and payload["status"] == "success", (promql, body)
    return payload


def status_of(url: str) -> int | None:
    try:
        return http_get(url, timeout=2)[0]
    except OSError:  # not listening yet
        return None


@pytest.fixture
def prometheus(sweeper: RunningDaemon, tmp_path: Path) -> Iterator[str]:
    binary = need("prometheus")
    config = example_config()
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(
        render_prometheus_config(
            config,
            manifests(),
            [HostTarget(name=SCRAPED_AS, address="127.0.0.1")],
            scrape_interval="1s",
            rule_files=[str(RULES)],
        ).replace(":9806", f":{sweeper.port}")
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={prom_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=prom_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until(lambda: status_of(f"{base}/-/ready") == 200, timeout=30)
        if not ready:
            proc.kill()
            _out, err = proc.communicate()
            pytest.fail(f"prometheus did not become ready: {err[-2000:]}")
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def results(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(payload["data"]["result"])


def test_real_prometheus_scrapes_the_daemon(prometheus: str, sweeper: RunningDaemon) -> None:
    def up() -> list[dict[str, Any]]:
        return results(query(prometheus, 'up{job="fleet-claim-sweeper"} == 1'))

    assert wait_until(lambda: len(up()) == 1, timeout=30), query(prometheus, "up")
    series = up()[0]["metric"]
    assert series["host"] == SCRAPED_AS and series["daemon"] == "claim-sweeper"
    ok = f'fleet_cycles_total{{daemon="claim-sweeper",outcome="ok",host="{SCRAPED_AS}"}} > 0'
    assert wait_until(lambda: len(results(query(prometheus, ok))) == 1, timeout=30)
    build = results(query(prometheus, "fleet_build_info"))
    assert [b["metric"]["host"] for b in build] == [SCRAPED_AS]  # the target's, not the daemon's
    # the target's labels win and the daemon exports none of them: no exported_* is kept
    stored = results(query(prometheus, '{job="fleet-claim-sweeper"}'))
    assert len(stored) > 10
    for item in stored:
        labels = item["metric"]
        assert labels["host"] == SCRAPED_AS and labels["daemon"] == "claim-sweeper", labels
        assert not [k for k in labels if k.startswith("exported_")], labels
    # the committed rules load and evaluate in a real server
    interval = 'fleet:expected_interval_seconds{daemon="claim-sweeper"}'
    assert wait_until(lambda: len(results(query(prometheus, interval))) == 1, timeout=30)
    assert results(query(prometheus, interval))[0]["value"][1] == "60"

    def rules_health() -> list[tuple[str, str]]:
        _status, body = http_get(f"{prometheus}/api/v1/rules")
        groups = json.loads(body)["data"]["groups"]
        return [(r["name"], r["health"]) for g in groups for r in g["rules"]]

    assert wait_until(
        lambda: all(h == "ok" for _n, h in rules_health()) and len(rules_health()) > 10,
        timeout=30,
    ), rules_health()
    # The daemon that is up never counts as down (the example config's other daemons are not
    # running here, so their own FleetDaemonDown may be pending; that is right).
    down = 'ALERTS{alertname="FleetDaemonDown",daemon="claim-sweeper"}'
    assert not results(query(prometheus, down))


def host_choices(base: str, variable: dict[str, Any]) -> list[str]:
    """The values Grafana offers for a `label_values(SELECTOR, LABEL)` variable: the label's
    values among the series SELECTOR matches (Grafana asks the same endpoint)."""
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
    assert m, variable
    selector, label = m.groups()
    url = f"{base}/api/v1/label/{label}/values?match[]={urllib.parse.quote(selector)}"
    status, body = http_get(url)
    assert status == 200, body
    return list(json.loads(body)["data"])


def test_every_dashboard_query_runs_and_the_sweeper_panels_have_data(
    prometheus: str, sweeper: RunningDaemon
) -> None:
    present = {name for name in re.findall(r"^(fleet_[a-z0-9_]+)(?:\{| )", sweeper.scrape(), re.M)}
    ok = 'fleet_cycles_total{daemon="claim-sweeper",outcome="ok"}'
    # two scrapes at least, so rate() has something to work with
    assert wait_until(
        lambda: (
            float(results(query(prometheus, f"count_over_time({ok}[1m])"))[0]["value"][1]) >= 3
            if results(query(prometheus, f"count_over_time({ok}[1m])"))
            else False
        ),
        timeout=30,
    )
    dashboard = overview_dashboard(example_config(), manifests())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "host"]
    # the host picker offers the machine the target names, as `up` carries it
    assert wait_until(lambda: host_choices(prometheus, variable) == [SCRAPED_AS], timeout=30)
    sweeper_metrics = {m.name for m in metrics_for(by_name()["claim-sweeper"])}
    other = {s.name for m in manifests() if m.name != "claim-sweeper" for s in m.metrics}
    on_up = 0
    # $host as a person picks it from the list, then as "All"
    for choice in (host_choices(prometheus, variable)[0], variable["allValue"]):
        for expr in dashboard_exprs(dashboard):
            if expr.startswith("label_values("):
                continue
            promql = expr.replace("$__rate_interval", "1m").replace("$host", choice)
            payload = query(prometheus, promql)  # syntax and semantics accepted by a real server
            if re.search(r"\bup\{", expr):
                on_up += 1
                sweeper_up = [
                    r for r in results(payload) if r["metric"]["daemon"] == "claim-sweeper"
                ]
                assert [r["value"][1] for r in sweeper_up] == ["1"], (promql, payload)
            used = metric_names_in(expr)
            if set(re.findall(r'daemon="([^"]+)"', expr)) - {"claim-sweeper"}:
                assert not results(payload), promql  # another daemon's panel: not running
                continue
            series_present = all(
                any(s == n or s.startswith(n + "_") for s in present) for n in used
            )
            if (
                used
                and used <= {s for n in sweeper_metrics for s in (n, f"{n}_bucket")}
                and series_present
            ):
                assert results(payload), f"no data for {promql}"
            if used & other:
                assert not results(payload), promql
    assert on_up >= 2, "no dashboard panel is built on up"


def scrape_targets(prometheus_yml: str) -> dict[str, list[tuple[str, str]]]:
    """job name -> (target, host label) for each target of a prometheus.yml."""
    doc = yaml.safe_load(prometheus_yml)
    return {
        job["job_name"]: [
            (target, static["labels"]["host"])
            for static in job["static_configs"]
            for target in static["targets"]
        ]
        for job in doc["scrape_configs"]
    }


def test_prometheus_command_targets_each_host_that_runs_the_daemon(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f'[fleet]\nroot = "{tmp_path / "root"}"\nhost = "testhost"\n'
        "[claim_sweeper]\nenabled = true\nauto_release = true\nmetrics_port = 9906\n"
    )
    out = tmp_path / "prom"
    res = run_fleet(
        [
            "observability",
            "prometheus",
            "--hosts",
            "anvil=primary,forge=standby",
            "--out",
            str(out),
            "--config",
            str(cfg),
        ],
        fleet_env,
        tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    text = (out / "prometheus.yml").read_text()
    # auto_release makes claim-sweeper refuse the standby: forge gets no target for it
    assert scrape_targets(text)["fleet-claim-sweeper"] == [("anvil:9906", "anvil")]
    assert "forge:9906" not in text
    assert "job_name: fleet-claim-sweeper" in text
    assert promtool("check", "config", str(out / "prometheus.yml")).returncode == 0
    assert promtool("check", "rules", str(out / "rules" / "fleet.rules.yml")).returncode == 0
    local = run_fleet(
        ["observability", "prometheus", "--out", str(tmp_path / "local"), "--config", str(cfg)],
        fleet_env,
        tmp_path,
    )
    assert local.returncode == 0
    text = (tmp_path / "local" / "prometheus.yml").read_text()
    assert scrape_targets(text)["fleet-claim-sweeper"] == [("127.0.0.1:9906", "testhost")]
    bad = run_fleet(
        [
            "observability",
            "prometheus",
            "--hosts",
            "anvil=leader",
            "--out",
            str(out),
            "--config",
            str(cfg),
        ],
        fleet_env,
        tmp_path,
    )
    assert bad.returncode == 64 and "primary or standby" in bad.stderr

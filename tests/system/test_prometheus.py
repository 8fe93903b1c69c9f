"""Prometheus with the real tools: promtool check config/rules, promtool unit tests for every
alert (firing and not firing), `promtool check metrics` on a running daemon's /metrics, the
catalogue against that scrape, and a real `prometheus` on 127.0.0.1 scraping a running
`fleet run claim-sweeper` and answering `up == 1`, a fleet_ series, the recording rules and
every dashboard query over its HTTP API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.config import load_config
from shared.observability import (
    DAEMON_METRICS,
    HostTarget,
    alert_rules,
    dashboard_exprs,
    metric_names_in,
    metrics_for,
    overview_dashboard,
    render_prometheus_config,
    to_yaml,
)
from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "config" / "prometheus"
RULES = PROM_DIR / "rules" / "fleet.rules.yml"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package prometheus)")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("promtool"), *args], capture_output=True, text=True, input=stdin, timeout=120
    )


# static checks -------------------------------------------------------------------------------
def test_promtool_checks_the_committed_config_and_rules() -> None:
    res = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_committed_rules_hold_every_alert() -> None:
    names = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    assert sorted(names) == sorted(a.name for a in alert_rules(example_config()))


def example_config() -> Any:
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith("FLEET_"):
                del os.environ[key]
        return load_config(REPO / "config" / "fleet.example.toml")
    finally:
        os.environ.clear()
        os.environ.update(saved)


# promtool test rules -------------------------------------------------------------------------
def target(daemon: str, host: str = "anvil") -> str:
    port = {
        "claim-sweeper": 9806,
        "ollama-health": 9802,
        "restore-loop": 9803,
        "heartbeat": 9804,
        "blueprint-watchdog": 9805,
    }.get(daemon, 9801)
    return f'job="fleet-{daemon}", instance="{host}:{port}", host="{host}", daemon="{daemon}"'


def labels_of(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', series))


@dataclass
class Case:
    """Input series, then at ``at`` either the alert fires with ``labels`` (``value`` renders
    {{ $value }}) or it does not fire (labels None)."""

    alert: str
    series: dict[str, str]
    at: str
    labels: dict[str, str] | None
    value: str = ""


T_CS = target("claim-sweeper")
T_OH = target("ollama-health")
T_RL = target("restore-loop", "forge")
T_HB = target("heartbeat")
T_BW = target("blueprint-watchdog")
T_HB_FORGE = target("heartbeat", "forge")
T_OH_FORGE = T_OH.replace('host="anvil"', 'host="forge"')
T_RL_OTHER = target("restore-loop", "spare")
ZAKON_FILES = {f'fleet_blueprint_files{{{T_BW}, type="zakon"}}': "12x20"}
# restore-loop exports its tiers' targets (P0 60 s, P1 300 s by default)
RPO = {
    f'fleet_restore_rpo_target_seconds{{{T_RL}, tier="P0"}}': "60x10",
    f'fleet_restore_rpo_target_seconds{{{T_RL}, tier="P1"}}': "300x10",
}

CASES: list[Case] = [
    Case("FleetDaemonDown", {f"up{{{T_CS}}}": "0x10"}, "3m", labels_of(T_CS)),
    Case("FleetDaemonDown", {f"up{{{T_CS}}}": "1x10"}, "3m", None),
    Case("FleetDaemonDown", {f"up{{{T_CS}}}": "1 1 1 0 0"}, "4m", None),  # down < 2m
    # last success at t=60 s, never again: at 10m it is 540 s old > 3 x 60 s
    Case(
        "FleetCycleStale",
        {f"fleet_last_success_timestamp_seconds{{{T_CS}}}": "0 60x20"},
        "10m",
        labels_of(T_CS),
        "9m 0s",
    ),
    Case(
        "FleetCycleStale",
        {f"fleet_last_success_timestamp_seconds{{{T_CS}}}": "0+60x20"},
        "10m",
        None,
    ),
    Case(  # blueprint-watchdog's interval is a day: 9 minutes is not stale
        "FleetCycleStale",
        {f"fleet_last_success_timestamp_seconds{{{T_BW}}}": "0 60x20"},
        "10m",
        None,
    ),
    Case(  # never succeeded since start: that is FleetCyclesFailing's job
        "FleetCycleStale",
        {f"fleet_last_success_timestamp_seconds{{{T_CS}}}": "0x20"},
        "10m",
        None,
    ),
    Case(
        "FleetCyclesFailing",
        {
            f'fleet_cycles_total{{{T_CS}, outcome="error"}}': "0+1x30",
            f'fleet_cycles_total{{{T_CS}, outcome="ok"}}': "5x30",
        },
        "20m",
        labels_of(T_CS),
    ),
    Case(
        "FleetCyclesFailing",
        {
            f'fleet_cycles_total{{{T_CS}, outcome="error"}}': "0+1x30",
            f'fleet_cycles_total{{{T_CS}, outcome="ok"}}': "5+1x30",
        },
        "20m",
        None,
    ),
    Case(
        "FleetOllamaHostDown",
        {f"fleet_ollama_up{{{T_OH_FORGE}}}": "0x10"},
        "3m",
        labels_of(T_OH_FORGE),
    ),
    Case("FleetOllamaHostDown", {f"fleet_ollama_up{{{T_OH}}}": "1x10"}, "3m", None),
    Case(
        "FleetOllamaFailoverActive",
        {f'fleet_ollama_failover_active{{{T_OH}, rule="anvil_down"}}': "1x10"},
        "6m",
        {**labels_of(T_OH), "rule": "anvil_down"},
    ),
    Case(
        "FleetOllamaFailoverActive",
        {f'fleet_ollama_failover_active{{{T_OH}, rule="anvil_down"}}': "0x10"},
        "6m",
        None,
    ),
    Case(  # P0's RPO is 60 s
        "FleetRestoreLagAboveRPO",
        {**RPO, f'fleet_restore_lag_seconds{{{T_RL}, db="mission-control", tier="P0"}}': "90x10"},
        "3m",
        {**labels_of(T_RL), "db": "mission-control", "tier": "P0"},
        "1m 30s",
    ),
    Case(  # the same lag is within P1's 300 s
        "FleetRestoreLagAboveRPO",
        {**RPO, f'fleet_restore_lag_seconds{{{T_RL}, db="flywheel", tier="P1"}}': "90x10"},
        "3m",
        None,
    ),
    Case(
        "FleetRestoreLagAboveRPO",
        {**RPO, f'fleet_restore_lag_seconds{{{T_RL}, db="flywheel", tier="P1"}}': "400x10"},
        "3m",
        {**labels_of(T_RL), "db": "flywheel", "tier": "P1"},
        "6m 40s",
    ),
    Case(  # another standby's targets do not apply to this one
        "FleetRestoreLagAboveRPO",
        {
            f'fleet_restore_rpo_target_seconds{{{T_RL_OTHER}, tier="P0"}}': "10x10",
            f'fleet_restore_lag_seconds{{{T_RL}, db="flywheel", tier="P0"}}': "30x10",
            f'fleet_restore_rpo_target_seconds{{{T_RL}, tier="P0"}}': "60x10",
        },
        "3m",
        None,
    ),
    Case(
        "FleetTwoPrimaries",
        {f'fleet_heartbeat_two_primaries{{{T_HB}, peer="forge"}}': "1x10"},
        "3m",
        {**labels_of(T_HB), "peer": "forge"},
    ),
    Case(
        "FleetTwoPrimaries",
        {f'fleet_heartbeat_two_primaries{{{T_HB}, peer="forge"}}': "0x10"},
        "3m",
        None,
    ),
    Case(  # every daemon on a host reports the same outbox: one alert per host
        "FleetNotificationsBacklog",
        {
            f"fleet_notifications_pending{{{T_CS}}}": "60x30",
            f"fleet_notifications_pending{{{T_HB}}}": "60x30",
        },
        "20m",
        {"host": "anvil"},
        "60",
    ),
    Case(
        "FleetNotificationsBacklog",
        {f"fleet_notifications_pending{{{T_CS}}}": "10x30"},
        "20m",
        None,
    ),
    Case(
        "FleetClaimsExpired",
        {
            f"fleet_claims_expired{{{T_CS}}}": "1x10",
            f"fleet_claims_oldest_expired_age_seconds{{{T_CS}}}": "4000+60x10",
        },
        "6m",
        labels_of(T_CS),
    ),
    Case(
        "FleetClaimsExpired",
        {
            f"fleet_claims_expired{{{T_CS}}}": "1x10",
            f"fleet_claims_oldest_expired_age_seconds{{{T_CS}}}": "100+60x10",
        },
        "6m",
        None,
    ),
    Case(
        "FleetBlueprintNoncompliant",
        {f'fleet_blueprint_noncompliant{{{T_BW}, type="blueprint", reason="stale"}}': "3x20"},
        "11m",
        {k: v for k, v in labels_of(T_BW).items() if k != "daemon"}
        | {"type": "blueprint", "reason": "stale"},
        "3",
    ),
    Case(
        "FleetBlueprintNoncompliant",
        {f'fleet_blueprint_noncompliant{{{T_BW}, type="blueprint", reason="stale"}}': "0x20"},
        "11m",
        None,
    ),
    Case(
        "FleetZakonRegistryBroken",
        {f"fleet_zakon_registry_ok{{{T_BW}}}": "0x20", **ZAKON_FILES},
        "11m",
        labels_of(T_BW),
    ),
    Case(
        "FleetZakonRegistryBroken",
        {f"fleet_zakon_registry_ok{{{T_BW}}}": "1x20", **ZAKON_FILES},
        "11m",
        None,
    ),
    Case(  # no registry and no ZAKON files: nothing is blocked
        "FleetZakonRegistryBroken",
        {
            f"fleet_zakon_registry_ok{{{T_BW}}}": "0x20",
            f'fleet_blueprint_files{{{T_BW}, type="zakon"}}': "0x20",
        },
        "11m",
        None,
    ),
    Case(
        "FleetHeartbeatPeerDown",
        {f'fleet_heartbeat_peer_up{{{T_HB_FORGE}, peer="anvil"}}': "0x10"},
        "3m",
        {**labels_of(T_HB_FORGE), "peer": "anvil"},
    ),
    Case(
        "FleetHeartbeatPeerDown",
        {f'fleet_heartbeat_peer_up{{{T_HB_FORGE}, peer="anvil"}}': "1 0 1 0 1 0 1"},
        "5m",
        None,  # flapping never stays down for 2m
    ),
]


def render(template: str, labels: dict[str, str], value: str) -> str:
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return re.sub(r"\{\{ \$value( \| humanizeDuration)? \}\}", value, text)


def promtool_tests() -> dict[str, Any]:
    rules = {a.name: a for a in alert_rules(example_config())}
    tests = []
    for case in CASES:
        exp: list[dict[str, Any]] = []
        if case.labels is not None:
            rule = rules[case.alert].to_rule()
            labels = {**case.labels, "severity": rule["labels"]["severity"]}
            exp.append(
                {
                    "exp_labels": labels,
                    "exp_annotations": {
                        k: render(v, labels, case.value) for k, v in rule["annotations"].items()
                    },
                }
            )
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": case.alert, "exp_alerts": exp}
                ],
            }
        )
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    for alert in alert_rules(example_config()):
        cases = [c for c in CASES if c.alert == alert.name]
        assert any(c.labels is not None for c in cases), f"{alert.name}: no firing case"
        assert any(c.labels is None for c in cases), f"{alert.name}: no not-firing case"


def test_promtool_test_rules(tmp_path: Path) -> None:
    path = tmp_path / "fleet.rules.test.yml"
    path.write_text(to_yaml(promtool_tests()))
    res = promtool("test", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The harness bites: expecting a quiet case to fire fails."""
    doc = promtool_tests()
    doc["tests"][1]["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"x": "y"}}]
    path = tmp_path / "broken.test.yml"
    path.write_text(to_yaml(doc))
    assert promtool("test", "rules", str(path)).returncode != 0


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
    catalogue = {m.name: m.kind for m in metrics_for("claim-sweeper")}
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
            [HostTarget(name="testhost", address="127.0.0.1")],
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
    assert series["host"] == "testhost" and series["daemon"] == "claim-sweeper"
    ok = 'fleet_cycles_total{daemon="claim-sweeper",outcome="ok",host="testhost"} > 0'
    assert wait_until(lambda: len(results(query(prometheus, ok))) == 1, timeout=30)
    build = results(query(prometheus, "fleet_build_info"))
    assert build and build[0]["metric"]["host"] == "testhost"  # the daemon's own label
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
    sweeper_metrics = {m.name for m in metrics_for("claim-sweeper")}
    other = {m.name for d, ms in DAEMON_METRICS.items() if d != "claim-sweeper" for m in ms}
    for expr in dashboard_exprs(overview_dashboard()):
        if expr.startswith("label_values("):
            continue
        promql = expr.replace("$__rate_interval", "1m").replace('"$host"', '".*"')
        payload = query(prometheus, promql)  # syntax and semantics accepted by a real server
        used = metric_names_in(expr)
        series_present = all(any(s == n or s.startswith(n + "_") for s in present) for n in used)
        if (
            used
            and used <= {s for n in sweeper_metrics for s in (n, f"{n}_bucket")}
            and (series_present)
        ):
            assert results(payload), f"no data for {promql}"
        if used & other:
            assert not results(payload), promql


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
    assert '"anvil:9906"' in text and "forge:9906" not in text
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
    assert '"127.0.0.1:9906"' in text and "host: testhost" in text
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

"""One meaning per label: `host` is the machine, and only the scrape target sets it (with `job`,
`instance` and `daemon`); nothing a daemon exports is called `host` (the LLM server ollama-health
probes is `llm_host`), and the scrape config lets the target's labels win (no `honor_labels`).
The same labels against a real Prometheus: tests/system/test_prometheus.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fleet.examples import load_example_config
from fleet.registry import manifests
from shared.manifest import MetricSpec, metric
from shared.metrics import NOTIFY_METRICS, RUNTIME_METRICS, DaemonMetrics
from shared.observability import HostTarget, alert_rules, render_prometheus_config
from shared.roles import Role

REPO = Path(__file__).resolve().parents[2]


def test_no_metric_carries_a_target_label() -> None:
    specs = [*RUNTIME_METRICS, *NOTIFY_METRICS, *(s for m in manifests() for s in m.metrics)]
    for spec in specs:
        assert not {"host", "job", "instance"} & set(spec.labels), spec.name
    ollama = {s.name: s.labels for m in manifests() if m.name == "ollama-health" for s in m.metrics}
    assert ollama["fleet_ollama_up"] == ("llm_host",)
    assert ollama["fleet_ollama_transitions_total"] == ("llm_host", "to")


@pytest.mark.parametrize("label", ["host", "job", "instance"])
def test_a_metric_spec_refuses_a_target_label(label: str) -> None:
    with pytest.raises(ValueError, match=f"{label!r} is the scrape target's label"):
        metric("fleet_x_up", "gauge", "x", label)
    with pytest.raises(ValueError, match="scrape target"):
        MetricSpec("fleet_x_seconds", "histogram", "x", ("daemon", label))


def test_build_info_names_daemon_and_version_only() -> None:
    text = DaemonMetrics("claim-sweeper", "1.2.3").render().decode()
    assert 'fleet_build_info{daemon="claim-sweeper",version="1.2.3"} 1.0' in text
    assert "host=" not in text


def test_the_scrape_config_sets_host_and_daemon_and_honours_no_exported_label(
    tmp_path: Path,
) -> None:
    config = load_example_config(REPO / "config" / "fleet.example.toml", tmp_path)
    hosts = [
        HostTarget("anvil", "anvil.example.com", Role.PRIMARY),
        HostTarget("forge", "forge.example.com", Role.STANDBY),
    ]
    doc = yaml.safe_load(render_prometheus_config(config, manifests(), hosts))
    jobs = doc["scrape_configs"]
    assert jobs
    for job in jobs:
        assert "honor_labels" not in job, job["job_name"]
        daemon = job["job_name"].removeprefix("fleet-")
        for static in job["static_configs"]:
            assert set(static["labels"]) == {"host", "daemon"}
            assert static["labels"]["daemon"] == daemon
            assert static["labels"]["host"] in {"anvil", "forge"}
        # the daemon's own `daemon` label equals the target's; Prometheus would keep it as
        # exported_daemon next to the target's
        assert job["metric_relabel_configs"] == [
            {"action": "labeldrop", "regex": "exported_daemon"}
        ]


def test_the_llm_server_alert_names_it_by_llm_host(tmp_path: Path) -> None:
    config = load_example_config(REPO / "config" / "fleet.example.toml", tmp_path)
    rules = {r.name: r for r in alert_rules(config, manifests())}
    down = rules["FleetOllamaHostDown"]
    assert "{{ $labels.llm_host }}" in down.summary
    assert "{{ $labels.host }}" in down.summary  # the machine that saw it

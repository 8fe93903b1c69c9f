"""Cross-section config rules and the manifest types' own checks (exit-78 texts operators see)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.config import _model, load_config
from shared.config import ConfigError
from shared.manifest import DaemonManifest, MetricSpec
from shared.sections import DaemonSection


def _errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str) -> list[tuple[str, str]]:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "fleet.toml"
    path.write_text(f'[fleet]\nroot = "{tmp_path / "root"}"\n' + toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.errors


def test_a_health_port_on_a_metrics_port_names_the_health_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = _errors(
        tmp_path,
        monkeypatch,
        "[heartbeat]\nhealth_port = 9902\n[claim_sweeper]\nmetrics_port = 9902\n",
    )
    assert ("heartbeat.health_port", "9902 is also claim_sweeper's metrics port") in errors
    assert not any(path == "claim_sweeper.metrics_port" for path, _ in errors)


def test_two_metrics_ports_name_the_later_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = _errors(tmp_path, monkeypatch, "[claim_sweeper]\nmetrics_port = 9801\n")
    assert errors == [("claim_sweeper.metrics_port", "9801 is also email_reactor's")]


def test_a_disabled_daemon_keeps_its_port_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'[fleet]\nroot = "{tmp_path}"\n[claim_sweeper]\nenabled = false\nmetrics_port = 9801\n'
    )
    assert load_config(path).daemon_section("claim_sweeper").metrics_port == 9801


def test_a_counter_spec_must_name_the_exported_series() -> None:
    with pytest.raises(ValueError, match="ending in _total"):
        MetricSpec("fleet_widgets_made", "counter", "widgets")
    assert (
        MetricSpec("fleet_widgets_made_total", "counter", "w").client_name == "fleet_widgets_made"
    )
    with pytest.raises(ValueError, match="only histograms have buckets"):
        MetricSpec("fleet_widgets", "gauge", "widgets", (), (1.0,))


def test_a_section_may_not_shadow_a_config_attribute() -> None:
    manifest = DaemonManifest(name="state-dir", section=DaemonSection, daemon="x:Y")
    with pytest.raises(ValueError, match=r"section \[state_dir\] is already taken"):
        _model((manifest,))

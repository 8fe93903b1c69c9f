"""Adding a daemon is one package plus one registry line: a throwaway daemon written into
tmp_path (a manifest with its own section, metric, alert rule, role rule and unit profile, and
a trivial Daemon subclass) and one ``RegistryLine`` appended to ``fleet.registry.LINES`` make
it appear in the root config, ``fleet status``, one cycle run from its manifest, the generated
units and the Prometheus/Grafana pack. Nothing else in the app is edited."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

import fleet.registry
from fleet.cli import cli
from fleet.config import load_config
from fleet.examples import pinned_environment
from fleet.registry import RegistryLine, by_name, manifests
from shared.observability import (
    HostTarget,
    dashboard_exprs,
    overview_dashboard,
    render_prometheus_config,
    render_rules,
    unknown_metrics,
)
from shared.roles import Role
from shared.runtime import run_daemons

PACKAGE = "throwaway_fleet_daemon"
NAME = "throwaway"
PORT = 9899

MANIFEST_PY = '''
"""The throwaway daemon's manifest (written by a test)."""

from pathlib import Path

from pydantic import Field

from shared.manifest import AlertRule, DaemonManifest, UnitProfile, metric
from shared.roles import Role
from shared.sections import DaemonSection


class ThrowawaySection(DaemonSection):
    widgets_min: int = Field(3, ge=0, description="fewest widgets before the alert fires")
    data_dir: Path = Field(Path("<root>/throwaway"), description="where it keeps widgets")


def refuse(_section, role):
    return "throwaway runs on the primary only" if role is Role.STANDBY else None


def alerts(section):
    return (
        AlertRule(
            "FleetThrowawayWidgetsLow",
            f"fleet_throwaway_widgets < {section.widgets_min}",
            "5m",
            "warning",
            "{{ $labels.host }} has {{ $value }} widgets",
            "Fewer widgets than widgets_min.",
            "docs/runbooks/throwaway.md",
            ("throwaway",),
        ),
    )


def unit_profile(_config, section):
    return UnitProfile(write_paths=(section.data_dir,), tasks_max=8, memory_max_mb=64)


MANIFEST = DaemonManifest(
    name="throwaway",
    section=ThrowawaySection,
    daemon="throwaway_fleet_daemon.daemon:Throwaway",
    description="counts widgets (a test's throwaway daemon)",
    refuse=refuse,
    metrics=(metric("fleet_throwaway_widgets", "gauge", "Widgets counted by the last cycle"),),
    alerts=alerts,
    unit_profile=unit_profile,
)
'''

DAEMON_PY = '''
"""The throwaway daemon (written by a test)."""

from shared.cycles import CycleResult
from shared.daemon import Daemon

from throwaway_fleet_daemon.manifest import MANIFEST, ThrowawaySection


class Throwaway(Daemon[ThrowawaySection]):
    manifest = MANIFEST

    def __init__(self, ctx):
        super().__init__(ctx)
        self.widgets = self.own_metrics().gauge("fleet_throwaway_widgets")

    async def cycle(self):
        self.widgets.set(self.section.widgets_min + 1)
        return CycleResult(detail={"widgets": self.section.widgets_min + 1})
'''


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package on sys.path and its line in the registry; returns a config file that
    enables only it (every other registered daemon disabled)."""
    package = tmp_path / "pkgs" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A throwaway daemon package."""\n')
    (package / "manifest.py").write_text(textwrap.dedent(MANIFEST_PY))
    (package / "daemon.py").write_text(textwrap.dedent(DAEMON_PY))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    others = manifests()
    monkeypatch.setattr(
        fleet.registry,
        "LINES",
        (*fleet.registry.LINES, RegistryLine(NAME, f"{PACKAGE}.manifest:MANIFEST")),
    )
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f'[fleet]\nroot = "{tmp_path / "root"}"\nhost = "testhost"\nrole = "primary"\n'
        + "".join(f"[{m.section_name}]\nenabled = false\n" for m in others)
        + f"[{NAME}]\nenabled = true\nmetrics_port = {PORT}\nwidgets_min = 7\n"
    )
    yield cfg
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[module]


def fleet_cmd(args: list[str], home: Path) -> Result:
    """``fleet ARGS`` in-process (the monkeypatched registry is visible only here); the group
    puts the app's config loader and manifests on the context itself."""
    return CliRunner().invoke(cli, args, env={"HOME": str(home)}, catch_exceptions=False)


def test_registry_line_alone_adds_the_daemon_to_config_and_status(
    throwaway: Path, tmp_path: Path
) -> None:
    assert NAME in by_name()
    config = load_config(throwaway)
    section = config.daemon_section("throwaway")
    assert section.enabled and section.model_dump()["widgets_min"] == 7
    # before a cycle: expected here, and not ok yet
    res = fleet_cmd(["status", "--json", "--config", str(throwaway)], tmp_path)
    assert res.exit_code == 1, res.output
    rows = {r["daemon"]: r for r in json.loads(res.output)}
    assert rows[NAME]["enabled"] is True and rows[NAME]["ok"] is False
    assert all(not r["enabled"] for n, r in rows.items() if n != NAME)
    # one cycle, run from its manifest, writes its heartbeat; status then says ok
    code = asyncio.run(run_daemons([by_name()[NAME]], config, once=True, fleet=manifests()))
    assert code == 0
    res = fleet_cmd(["status", "--json", "--config", str(throwaway)], tmp_path)
    assert res.exit_code == 0, res.output
    row = {r["daemon"]: r for r in json.loads(res.output)}[NAME]
    assert row["ok"] is True and row["cycles"] >= 1, row
    # its role rule comes from the manifest: on a standby it is fenced off, not expected
    (tmp_path / "root" / "state" / "role").write_text("standby\n")
    res = fleet_cmd(["status", "--json", "--config", str(throwaway)], tmp_path)
    assert {r["daemon"]: r for r in json.loads(res.output)}[NAME]["enabled"] is False


def test_registry_line_alone_adds_the_daemon_to_the_units(throwaway: Path, tmp_path: Path) -> None:
    out = tmp_path / "units"
    res = fleet_cmd(
        [
            "units",
            "generate",
            "--target",
            "all",
            "--mode",
            "system",
            "--user",
            "alai",
            "--group",  # a LaunchDaemon names it; alai is not an account here
            "staff",
            "--out",
            str(out),
            "--config",
            str(throwaway),
        ],
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "alai-fleet-throwaway.service",
        "no.alai.fleet.throwaway.plist",
    ]
    assert "no service for claim-sweeper: [claim_sweeper] enabled = false" in res.output
    unit = (out / "alai-fleet-throwaway.service").read_text()
    assert f"run throwaway --config {throwaway}" in unit
    assert "TasksMax=8\n" in unit and "MemoryMax=64M\n" in unit  # its unit profile
    assert f"-{tmp_path / 'root' / 'throwaway'}" in unit  # the profile's write path
    # its role rule decides which hosts get a unit
    (tmp_path / "root" / "state").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root" / "state" / "role").write_text("standby\n")
    standby = tmp_path / "standby-units"
    res = fleet_cmd(
        ["units", "generate", "--out", str(standby), "--config", str(throwaway)], tmp_path
    )
    assert res.exit_code == 0, res.output
    assert not standby.exists() or not list(standby.iterdir())
    assert "no service for throwaway: refuses role standby: throwaway runs on the primary" in (
        res.output
    )


def test_registry_line_alone_adds_the_daemon_to_the_prometheus_pack(
    throwaway: Path, tmp_path: Path
) -> None:
    out = tmp_path / "prom"
    res = fleet_cmd(
        [
            "observability",
            "prometheus",
            "--hosts",
            "anvil=primary,forge=standby",
            "--out",
            str(out),
            "--config",
            str(throwaway),
        ],
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    scrape = yaml.safe_load((out / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert list(jobs) == ["fleet-throwaway"]  # the only daemon enabled
    statics = jobs["fleet-throwaway"]["static_configs"]
    assert statics == [
        {"targets": [f"anvil:{PORT}"], "labels": {"host": "anvil", "daemon": NAME}}
    ]  # forge is a standby, which its manifest refuses
    rules = yaml.safe_load((out / "rules" / "fleet.rules.yml").read_text())
    groups = {g["name"]: g["rules"] for g in rules["groups"]}
    assert {"record": "fleet:expected_interval_seconds", "expr": "vector(60)"} | {
        "labels": {"daemon": NAME}
    } in groups["alai-fleet-constants"]
    alert = next(r for r in groups["alai-fleet"] if r["alert"] == "FleetThrowawayWidgetsLow")
    assert alert["expr"] == "fleet_throwaway_widgets < 7"  # threshold from its section
    assert alert["annotations"]["doc_url"] == (  # under the default [alerting] runbook_base_url
        "https://git.example.com/alai/alai-fleet/blob/main/docs/alerts.md#fleetthrowawaywidgetslow"
    )
    promtool = shutil.which("promtool")
    if promtool is not None:
        for args in (
            ("check", "config", str(out / "prometheus.yml")),
            ("check", "rules", str(out / "rules" / "fleet.rules.yml")),
        ):
            proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stdout + proc.stderr
    # the dashboard gets a row for it with its metric, and nothing unknown
    grafana = tmp_path / "grafana"
    res = fleet_cmd(["observability", "grafana", "--out", str(grafana)], tmp_path)
    assert res.exit_code == 0, res.output
    dashboard = json.loads((grafana / "dashboards" / "fleet-overview.json").read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1] == NAME
    exprs = dashboard_exprs(dashboard)
    assert any("fleet_throwaway_widgets" in e for e in exprs)
    assert unknown_metrics(exprs, manifests()) == set()


def test_renderers_take_the_manifests_they_are_given(throwaway: Path, tmp_path: Path) -> None:
    """Without the throwaway manifest in the list, the same config renders no trace of it:
    the renderers read only the manifests passed in, not a registry of their own."""
    with pinned_environment(tmp_path / "home"):
        config = load_config(throwaway)
    without = tuple(m for m in manifests() if m.name != NAME)
    hosts = [HostTarget("anvil", "anvil", Role.PRIMARY)]
    assert "throwaway" not in render_prometheus_config(config, without, hosts)
    assert "throwaway" not in render_rules(config, without)
    assert "fleet_throwaway" not in json.dumps(overview_dashboard(config, without))
    assert "fleet-throwaway" in render_prometheus_config(config, manifests(), hosts)

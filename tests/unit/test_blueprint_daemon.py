"""The daemon's wiring without a subprocess: config section rules, cron period, role fencing,
alert policy (one pair per run date, none when compliant), and a cycle's metrics and outbox
rows across two nights with a real outbox and an injected clock."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from daemons.blueprint_watchdog.config import BlueprintWatchdogSection
from daemons.blueprint_watchdog.daemon import BlueprintWatchdog, alert_messages, schedule_period_s
from daemons.blueprint_watchdog.findings import Report
from fleet.config import load_config
from shared.config import ConfigError
from shared.logging import get_logger
from shared.metrics import DaemonMetrics
from shared.notify import Outbox
from shared.runtime import DaemonContext
from tests.unit.test_blueprint_fixture_tree import blueprint_text, build_mixed_tree, write


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    monkeypatch.setenv("FLEET_FLEET__ROOT", str(root))
    return root


def test_defaults_resolve_under_root(clean_env: Path) -> None:
    config = load_config()
    section = config.blueprint_watchdog
    assert section.enabled and section.schedule == "0 2 * * *" and section.metrics_port == 9805
    assert section.roots == [clean_env]
    assert section.registry_file == clean_env / "rules/zakon-registry.json"
    assert section.hivemind_db == clean_env / "databases/hivemind.db"
    assert section.report_file == clean_env / "state/blueprint-watchdog/report.json"
    assert [t.name for t in section.doc_types()] == ["blueprint", "deploy-map", "zakon"]
    assert section.doc_types()[0].sections == (
        "Purpose",
        "Architecture",
        "Deploy",
        "Rollback",
        "Verification",
    )


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ('blueprint_sections = ["(bad"]', "blueprint_watchdog"),
        ('schedule = "every night"', "blueprint_watchdog.schedule"),
        ('hivemind_url = "ftp://x"', "blueprint_watchdog.hivemind_url"),
        ("zakon_max_age_days = -1", "blueprint_watchdog.zakon_max_age_days"),
        ("surprise = 1", "blueprint_watchdog.surprise"),
    ],
)
def test_bad_section_values_name_their_path(clean_env: Path, toml: str, path: str) -> None:
    config_file = write(clean_env.parent / "fleet.toml", f"[blueprint_watchdog]\n{toml}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    assert any(p.startswith(path) for p, _ in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    ("expression", "period"),
    [("0 2 * * *", 86400), ("0 */6 * * *", 21600), ("30 2 * * 1-5", 3 * 86400)],
)
def test_schedule_period(expression: str, period: float) -> None:
    assert schedule_period_s(expression) == period


def test_role_fencing() -> None:
    db_sink = BlueprintWatchdogSection()
    http_sink = BlueprintWatchdogSection(hivemind_url="http://127.0.0.1:9/api/messages")
    assert BlueprintWatchdog.refuse_reason(db_sink, "primary") is None
    reason = BlueprintWatchdog.refuse_reason(db_sink, "standby")
    assert reason is not None and "replicated" in reason and "hivemind_url" in reason
    assert BlueprintWatchdog.refuse_reason(http_sink, "standby") is None
    # An unusable schedule never reaches the role rule: the section refuses it on load, with
    # the parser the runner schedules with (so `check-config` catches it too).
    for schedule in ("0 25 * * *", "0 0 30 2 *", "daily"):
        with pytest.raises(ValidationError, match="schedule"):
            BlueprintWatchdogSection(schedule=schedule)


def empty_report(now: float, **kw: object) -> Report:
    values: dict[str, object] = {
        "generated_at": now,
        "host": "anvil",
        "roots": [],
        "duration_s": 0.1,
        "findings": [],
        "problems": [],
        "registry_path": "/r.json",
        "registry_ok": True,
        "registry_error": None,
        "registry_kind": None,
        "registry_entries": 0,
        "registry_by_status": {},
    }
    values.update(kw)
    return Report(**values)  # type: ignore[arg-type]


def test_alert_policy_keys_by_host_and_date() -> None:
    night = datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC).timestamp()
    assert (
        alert_messages(
            empty_report(night), ops_channel="#ops", topic="t", report_path="r", max_files=5
        )
        == []
    )
    broken = empty_report(night, registry_ok=False, registry_kind="invalid", registry_error="x")
    slack, hive = alert_messages(
        broken, ops_channel="#ops", topic="t", report_path="r", max_files=5
    )
    assert (slack.sink, slack.channel, slack.dedup_key) == (
        "slack",
        "#ops",
        "blueprint-watchdog:anvil:2026-11-23:slack",
    )
    assert (hive.sink, hive.channel, hive.dedup_key) == (
        "hivemind",
        "t",
        "blueprint-watchdog:anvil:2026-11-23:hivemind",
    )
    assert hive.payload["severity"] == "critical" and slack.payload == {}
    later = empty_report(night + 3600, registry_ok=False, registry_kind="invalid")
    again = alert_messages(later, ops_channel="#ops", topic="t", report_path="r", max_files=5)
    assert [m.dedup_key for m in again] == [slack.dedup_key, hive.dedup_key]


async def test_two_nights_metrics_and_outbox(clean_env: Path) -> None:
    tree = build_mixed_tree(clean_env, fifo=False)
    config = load_config()
    metrics = DaemonMetrics("blueprint-watchdog", "test")
    outbox = await Outbox(config.notify.outbox_db).open()
    now = [datetime.now(UTC).timestamp()]
    ctx = DaemonContext(
        config=config,
        section=config.blueprint_watchdog,
        role="primary",
        log=get_logger(daemon="blueprint-watchdog"),
        metrics=metrics,
        outbox=outbox,
        clock=lambda: now[0],
    )
    daemon = BlueprintWatchdog(ctx)
    assert daemon.schedule == "0 2 * * *" and daemon.expected_interval_s == 86400
    registry = metrics.registry
    try:
        result = await daemon.cycle()
        assert result.detail["noncompliant"] == 6
        value = registry.get_sample_value(
            "fleet_blueprint_noncompliant", {"type": "blueprint", "reason": "schema"}
        )
        assert value == 1
        await daemon.cycle()  # same night: nothing new enqueued
        assert await outbox.pending_count() == 2
        # Fixed overnight: the gauge drops back to 0; the next night alerts once more for
        # what is still wrong.
        write(tree.files["four"], blueprint_text())
        now[0] += 86400
        await daemon.cycle()
        value = registry.get_sample_value(
            "fleet_blueprint_noncompliant", {"type": "blueprint", "reason": "schema"}
        )
        assert value == 0
        assert await outbox.pending_count() == 4
    finally:
        await outbox.close()
    with sqlite3.connect(config.notify.outbox_db) as conn:
        keys = [k for (k,) in conn.execute("SELECT dedup_key FROM outbox ORDER BY id")]
    assert len(set(keys)) == 4
    assert registry.get_sample_value("fleet_zakon_registry_ok") == 1

"""The generated alert rules with the real promtool: `promtool check config`/`check rules` on the
committed pack, and `promtool test rules` for every alert, firing and not firing (the cases
below; a test makes sure every alert has both). The real server: test_prometheus.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.registry import manifests
from shared.observability import alert_rules, to_yaml
from tests.prometheus_support import PROM_DIR, RULES, example_config, promtool

pytestmark = pytest.mark.system


# static checks -------------------------------------------------------------------------------
def test_promtool_checks_the_committed_config_and_rules() -> None:
    res = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_committed_rules_hold_every_alert() -> None:
    names = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    assert sorted(names) == sorted(a.name for a in alert_rules(example_config(), manifests()))


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
T_ER = target("email-reactor")
T_RL_OTHER = target("restore-loop", "spare")
ZAKON_FILES = {f'fleet_blueprint_files{{{T_BW}, type="zakon"}}': "12x20"}
# restore-loop exports its tiers' targets (P0 60 s, P1 300 s by default)


def llm_answers(malformed: str, good: str) -> dict[str, str]:
    """email-reactor's classifier answers counter, malformed and well-formed ("no")."""
    return {
        f'fleet_email_llm_requests_total{{{T_ER}, outcome="malformed"}}': malformed,
        f'fleet_email_llm_requests_total{{{T_ER}, outcome="no"}}': good,
        # errors are not answers: a dead LLM does not count toward the share
        f'fleet_email_llm_requests_total{{{T_ER}, outcome="transient"}}': "0+5x80",
    }


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
    Case(  # four restarts within 15 minutes (each start exports a new start time)
        "FleetDaemonCrashLooping",
        {f"fleet_start_time_seconds{{{T_CS}}}": "100 100 160 160 220 280 340 340x10"},
        "8m",
        labels_of(T_CS),
        "4",
    ),
    Case(  # one restart (an upgrade, a reboot): no alert
        "FleetDaemonCrashLooping",
        {f"fleet_start_time_seconds{{{T_CS}}}": "100x5 400x20"},
        "10m",
        None,
    ),
    Case(  # a restart every 20 minutes is not a loop
        "FleetDaemonCrashLooping",
        {f"fleet_start_time_seconds{{{T_CS}}}": "100x19 1300x19 2500x19 3700x19 4900x19"},
        "90m",
        None,
    ),
    Case(  # anvil's ollama-health sees the Ollama server on forge down
        "FleetOllamaHostDown",
        {
            f'fleet_ollama_up{{{T_OH}, llm_host="forge"}}': "0x10",
            f'fleet_ollama_up{{{T_OH}, llm_host="anvil"}}': "1x10",
        },
        "3m",
        {**labels_of(T_OH), "llm_host": "forge"},
    ),
    Case(
        "FleetOllamaHostDown", {f'fleet_ollama_up{{{T_OH}, llm_host="forge"}}': "1x10"}, "3m", None
    ),
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
    # promtool's clock starts at 0: a last success at -3e6 s is 34.7 days before it
    Case(  # a standby whose last drill passed 35 days ago: overdue
        "FleetDrDrillOverdue",
        {
            f"fleet_dr_drill_expected{{{T_HB_FORGE}}}": "1x100",
            f"fleet_dr_drill_last_success_timestamp_seconds{{{T_HB_FORGE}}}": "-3000000x100",
        },
        "90m",
        labels_of(T_HB_FORGE),
    ),
    Case(  # the primary is not expected to drill
        "FleetDrDrillOverdue",
        {
            f"fleet_dr_drill_expected{{{T_HB}}}": "0x100",
            f"fleet_dr_drill_last_success_timestamp_seconds{{{T_HB}}}": "-3000000x100",
        },
        "90m",
        None,
    ),
    Case(  # a drill passed 10 days ago
        "FleetDrDrillOverdue",
        {
            f"fleet_dr_drill_expected{{{T_HB_FORGE}}}": "1x100",
            f"fleet_dr_drill_last_success_timestamp_seconds{{{T_HB_FORGE}}}": "-864000x100",
        },
        "90m",
        None,
    ),
    Case(
        "FleetDrDrillDbFailed",
        {
            f'fleet_dr_drill_db_ok{{{T_HB_FORGE}, db="gamma"}}': "0x10",
            f'fleet_dr_drill_db_ok{{{T_HB_FORGE}, db="alpha"}}': "1x10",
        },
        "10m",
        {**labels_of(T_HB_FORGE), "db": "gamma"},
    ),
    Case(
        "FleetDrDrillDbFailed",
        {f'fleet_dr_drill_db_ok{{{T_HB_FORGE}, db="alpha"}}': "1x10"},
        "10m",
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
    Case("FleetEmailStale", {f"fleet_email_stale{{{T_ER}}}": "2x20"}, "11m", labels_of(T_ER), "2"),
    Case("FleetEmailStale", {f"fleet_email_stale{{{T_ER}}}": "0x20"}, "11m", None),
    Case(  # someone acted on it within minutes: no page
        "FleetEmailStale",
        {f"fleet_email_stale{{{T_ER}}}": "0 0 1 1 1 1 1 0x20"},
        "11m",
        None,
    ),
    Case(  # a model answering malformed every time (the reasoning-model bug)
        "FleetEmailLLMMalformed",
        llm_answers("0+2x80", "0x80"),
        "70m",
        labels_of(T_ER),
        "100%",
    ),
    Case(  # a third malformed: below the 0.5 share
        "FleetEmailLLMMalformed",
        llm_answers("0+1x80", "0+2x80"),
        "70m",
        None,
    ),
    Case(  # three malformed answers in a quiet hour: fewer than min_answers (5)
        "FleetEmailLLMMalformed",
        llm_answers("0 1 2 3x80", "0x80"),
        "20m",
        None,
    ),
]


def render(template: str, labels: dict[str, str], value: str) -> str:
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return re.sub(r"\{\{ \$value( \| humanize\w+)? \}\}", value, text)


def promtool_tests() -> dict[str, Any]:
    rules = {a.name: a for a in alert_rules(example_config(), manifests())}
    tests = []
    for case in CASES:
        exp: list[dict[str, Any]] = []
        if case.labels is not None:
            rule = rules[case.alert].to_rule(example_config().alerting.runbook_base_url)
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
    for alert in alert_rules(example_config(), manifests()):
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

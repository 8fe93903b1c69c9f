"""ollama-health's manifest: what the app knows about it without importing its runtime code."""

from __future__ import annotations

from collections.abc import Sequence

from daemons.ollama_health.config import OllamaHealthSection
from shared.config import FleetConfig
from shared.files import under_shared_tmp
from shared.manifest import AlertRule, DaemonManifest, MetricSpec, UnitProfile, metric

__all__ = ["MANIFEST", "PROBE_BUCKETS"]

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)


def unit_profile(_config: FleetConfig, section: OllamaHealthSection) -> UnitProfile:
    """The status file's private directory is written; so is the legacy link's directory,
    the only reason to share the host's /tmp (with the override file read there). With
    neither link nor override in /tmp (layout default) the unit keeps PrivateTmp."""
    link = section.status_link
    return UnitProfile(
        write_paths=(section.status_file.parent, *((link.parent,) if link else ())),
        shared_tmp=under_shared_tmp(
            section.status_file, section.override_file, *((link,) if link else ())
        ),
        tasks_max=32,
        memory_max_mb=192,
        process_type="Standard",  # the routing file must follow a dead Ollama within a cycle
    )


def alerts(_section: OllamaHealthSection) -> Sequence[AlertRule]:
    return (
        AlertRule(
            "FleetOllamaHostDown",
            "fleet_ollama_up == 0",
            "2m",
            "critical",
            "Ollama on {{ $labels.llm_host }} is down (seen from {{ $labels.host }})",
            "ollama-health has marked the Ollama server unhealthy for 2 minutes; tier routing "
            "fails over per the failover rules.",
            "docs/runbooks/ollama-health.md",
            ("ollama-health",),
        ),
        AlertRule(
            "FleetOllamaFailoverActive",
            "fleet_ollama_failover_active > 0",
            "5m",
            "warning",
            "Ollama failover rule {{ $labels.rule }} is active",
            "Tiers are being redirected to the other host (or to Claude) because of a down "
            "host or a manual override.",
            "docs/runbooks/ollama-health.md",
            ("ollama-health",),
        ),
    )


MANIFEST = DaemonManifest(
    name="ollama-health",
    section=OllamaHealthSection,
    daemon="daemons.ollama_health.daemon:OllamaHealth",
    description="probe the LLM servers, write the routing status file, alert on transitions",
    metrics=(
        metric(
            "fleet_ollama_up",
            "gauge",
            "Host healthy after thresholds, from probes alone (1) or not (0)",
            "llm_host",
        ),
        MetricSpec(
            "fleet_ollama_probe_duration_seconds",
            "histogram",
            "Wall time of one host's probe (url and tailscale_url together)",
            ("llm_host",),
            PROBE_BUCKETS,
        ),
        metric(
            "fleet_ollama_models",
            "gauge",
            "Models the host listed in its last probe (0 when the probe failed)",
            "llm_host",
        ),
        metric(
            "fleet_ollama_transitions_total",
            "counter",
            "Host state changes after thresholds, by new state (down, up)",
            "llm_host",
            "to",
        ),
        metric(
            "fleet_ollama_failover_active",
            "gauge",
            "Failover rule in force (its source host unhealthy or forced down)",
            "rule",
        ),
        metric(
            "fleet_ollama_override_active",
            "gauge",
            "Hosts whose health the override file currently forces",
        ),
    ),
    alerts=alerts,
    unit_profile=unit_profile,
    commands={"ollama": "daemons.ollama_health.cli:ollama"},
)

"""The metric catalogue the pack is generated from and checked against: what each daemon
exports, read from its manifest (the runtime's and the outbox sender's series, plus the
manifest's own list, the same one the daemon registers at run time). Pure functions of the
manifests they are given; nothing here imports a daemon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.manifest import DaemonManifest, MetricSpec
from shared.metrics import NOTIFY_METRICS, RUNTIME_METRICS

__all__ = ["exported_series", "metric_names_in", "metrics_for", "unknown_metrics"]

_METRIC_RE = re.compile(r"\bfleet_[a-z0-9_]+\b")


def metrics_for(manifest: DaemonManifest) -> tuple[MetricSpec, ...]:
    """Everything the daemon exports when it runs as a service."""
    return (*RUNTIME_METRICS, *NOTIFY_METRICS, *manifest.metrics)


def exported_series(manifests: Iterable[DaemonManifest]) -> set[str]:
    """Sample names the daemons export (histograms expanded)."""
    return {s for m in manifests for spec in metrics_for(m) for s in spec.series()}


def metric_names_in(expr: str) -> set[str]:
    """The fleet_ series a PromQL expression reads (recording-rule names use ':' and are
    not matched)."""
    return {m for m in _METRIC_RE.findall(expr) if ":" not in m}


def unknown_metrics(exprs: Iterable[str], manifests: Iterable[DaemonManifest]) -> set[str]:
    """fleet_ series the expressions read that none of the daemons exports."""
    known = exported_series(manifests)
    return {name for expr in exprs for name in metric_names_in(expr)} - known

"""Grafana panels for the overview dashboard, built from metric specs: a readable title from the
metric's name (its help is the description), thresholds of its own on every panel (Grafana's
default, red from 80, paints a daily job's age red all day), timestamps shown as time ago,
0/1 health gauges as red/green stats, and the level an alert fires at drawn on its metric's
graph. Every query is filtered by the ``$host`` variable through the scrape target's ``host``
label. Pure data; ``shared.observability.grafana`` lays the panels out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.manifest import AlertRule, MetricSpec

__all__ = [
    "BAD",
    "DS",
    "GOOD",
    "HOST",
    "LATE",
    "WARN",
    "Level",
    "age_stat",
    "age_thresholds",
    "alert_levels",
    "legend",
    "metric_panel",
    "metric_title",
    "stat",
    "state_stat",
    "target",
    "thresholds",
    "timeseries",
]

DS = {"type": "prometheus", "uid": "${datasource}"}
#: the selector every query carries: the machine, as the scrape target names it
HOST = 'host=~"$host"'

# threshold colours (Grafana's named palette)
GOOD, LATE, WARN, BAD = "green", "yellow", "orange", "red"

#: a value an alert fires above, and the colour of its severity
Level = tuple[float, str]

_ACRONYMS = {"llm": "LLM", "ok": "OK", "rpo": "RPO", "txid": "TXID", "url": "URL", "zakon": "ZAKON"}
_SUFFIXES = ("_timestamp_seconds", "_seconds", "_total")
# `fleet_x > N` or `fleet_x{...} >= N` as a bare selector: under rate() or sum() the graph
# would show something else than the alert compares
_ALERT_LEVEL = re.compile(
    r"(?<![\w:])(fleet_[a-z0-9_]+)(?:\{[^}]*\})?\s*>=?\s*(\d+(?:\.\d+)?)(?![\w.])"
)


def metric_title(spec: MetricSpec) -> str:
    """``fleet_email_llm_requests_total`` -> "Email LLM requests": the name without ``fleet_``
    and without its unit or counter suffix (the panel's unit says it), acronyms in capitals."""
    base = spec.name.removeprefix("fleet_")
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base.removesuffix(suffix)
            break
    text = " ".join(_ACRONYMS.get(word, word) for word in base.split("_"))
    return text[:1].upper() + text[1:]


def thresholds(*steps: Level, base: str = GOOD) -> dict[str, Any]:
    """Absolute thresholds: ``base`` below the first step, each step's colour from its value."""
    return {
        "mode": "absolute",
        "steps": [
            {"color": base, "value": None},
            *({"color": colour, "value": value} for value, colour in steps),
        ],
    }


def age_thresholds(interval_s: float) -> dict[str, Any]:
    """Colours for the age of a last success, from the daemon's interval: green while it is on
    time (the interval plus 10 %, plus a minute for the scrape and the refresh: a daily job
    stays green for 26.4 hours), yellow when late, red from 3 intervals plus 2 minutes (by then
    FleetCycleStale, 3 intervals for 1 minute, has fired)."""
    return thresholds((round(1.1 * interval_s + 60), LATE), (round(3 * interval_s + 120), BAD))


def alert_levels(alerts: Iterable[AlertRule]) -> dict[str, Level]:
    """metric -> (N, colour) for each ``metric > N`` (or ``>= N``) in the alerts' expressions:
    the level the alert fires above, drawn as a dashed line on that metric's graph (red for a
    critical alert, orange for a warning). The first alert naming a metric wins."""
    levels: dict[str, Level] = {}
    for alert in alerts:
        colour = BAD if alert.severity == "critical" else WARN
        for name, value in _ALERT_LEVEL.findall(alert.expr):
            number = float(value)
            levels.setdefault(name, (int(number) if number.is_integer() else number, colour))
    return levels


def target(expr: str, legend_format: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend_format, "refId": ref}


def legend(labels: Sequence[str]) -> str:
    """The machine, then the series' own labels: ``{{host}}: {{db}} {{tier}}``."""
    own = " ".join(f"{{{{{label}}}}}" for label in labels)
    return f"{{{{host}}}}: {own}" if own else "{{host}}"


def timeseries(
    title: str,
    targets: Sequence[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    level: Level | None = None,
) -> dict[str, Any]:
    """A graph coloured by series; with ``level``, that value drawn as a dashed line."""
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "thresholds": thresholds(*((level,) if level else ())),
                "custom": {"thresholdsStyle": {"mode": "dashed" if level else "off"}},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": list(targets),
    }


def stat(
    title: str,
    targets: Sequence[dict[str, Any]],
    *,
    unit: str,
    steps: dict[str, Any],
    mappings: Sequence[dict[str, Any]] = (),
    no_value: str | None = None,
    description: str = "",
) -> dict[str, Any]:
    """One coloured tile per series, its background from ``steps`` (thresholds())."""
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": steps,
        "mappings": list(mappings),
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "targets": list(targets),
    }


def state_stat(
    title: str, expr: str, legend_format: str, *, good: str, bad: str, description: str = ""
) -> dict[str, Any]:
    """A 0/1 gauge: 0 in red as ``bad``, 1 in green as ``good``."""
    mappings = [
        {
            "type": "value",
            "options": {
                "0": {"text": bad, "color": BAD, "index": 0},
                "1": {"text": good, "color": GOOD, "index": 1},
            },
        }
    ]
    return stat(
        title,
        [target(expr, legend_format)],
        unit="none",
        steps=thresholds((1, GOOD), base=BAD),
        mappings=mappings,
        description=description,
    )


def age_stat(
    title: str,
    metric: str,
    selector: str,
    legend_format: str,
    interval_s: float,
    *,
    description: str = "",
) -> dict[str, Any]:
    """A Unix-time gauge shown as time ago (``time() - metric``, in seconds), coloured by
    age_thresholds(interval_s); 0 (never yet) shows as "no success yet"."""
    series = f"{metric}{{{selector}}}"
    return stat(
        title,
        [target(f"time() - {series} and {series} > 0", legend_format)],
        unit="s",
        steps=age_thresholds(interval_s),
        no_value="no success yet",
        description=description,
    )


def metric_panel(
    spec: MetricSpec, *, interval_s: float, levels: Mapping[str, Level]
) -> dict[str, Any]:
    """The obvious panel for a daemon's own metric: a ``*_timestamp_seconds`` gauge as time
    ago, a ``*_up``/``*_ok`` gauge as a red/green stat, other gauges as they are (with their
    alert's level), counters as rates, histograms as p50/p95."""
    sel = f"{spec.name}{{{HOST}}}"
    labels = [label for label in spec.labels if label != "daemon"]
    title = metric_title(spec)
    if spec.kind == "gauge" and spec.name.endswith("_timestamp_seconds"):
        return age_stat(
            f"{title}: time ago", spec.name, HOST, legend(labels), interval_s, description=spec.help
        )
    if spec.kind == "gauge" and spec.name.endswith(("_up", "_ok")):
        good, bad = ("up", "DOWN") if spec.name.endswith("_up") else ("OK", "NOT OK")
        return state_stat(title, sel, legend(labels), good=good, bad=bad, description=spec.help)
    if spec.kind == "counter":
        expr = f"sum by ({', '.join(['host', *labels])}) (rate({sel}[$__rate_interval]))"
        return timeseries(title, [target(expr, legend(labels))], unit="ops", description=spec.help)
    if spec.kind == "histogram":
        by = ", ".join(["le", "host", *labels])
        bucket = f"{spec.name}_bucket{{{HOST}}}"
        quantiles = [
            target(
                f"histogram_quantile({q}, sum by ({by}) (rate({bucket}[$__rate_interval])))",
                f"p{round(q * 100)} " + legend(labels),
                ref,
            )
            for q, ref in ((0.5, "A"), (0.95, "B"))
        ]
        return timeseries(title, quantiles, unit="s", description=spec.help)
    unit = "s" if spec.name.endswith("_seconds") else "short"
    return timeseries(
        title,
        [target(sel, legend(labels))],
        unit=unit,
        description=spec.help,
        level=levels.get(spec.name),
    )

"""Per-daemon Prometheus registry and the HTTP server that serves ``/metrics`` and ``/healthz``.

Each daemon owns one registry (a fresh one per test) holding the fleet-wide series and its own.
The server binds the configured address (127.0.0.1 by default) and serves nothing but those two
paths; it must never block the event loop or expose anything beyond metrics and health.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["DaemonMetrics", "HealthReport", "MetricsServer"]

# `_created` series double every counter's cardinality and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

CYCLE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OUTCOMES = ("ok", "error", "timeout")


class DaemonMetrics:
    """The series every daemon exports, on a registry the daemon adds its own to."""

    def __init__(
        self, daemon: str, host: str, version: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.daemon = daemon
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "fleet_build_info",
            "alai-fleet build running this daemon (always 1)",
            ["daemon", "version", "host"],
            registry=r,
        )
        self.cycles = Counter(
            "fleet_cycles",
            "Daemon cycles by outcome (ok, error, timeout)",
            ["daemon", "outcome"],
            registry=r,
        )
        self.cycle_duration = Histogram(
            "fleet_cycle_duration_seconds",
            "Wall time of one daemon cycle",
            ["daemon"],
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "fleet_last_success_timestamp_seconds",
            "Unix time the last cycle succeeded",
            ["daemon"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "fleet_consecutive_failures",
            "Cycles failed in a row since the last success",
            ["daemon"],
            registry=r,
        )
        self.build_info.labels(daemon, version, host).set(1)
        for outcome in OUTCOMES:
            self.cycles.labels(daemon, outcome)
        self.cycle_duration.labels(daemon)
        self.last_success.labels(daemon)
        self.consecutive_failures.labels(daemon).set(0)

    def record_cycle(self, outcome: str, duration_s: float, now: float) -> None:
        self.cycles.labels(self.daemon, outcome).inc()
        self.cycle_duration.labels(self.daemon).observe(duration_s)
        if outcome == "ok":
            self.last_success.labels(self.daemon).set(now)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class HealthReport:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class MetricsServer:
    """aiohttp server for one daemon: GET /metrics and GET /healthz, nothing else."""

    def __init__(
        self,
        metrics: DaemonMetrics,
        health: Callable[[], HealthReport],
        bind: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._bind = bind
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        body = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_healthz(self, _request: web.Request) -> web.Response:
        report = self._health()
        payload = {"ok": report.ok, **report.detail}
        return web.Response(
            status=200 if report.ok else 503,
            text=json.dumps(payload, sort_keys=True),
            content_type="application/json",
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._bind, self._port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""The HTTP server that serves one daemon's ``/metrics`` and ``/healthz``.

It binds the configured address (127.0.0.1 by default) and serves nothing but those two
paths; it must never block the event loop or expose anything beyond metrics and health.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from shared.metrics import DaemonMetrics

__all__ = ["HealthReport", "MetricsServer"]


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

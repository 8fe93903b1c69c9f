"""The HTTP server that serves one daemon's ``/metrics`` and ``/healthz``.

It binds the configured address (127.0.0.1 by default) and serves nothing but those two
paths, within the ``[fleet] http_*`` limits (``shared.http_site``: header and idle timeouts, a
connection cap); it must never block the event loop or expose anything beyond metrics and
health.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from shared.http_site import GuardedSite, HttpLimits
from shared.logging import get_logger
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
        *,
        limits: HttpLimits | None = None,
        log: Any = None,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._bind = bind
        self._port = port
        self._limits = limits or HttpLimits()
        self._log = log if log is not None else get_logger()
        self._site: GuardedSite | None = None
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
        site = GuardedSite(app, self._bind, self._port, self._limits, log=self._log, name="metrics")
        await site.start()
        self._site = site
        self.port = site.port

    async def close(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.close()

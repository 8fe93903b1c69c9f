"""The HTTP server that serves one daemon's ``/metrics`` and ``/healthz``.

It binds the configured address (127.0.0.1 by default) and serves nothing but those two
paths (GET or HEAD; 405 for another method on them, 404 for any other path), within the
``[fleet] http_*`` limits (``shared.http_site``: header and idle timeouts, size limits, a
connection cap); it must never block the event loop or expose anything beyond metrics and
health.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from shared.http_site import GuardedSite, HttpLimits
from shared.http_wire import Request, Response, text_response
from shared.logging import get_logger
from shared.metrics import DaemonMetrics

__all__ = ["HealthReport", "MetricsServer"]


@dataclass
class HealthReport:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class MetricsServer:
    """HTTP server for one daemon: GET /metrics and GET /healthz, nothing else."""

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

    async def _dispatch(self, request: Request) -> Response:
        if request.path not in ("/metrics", "/healthz"):
            return text_response(404, "not found")
        if request.method not in ("GET", "HEAD"):
            return text_response(405, Allow="GET, HEAD")
        if request.path == "/metrics":
            return Response(200, self._metrics.render(), CONTENT_TYPE_LATEST)
        report = self._health()
        payload = {"ok": report.ok, **report.detail}
        return Response(
            200 if report.ok else 503,
            json.dumps(payload, sort_keys=True).encode("utf-8"),
            "application/json; charset=utf-8",
        )

    async def start(self) -> None:
        site = GuardedSite(
            self._dispatch, self._bind, self._port, self._limits, log=self._log, name="metrics"
        )
        await site.start()
        self._site = site
        self.port = site.port

    async def close(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.close()

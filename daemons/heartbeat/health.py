"""The host health endpoint: ``GET /health`` (200, ok or degraded) and ``GET /health/fleet``
(503 while degraded), built from the heartbeat files of the daemons enabled on this host.
Daemons that role fencing keeps off this host (restore-loop on a primary, email-reactor on a
standby) are not expected here.

``HealthView`` reads those files (in a worker thread, one reader at a time) and reuses one
rendered answer for ``cache_s``, so no burst of requests can make the daemon do more than one
read per ``cache_s``. ``HealthServer`` serves exactly those two paths and answers 404 to
everything else, within the ``[fleet] http_*`` limits (``shared.http_site``); it must never
read any other file, take a parameter, or wait on a probe.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from daemons.heartbeat.policy import FleetReport, fleet_report
from shared import __version__
from shared.clock import Clock
from shared.config import FleetConfig
from shared.epochs import read_epoch, stand_down_reason
from shared.heartbeats import HeartbeatStatus, read_status
from shared.http_site import GuardedSite, HttpLimits
from shared.http_wire import Request, Response, text_response
from shared.logging import get_logger
from shared.manifest import DaemonManifest
from shared.roles import Role, RoleFileError, effective_role

__all__ = ["HEALTH_PATHS", "HealthServer", "HealthView", "expected_daemons"]

HEALTH_PATHS = ("/health", "/health/fleet")


def expected_daemons(
    config: FleetConfig, fleet: Sequence[DaemonManifest], role: Role | None
) -> list[str]:
    """The daemons this host should be running: enabled, and not fenced off its role (every
    enabled one when the role is unknown). Only manifests are read (no sibling daemon's code
    is imported, so a broken sibling cannot take /health down with it)."""
    expected = []
    for manifest in fleet:
        section = config.daemon_section(manifest.section_name)
        if section.enabled and (role is None or not manifest.fenced(section, role)):
            expected.append(manifest.name)
    return expected


class HealthView:
    """The current /health answer for this host, cached for ``cache_s`` seconds."""

    def __init__(
        self,
        config: FleetConfig,
        fleet: Sequence[DaemonManifest],
        *,
        cache_s: float,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.fleet = tuple(fleet)
        self.cache_s = cache_s
        self.clock = clock
        self._lock = asyncio.Lock()
        self._cached: tuple[FleetReport, bytes] | None = None
        self._cached_at = 0.0

    def read(self) -> FleetReport:
        """Read the heartbeat files now (blocking file I/O: call from a thread)."""
        now = self.clock()
        try:
            role: Role | None = effective_role(self.config.fleet.role, self.config.role_file)
            role_error = ""
        except RoleFileError as exc:
            # Shown instead of a role (and degraded): the daemons that need the role refuse
            # to start until `fleet role set` writes a good one.
            role, role_error = None, str(exc)
        expected = expected_daemons(self.config, self.fleet, role)
        statuses = {name: self._status(name, now) for name in expected}
        role_file, host = self.config.role_file, self.config.fleet.host
        fenced = stand_down_reason(role_file, role, host) if role is not None else None
        return fleet_report(
            host=host,
            role=role,
            version=__version__,
            now=now,
            statuses=statuses,
            role_error=role_error,
            epoch=read_epoch(role_file),
            fenced=fenced or "",
        )

    def _status(self, name: str, now: float) -> HeartbeatStatus:
        return read_status(self.config.heartbeat_dir, name, now)

    async def current(self, max_age_s: float | None = None) -> tuple[FleetReport, bytes]:
        """The answer no older than ``max_age_s`` (default ``cache_s``) and its JSON body."""
        limit = self.cache_s if max_age_s is None else max_age_s
        cached = self._cached
        if cached is not None and time.monotonic() - self._cached_at < limit:
            return cached
        async with self._lock:
            # Whoever waited on the lock may find it refreshed by the holder.
            cached = self._cached
            if cached is not None and time.monotonic() - self._cached_at < limit:
                return cached
            report = await asyncio.to_thread(self.read)
            body = json.dumps(report.body, sort_keys=True).encode("utf-8")
            self._cached, self._cached_at = (report, body), time.monotonic()
            return report, body


class HealthServer:
    """HTTP server on ``bind``:``port``: GET (or HEAD) /health and /health/fleet, nothing else
    (404 for any other method or path)."""

    def __init__(
        self,
        view: HealthView,
        bind: str,
        port: int,
        *,
        limits: HttpLimits | None = None,
        log: Any = None,
    ) -> None:
        self.view = view
        self.bind = bind
        self._port = port
        self._limits = limits or HttpLimits.of(view.config.fleet)
        self._log = log if log is not None else get_logger()
        self._site: GuardedSite | None = None
        self.port: int | None = None

    async def _dispatch(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD") or request.path not in HEALTH_PATHS:
            return text_response(404, "not found")
        report, body = await self.view.current()
        status = 503 if request.path == "/health/fleet" and not report.ok else 200
        return Response(
            status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store"}
        )

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is unusable (port taken, Tailscale
        address not up yet). Safe to call again after a failure."""
        site = GuardedSite(
            self._dispatch, self.bind, self._port, self._limits, log=self._log, name="health"
        )
        await site.start()
        self._site = site
        self.port = site.port

    async def close(self) -> None:
        if self._site is not None:
            site, self._site = self._site, None
            await site.close()

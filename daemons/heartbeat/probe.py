"""HTTP adapters of the heartbeat daemon: probe a peer's /health, send a dead-man's-switch ping.

Thin and bounded: every call has a total deadline, reads at most ``MAX_BODY`` bytes of a
(hostile) answer and returns a plain result instead of raising. Error texts name the kind of
failure only; they must never contain a URL, because a ping URL is a secret.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.backoff import backoff_delay
from shared.epochs import Epoch
from shared.roles import Role

if TYPE_CHECKING:  # imported with the first probe: a heartbeat with no peer or ping never loads it
    import httpx

__all__ = ["MAX_BODY", "PeerProbe", "PingResult", "describe_error", "probe_peer", "send_ping"]

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class PeerProbe:
    ok: bool
    status_code: int | None = None
    role: Role | None = None
    fleet_status: str | None = None
    error: str = ""
    duration_s: float = 0.0
    #: the promotion epoch the peer reports (None: never promoted, or an older fleet)
    epoch: Epoch | None = None


@dataclass(frozen=True)
class PingResult:
    ok: bool
    attempts: int
    error: str = ""


def describe_error(exc: BaseException) -> str:
    """A URL-free description of a transport failure."""
    import httpx

    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection dropped"
    if isinstance(exc, httpx.TooManyRedirects | httpx.UnsupportedProtocol | httpx.InvalidURL):
        return "bad URL or redirect"
    return type(exc).__name__


async def _get_limited(client: httpx.AsyncClient, url: str, timeout_s: float) -> tuple[int, bytes]:
    async with asyncio.timeout(timeout_s):
        async with client.stream("GET", url, timeout=timeout_s) as resp:
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_BODY:
                    break
            return resp.status_code, bytes(body[:MAX_BODY])


def parse_health(body: bytes) -> tuple[str, Role | None, Epoch | None] | None:
    """(status, role, epoch) from a fleet /health answer, or None if it is not one (an HTML
    error page from a proxy is not a live host). A fenced host is a live host."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: hostile
        return None
    if not isinstance(data, dict):
        return None
    status = data.get("status")
    if status not in ("ok", "degraded", "fenced"):
        return None
    return str(status), _role(data.get("role")), Epoch.from_json(data.get("epoch"))


def _role(value: object) -> Role | None:
    """The role a peer reports, or None for anything that is not exactly a role name."""
    if not isinstance(value, str):
        return None
    try:
        return Role(value)
    except ValueError:
        return None


async def probe_peer(client: httpx.AsyncClient, url: str, timeout_s: float) -> PeerProbe:
    """GET the peer's health URL. Up means a 200 or 503 carrying a fleet health answer (503 is
    /health/fleet saying "degraded": the host itself answers)."""
    import httpx

    start = time.monotonic()
    try:
        code, body = await _get_limited(client, url, timeout_s)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        return PeerProbe(False, error=describe_error(exc), duration_s=time.monotonic() - start)
    duration = time.monotonic() - start
    parsed = parse_health(body) if code in (200, 503) else None
    if parsed is None:
        reason = f"HTTP {code}" if code not in (200, 503) else f"HTTP {code}, not a health answer"
        return PeerProbe(False, status_code=code, error=reason, duration_s=duration)
    status, role, epoch = parsed
    return PeerProbe(True, code, role, status, duration_s=duration, epoch=epoch)


async def send_ping(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout_s: float,
    retries: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PingResult:
    """GET ``url`` until a 2xx answer, at most ``1 + retries`` attempts (1 s, 2 s, 4 s ...
    apart, capped at 10 s)."""
    import httpx

    error = ""
    for attempt in range(retries + 1):
        if attempt:
            await sleep(backoff_delay(attempt, 1.0, 10.0, rand=None))
        try:
            code, _ = await _get_limited(client, url, timeout_s)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = describe_error(exc)
            continue
        if 200 <= code < 300:
            return PingResult(True, attempt + 1)
        error = f"HTTP {code}"
    return PingResult(False, retries + 1, error)

"""HTTP probes of the watched LLM servers (httpx.AsyncClient), all at once.

Every host is probed concurrently, and a host's ``url`` and ``tailscale_url`` concurrently too,
each bounded by the host's ``health_timeout_ms`` as a hard deadline: a cycle lasts about one
timeout however many hosts are down or hanging. Healthy means HTTP 200 whose JSON body has a
``models`` list (ollama) or a ``data`` list (openai). A probe never raises: a remote fault (or an
unexpected error, so one bad host cannot fail the cycle for all) is a result carrying a short
error. This module must never follow redirects, use proxy
settings from the environment, or read more than ``MAX_BODY_BYTES`` of an answer.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from daemons.ollama_health.table import HostSpec
from shared.clock import MonotonicClock

__all__ = ["MAX_BODY_BYTES", "EndpointResult", "ProbeResult", "Prober", "parse_models"]

MAX_BODY_BYTES = 4 * 1024 * 1024
USER_AGENT = "alai-fleet-ollama-health"


@dataclass(frozen=True)
class EndpointResult:
    ok: bool
    latency_s: float
    models: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    host: str
    ok: bool
    via: str | None  # "url" | "tailscale" when ok
    latency_s: float | None  # of the answer used (ok), or of the url probe (failed)
    models: tuple[str, ...]
    error: str | None
    duration_s: float  # the host's whole probe, both URLs


def parse_models(kind: str, body: bytes) -> tuple[str, ...]:
    """Model names from a health answer; raises ValueError saying what is wrong."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to decode
        raise ValueError("invalid JSON in answer") from None
    key = "data" if kind == "openai" else "models"
    items = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"answer has no {key!r} list")
    name_key = ("id",) if kind == "openai" else ("name", "model")
    names: list[str] = []
    for item in items:
        if isinstance(item, dict):
            for k in name_key:
                value = item.get(k)
                if isinstance(value, str) and value:
                    names.append(value[:200])
                    break
        elif isinstance(item, str) and item:
            names.append(item[:200])
    return tuple(names)


def _root_os_error(exc: BaseException) -> OSError | None:
    """The innermost OSError in an exception's cause chain (anyio hides the refusal there)."""
    found: OSError | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        root = _root_os_error(exc)
        if isinstance(root, ConnectionRefusedError):
            return "connection refused"
        text = str(root or exc).lower()
        if "name or service" in text or "nodename" in text or "resolution" in text:
            return "name resolution failed"
        if root is not None and root.strerror:
            return f"connect failed ({root.strerror.lower()})"
        return f"connect failed ({str(exc)[:120]})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed without a valid HTTP answer"
    if isinstance(exc, httpx.ReadError):
        return "connection reset while reading"
    return f"{type(exc).__name__} ({str(exc)[:120]})"


class Prober:
    """Owns one httpx client (no keep-alive: each probe opens a fresh connection, as a router's
    first request after an outage would)."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        monotonic: MonotonicClock = time.monotonic,
    ) -> None:
        self._client = client  # for every URL when given (tests)
        self._plain: httpx.AsyncClient | None = None
        self._tls: httpx.AsyncClient | None = None
        self._monotonic = monotonic

    def _client_for(self, url: str) -> httpx.AsyncClient:
        """The client for ``url``. An https URL gets one with the default trust store, built
        at the first such URL: httpx loads that store (~1.5 MiB) whenever it builds a client,
        which a fleet probing only http:// hosts never needs. The http client gets a context
        that trusts nothing: with no redirects followed it never makes a TLS connection, and
        if it ever did, the handshake would fail rather than go unverified."""
        if self._client is not None:
            return self._client
        tls = url.lower().startswith("https:")
        client = self._tls if tls else self._plain
        if client is None:
            client = httpx.AsyncClient(
                verify=True if tls else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
                trust_env=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
            if tls:
                self._tls = client
            else:
                self._plain = client
        return client

    async def close(self) -> None:
        for client in (self._client, self._plain, self._tls):
            if client is not None:
                await client.aclose()

    async def probe_all(self, hosts: Iterable[HostSpec]) -> dict[str, ProbeResult]:
        tasks: dict[str, asyncio.Task[ProbeResult]] = {}
        async with asyncio.TaskGroup() as group:
            for host in hosts:
                tasks[host.name] = group.create_task(self.probe_host(host), name=host.name)
        return {name: task.result() for name, task in tasks.items()}

    async def probe_host(self, host: HostSpec) -> ProbeResult:
        """Probe ``url`` and ``tailscale_url`` at once; healthy if either answers, ``url``
        preferred. Takes at most the host's timeout."""
        start = self._monotonic()
        if host.tailscale_url is None:
            lan = await self._endpoint(host, host.url)
            return self._result(host, start, lan, "url", lan.error)
        async with asyncio.TaskGroup() as group:
            lan_task = group.create_task(self._endpoint(host, host.url))
            ts_task = group.create_task(self._endpoint(host, host.tailscale_url))
            lan = await lan_task
            if lan.ok:
                ts_task.cancel()
                return self._result(host, start, lan, "url", None)
            ts = await ts_task
        if ts.ok:
            return self._result(host, start, ts, "tailscale", None)
        return self._result(host, start, lan, "url", f"url: {lan.error}; tailscale: {ts.error}")

    def _result(
        self, host: HostSpec, start: float, used: EndpointResult, via: str, error: str | None
    ) -> ProbeResult:
        return ProbeResult(
            host=host.name,
            ok=used.ok,
            via=via if used.ok else None,
            latency_s=used.latency_s,
            models=used.models,
            error=error,
            duration_s=self._monotonic() - start,
        )

    async def _endpoint(self, host: HostSpec, base_url: str) -> EndpointResult:
        start = self._monotonic()
        timeout = host.timeout_s

        def failed(error: str) -> EndpointResult:
            return EndpointResult(False, self._monotonic() - start, error=error)

        try:
            # httpx's timeouts are per phase (a slow drip could outlive them); the asyncio
            # deadline bounds the whole exchange.
            async with asyncio.timeout(timeout):
                body, status = await self._get(base_url + host.health_path, timeout)
        except TimeoutError:
            return failed(f"no answer within {round(timeout * 1000)} ms")
        except httpx.TimeoutException:
            return failed(f"no answer within {round(timeout * 1000)} ms")
        except httpx.HTTPError as exc:
            return failed(_describe(exc))
        except OSError as exc:
            return failed(f"{type(exc).__name__}: {exc.strerror or exc}")
        except Exception as exc:  # a probe never raises: one bad host must not fail the cycle
            return failed(f"probe error: {type(exc).__name__} ({str(exc)[:120]})")
        if body is None:
            return failed(f"answer larger than {MAX_BODY_BYTES} bytes")
        if status != 200:
            return failed(f"HTTP {status}")
        try:
            models = parse_models(host.kind, body)
        except ValueError as exc:
            return failed(str(exc))
        return EndpointResult(True, self._monotonic() - start, models=models)

    async def _get(self, url: str, timeout: float) -> tuple[bytes | None, int]:
        async with self._client_for(url).stream("GET", url, timeout=httpx.Timeout(timeout)) as resp:
            if resp.status_code != 200:
                return b"", resp.status_code
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return None, resp.status_code
                chunks.append(chunk)
            return b"".join(chunks), resp.status_code

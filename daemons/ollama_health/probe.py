"""HTTP probes of the watched LLM servers (HTTP/1.1 with h11 over asyncio streams), all at once.

Every host is probed concurrently, and a host's ``url`` and ``tailscale_url`` concurrently too,
each bounded by the host's ``health_timeout_ms`` as a hard deadline on the whole exchange
(connect, TLS, head and body): a cycle lasts about one timeout however many hosts are down,
hanging or trickling. A probe is one ``GET`` on a fresh connection (``Connection: close``, as a
router's first request after an outage would make), closed when done, failed or cancelled.
Healthy means HTTP 200 whose JSON body has a ``models`` list (ollama) or a ``data`` list
(openai). A probe never raises: a remote fault (or an unexpected error, so one bad host cannot
fail the cycle for all) is a result carrying a short error that never quotes a URL or address.
This module must never follow redirects, use proxy settings from the environment, read more
than ``MAX_BODY_BYTES`` of a body (or ``MAX_HEAD_BYTES`` of a head), load the default trust
store before the first ``https://`` URL, or import httpx (~4 MiB of idle RSS for this one
kind of request; issue 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import h11

from daemons.ollama_health.table import HostSpec
from shared.clock import MonotonicClock

__all__ = ["MAX_BODY_BYTES", "EndpointResult", "ProbeResult", "Prober", "parse_models"]

MAX_BODY_BYTES = 4 * 1024 * 1024
# Status line and headers (and a chunk-size line): h11 refuses a longer incomplete event; with
# the 1xx answers before them, the exchange refuses more. Ollama's and MLX's heads are a few
# hundred bytes.
MAX_HEAD_BYTES = 32 * 1024
READ_BYTES = 64 * 1024
# A TLS close waits for the peer's close_notify; past this the connection is aborted.
CLOSE_WAIT_S = 0.5
USER_AGENT = "alai-fleet-ollama-health"
DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 characters kept as they are in a path (``%`` too: already-encoded stays so).
PATH_SAFE = "/:@!$&'()*+,;=%"
INVALID_ANSWER = "connection closed without a valid HTTP answer"
# The next address of a name is tried when the previous one has not connected by then
# (RFC 8305's connection attempt delay).
CONNECT_STAGGER_S = 0.25
# One getaddrinfo result: family, type, proto, canonical name, address.
AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


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


class ProbeFailed(Exception):
    """A probe that failed before an HTTP answer; its text is the result's error."""


@dataclass(frozen=True)
class Target:
    """Where one probe goes, from its URL."""

    tls: bool
    host: str  # a name or an IP literal (no brackets), for getaddrinfo and TLS
    port: int
    authority: str  # the Host header: port only when not the scheme's default
    target: str  # path and query, percent-encoded


def parse_target(url: str) -> Target:
    """The probe target of ``url``; raises ProbeFailed saying what is wrong with it (never
    quoting it: a URL can carry a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port  # raises on a port out of range or not a number
        if host and not host.isascii():  # a Host header is ASCII: the IDNA form DNS gets
            host = host.encode("idna").decode("ascii")  # UnicodeError: a ValueError
    except ValueError:
        raise ProbeFailed("invalid URL (host or port)") from None
    if parts.scheme not in DEFAULT_PORTS:  # urlsplit lower-cases the scheme
        raise ProbeFailed("invalid URL (not http:// or https://)")
    if not host:
        raise ProbeFailed("invalid URL (no host)")
    default = DEFAULT_PORTS[parts.scheme]
    name = f"[{host}]" if ":" in host else host
    authority = name if port is None or port == default else f"{name}:{port}"
    target = quote(parts.path or "/", safe=PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=PATH_SAFE + "?")
    return Target(
        parts.scheme == "https", host, default if port is None else port, authority, target
    )


def describe_connect_error(exc: OSError | None) -> str:
    """A short, address-free text for a failed connect or TLS handshake."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):  # the kernel's connect timeout (ETIMEDOUT)
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        # "Hostname mismatch, certificate is not valid for 'x'": the part before the comma.
        reason = (exc.verify_message or "certificate verify failed").split(",")[0]
        return f"connect failed (TLS certificate not trusted: {reason[:120]})"
    if isinstance(exc, ssl.SSLError):
        return f"connect failed (TLS: {(exc.reason or type(exc).__name__)[:120]})"
    if exc is None:
        return "connect failed (no address for the host)"
    reason = exc.strerror or type(exc).__name__
    return f"connect failed ({reason.lower()[:120]})"


async def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close a probe's connection, waiting a bounded time (a TLS peer may never answer its
    close_notify), then abort it."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_WAIT_S):
            await writer.wait_closed()
    except (OSError, TimeoutError):  # reset or TLS error while closing; or no close_notify
        writer.transport.abort()


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The Content-Length of an answer (h11 checked it is a number), or 0 without one."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target
) -> tuple[bytes | None, int]:
    """One GET on an open connection: (body, status); body b"" when the status is not 200
    (not read), None when it is larger than MAX_BODY_BYTES (read no further)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    request = h11.Request(
        method="GET",
        target=target.target,
        headers=[
            ("Host", target.authority),
            ("User-Agent", USER_AGENT),
            ("Accept", "application/json"),
            ("Accept-Encoding", "identity"),  # the body is parsed as is
            ("Connection", "close"),
        ],
    )
    writer.write((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    await writer.drain()
    status = 0
    chunks: list[bytes] = []
    size = 0
    head_size = 0  # received before the final head: 1xx answers count as its head
    while True:
        event = conn.next_event()  # h11.RemoteProtocolError on anything but valid HTTP/1.x
        if event is h11.NEED_DATA:
            if not status and head_size > MAX_HEAD_BYTES:  # endless interim answers
                raise h11.RemoteProtocolError("head too large", 431)
            data = await reader.read(READ_BYTES)
            head_size += len(data)
            conn.receive_data(data)  # b"" at EOF: h11 decides
        elif isinstance(event, h11.Response):
            status = event.status_code
            if status != 200:
                return b"", status
            if declared_length(event.headers) > MAX_BODY_BYTES:
                return None, status
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY_BYTES:
                return None, status
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks), status
        elif not isinstance(event, h11.InformationalResponse):  # a 1xx: the answer follows
            # ConnectionClosed or PAUSED before the end: h11 raises first. Never spin on one:
            # a loop that does not await would hold the event loop past every deadline.
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", 400)


class Prober:
    """Probes LLM servers; holds nothing between probes but the TLS context, built at the
    first https:// URL (the default trust store is ~1.5 MiB, which a fleet probing only
    http:// hosts never needs)."""

    def __init__(self, *, monotonic: MonotonicClock = time.monotonic) -> None:
        self._tls: ssl.SSLContext | None = None
        self._monotonic = monotonic

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def close(self) -> None:
        """Nothing to release: every probe closes its own connection."""
        self._tls = None

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
                ts_task.cancel()  # its connection is closed before the group exits
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
        deadline = asyncio.timeout(timeout)

        def failed(error: str) -> EndpointResult:
            return EndpointResult(False, self._monotonic() - start, error=error)

        try:
            # The connection is closed (bounded) after the deadline's scope exits, so a slow
            # close cannot turn an answer received in time into a timeout.
            async with contextlib.AsyncExitStack() as closing, deadline:
                body, status = await self._get(base_url + host.health_path, closing)
        except TimeoutError:
            if deadline.expired():
                return failed(f"no answer within {round(timeout * 1000)} ms")
            return failed("timed out")
        except ProbeFailed as exc:
            return failed(str(exc))
        except h11.RemoteProtocolError:  # not HTTP, a head too large, or EOF mid-answer
            return failed(INVALID_ANSWER)
        except ConnectionError:  # reset, broken pipe, aborted: after the connect
            return failed("connection reset while reading")
        except OSError as exc:
            return failed(f"{type(exc).__name__}: {(exc.strerror or 'I/O error')[:120]}")
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

    async def _get(self, url: str, closing: contextlib.AsyncExitStack) -> tuple[bytes | None, int]:
        target = parse_target(url)
        reader, writer = await self._connect(target)
        closing.push_async_callback(close_stream, writer)
        return await exchange(reader, writer, target)

    async def _connect(self, target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``target`` (TLS on top for https), from a socket made here."""
        sock = await connect_socket(target)
        try:
            if not target.tls:
                return await asyncio.open_connection(sock=sock, limit=READ_BYTES)
            return await asyncio.open_connection(
                sock=sock, limit=READ_BYTES, ssl=self._tls_context(), server_hostname=target.host
            )
        except OSError as exc:  # the TLS handshake
            sock.close()
            raise ProbeFailed(describe_connect_error(exc)) from None
        except BaseException:  # cancelled (the other URL answered), or the deadline
            sock.close()
            raise


async def connect_address(loop: asyncio.AbstractEventLoop, info: AddressInfo) -> socket.socket:
    """A TCP socket connected to one address of getaddrinfo's; closed if that fails or is
    cancelled."""
    family, kind, proto, _name, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_socket(target: Target) -> socket.socket:
    """A TCP socket connected to the first address of ``target`` that accepts. Addresses are
    tried here rather than by asyncio, whose error when several fail (Python 3.11) is one
    OSError quoting the addresses, with no errno to tell a refusal. The next address is tried
    when the previous one failed or has not connected within ``CONNECT_STAGGER_S`` (happy
    eyeballs, as httpx did through anyio): a black-holed address (IPv6 without a route, say)
    cannot spend the whole deadline. Every socket but the one returned is closed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ProbeFailed("name resolution failed") from None
    waiting: list[AddressInfo] = list(infos)
    started: list[asyncio.Task[socket.socket]] = []
    pending: set[asyncio.Task[socket.socket]] = set()
    winner: asyncio.Task[socket.socket] | None = None
    first_error: OSError | None = None
    unexpected: BaseException | None = None
    try:
        while (waiting or pending) and winner is None and unexpected is None:
            if waiting:
                started.append(asyncio.create_task(connect_address(loop, waiting.pop(0))))
                pending.add(started[-1])
            done, pending = await asyncio.wait(
                pending,
                timeout=CONNECT_STAGGER_S if waiting else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in (t for t in started if t in done):  # in the order tried
                exc = task.exception()
                if exc is None:
                    winner = winner or task
                elif isinstance(exc, OSError):
                    first_error = first_error or exc
                else:
                    unexpected = unexpected or exc
        if winner is not None:
            return winner.result()
        if unexpected is not None:
            raise unexpected
    finally:
        for task in started:
            if task is winner:
                continue
            if not task.done():
                task.cancel()  # its socket is closed when the cancellation lands
            elif not task.cancelled() and task.exception() is None:
                task.result().close()  # connected too, but later than the winner
        if cancelled := [t for t in started if not t.done()]:
            try:
                await asyncio.wait(cancelled)
            except BaseException:  # cancelled meanwhile: the winner is returned to no one
                if winner is not None:
                    winner.result().close()
                raise
    raise ProbeFailed(describe_connect_error(first_error))

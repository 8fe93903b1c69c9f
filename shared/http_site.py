"""Serving a request handler over HTTP/1.1 on a TCP port so that no client can starve the
daemon: the fleet's one HTTP server stack (``/metrics``, ``/healthz``, ``/health``), asyncio
and the standard library only (``shared.http_wire`` parses and encodes).

``GuardedSite`` owns the listening sockets and accepts itself (asyncio's accept loop retries an
EMFILE once per connection in the backlog and logs every try). A request head is at most
``http_wire.MAX_HEAD_BYTES``; a declared body over ``MAX_BODY_BYTES``, a malformed or ambiguous
head gets an error status and a close; one request per connection is handled at a time, and a
client that does not read its answers gets no further answer until it does. A client that has
not sent a whole request (head and declared body) ``header_timeout_s`` after connecting (or
after it started its next request) is closed, and so is a keep-alive connection idle for
``idle_timeout_s``. All servers of the process together hold at most a quarter of the soft
open-files limit (each an equal share, and at most ``max_connections``), so the files the
daemon must write (heartbeat, state, SQLite) always find a descriptor. At its cap a server
closes its own oldest connection still waiting for a request (or idle) to make room, so a flood
on one port never evicts clients of another; when every connection is busy in a handler,
accepting pauses and new clients wait in the kernel's backlog. An accept error (EMFILE, ENFILE,
...) pauses accepting for a second. Abnormal closes and accept errors are logged at most once a
minute per server, with counts. It must never busy-loop, block the loop, or log what a client
sent.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

from shared.http_wire import (
    HEAD_END,
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    HeadError,
    Request,
    Response,
    parse_head,
    text_response,
)
from shared.sections import FleetSection

__all__ = [
    "ConnectionBudget",
    "GuardedSite",
    "Handler",
    "HttpLimits",
    "LogThrottle",
    "process_connection_limit",
]

# Accepts per readiness event. Small on purpose: a new client needs a few loop iterations to
# get its request dispatched, and a flood must not push it out (as the oldest waiting) within
# them: ACCEPT_BATCH x those iterations stays below MIN_SITE_CONNECTIONS.
ACCEPT_BATCH = 2
ACCEPT_RETRY_S = 1.0  # pause after an accept error, or while every connection is busy
LOG_INTERVAL_S = 60.0  # at most one line per kind of trouble per server per interval
MIN_SITE_CONNECTIONS = 16
BACKLOG = 128
SHUTDOWN_TIMEOUT_S = 5.0  # a close waits this long for in-flight handlers


@dataclass(frozen=True)
class HttpLimits:
    """What one server tolerates from its clients (``[fleet] http_*``)."""

    header_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_connections: int = 64

    @classmethod
    def of(cls, fleet: FleetSection) -> HttpLimits:
        return cls(
            header_timeout_s=fleet.http_header_timeout_s,
            idle_timeout_s=fleet.http_idle_timeout_s,
            max_connections=fleet.http_max_connections,
        )


def process_connection_limit(soft_nofile: int) -> int:
    """Connections all guarded servers of a process may hold together: a quarter of the soft
    open-files limit; the other three quarters stay free for files, SQLite and the service
    manager's sockets. An unlimited soft limit leaves only the per-server caps."""
    if soft_nofile == resource.RLIM_INFINITY or soft_nofile < 0:
        return sys.maxsize
    return soft_nofile // 4


class LogThrottle:
    """Counts events by kind and says when to log them: the first at once, then at most one
    line per ``interval_s`` carrying the counts since the previous line."""

    def __init__(
        self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._pending: dict[str, int] = {}
        self._last: float | None = None

    def add(self, kind: str, n: int = 1) -> dict[str, int]:
        """Count ``n`` events of ``kind``; returns the counts to log now ({}: stay quiet)."""
        self._pending[kind] = self._pending.get(kind, 0) + n
        return self.take()

    def take(self) -> dict[str, int]:
        """The pending counts if a line may be logged now (and forget them), else {}."""
        now = self.clock()
        if not self._pending or (self._last is not None and now - self._last < self.interval_s):
            return {}
        counts, self._pending, self._last = self._pending, {}, now
        return counts

    def drain(self) -> dict[str, int]:
        """The pending counts regardless of the interval (a closing server's last line)."""
        counts, self._pending = self._pending, {}
        return counts

    def due_in(self) -> float | None:
        """Seconds until the pending counts may be logged; None when nothing is pending."""
        if not self._pending:
            return None
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval_s - self.clock())


class _State(Enum):
    WAITING = "waiting"  # for a whole request head (and its body, if it declared one)
    BUSY = "busy"  # a handler is running
    IDLE = "idle"  # between requests (keep-alive)


class _Connection(asyncio.Protocol):
    """One accepted client: reads one request at a time (``shared.http_wire``), runs the
    site's handler on it, writes the answer, and closes the client when it overstays its
    state's timeout or sends what we refuse."""

    def __init__(self, site: GuardedSite) -> None:
        self.site = site
        self.transport: asyncio.Transport | None = None
        self.state = _State.WAITING
        self.closed = False
        self.head_seen = False  # the whole request head has arrived (not yet answered)
        self.task: asyncio.Task[None] | None = None
        self._buf = bytearray()
        self._request: Request | None = None
        self._discard = 0  # body bytes still to read and drop
        self._paused = False  # reading paused: enough of the next requests is buffered
        self._write_paused = False  # the transport's write buffer is over its high-water mark
        self._eof = False
        self._timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.closed:  # evicted between accept and now
            self.transport.abort()
            return
        self._arm(self.site.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._buf += data
        if self.state is _State.BUSY or (self.state is _State.IDLE and self._write_paused):
            # Pipelined: read on once the answer is out (and the client reads its answers).
            if len(self._buf) > MAX_HEAD_BYTES:
                self._pause_reading()
            return
        if self.state is _State.IDLE:  # the next request starts: its head has a deadline too
            self._next_request()
        self._advance()

    def pause_writing(self) -> None:
        """The client does not read its answers: answer no further request until it does
        (an idle connection that stays so is closed at the idle timeout)."""
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.state is _State.IDLE and not self.closed:
            self._read_on()

    def eof_received(self) -> bool | None:
        self._eof = True
        return self.state is _State.BUSY  # keep the transport to write the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.closed = True
        self.site.forget(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # requests ----------------------------------------------------------------------------------
    def _next_request(self) -> None:
        self.state, self.head_seen, self._request = _State.WAITING, False, None
        self._arm(self.site.limits.header_timeout_s)

    def _advance(self) -> None:
        """Consume what the buffer holds of the current request; dispatch it when complete."""
        if self._request is None:
            while self._buf.startswith(b"\r\n"):  # empty lines before a request line
                del self._buf[:2]
            end = self._buf.find(HEAD_END)
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    self._refuse(431)
                return
            head = bytes(self._buf[:end])
            del self._buf[: end + len(HEAD_END)]
            self.head_seen = True
            try:
                request = parse_head(head)
            except HeadError as exc:
                self._refuse(exc.status)
                return
            if request.body_length > MAX_BODY_BYTES:
                self._refuse(413)
                return
            self._request, self._discard = request, request.body_length
        if self._discard:
            dropped = min(self._discard, len(self._buf))
            del self._buf[:dropped]
            self._discard -= dropped
            if self._discard:
                return
        self.state = _State.BUSY
        self._disarm()
        self.task = asyncio.get_running_loop().create_task(self._serve(self._request))

    async def _serve(self, request: Request) -> None:
        try:
            response = await self.site.handler(request)
        except Exception as exc:  # a handler bug answers 500, never kills the server
            self.site.log.warning(
                "http handler failed", server=self.site.name, error=type(exc).__name__
            )
            response = text_response(500)
        if self.closed or self.transport is None:
            return
        keep = request.keep_alive and not self._eof and not self.site.closing
        self.transport.write(response.encode(keep_alive=keep, head_only=request.method == "HEAD"))
        if not keep:
            self._close_after_write()
            return
        self.state, self.head_seen, self._request = _State.IDLE, False, None
        self._arm(self.site.limits.idle_timeout_s)
        if not self._write_paused:
            self._read_on()

    def _read_on(self) -> None:
        """Between requests, with the client reading: take the next one."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if self._buf:  # a pipelined request is already here
            self._next_request()
            self._advance()

    def _pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _refuse(self, status: int) -> None:
        """Answer ``status`` to a request we will not read on, and close."""
        if self.transport is not None and not self.closed:
            self.transport.write(text_response(status).encode(keep_alive=False))
        self._close_after_write()

    def _close_after_write(self) -> None:
        """Close once the answer is flushed; a client that never reads it is dropped after
        the idle timeout."""
        if self.closed or self.transport is None:
            return
        self.closed = True
        self._disarm()
        self.site.forget(self)
        self.transport.close()
        transport = self.transport
        asyncio.get_running_loop().call_later(self.site.limits.idle_timeout_s, transport.abort)

    def close_now(self, reason: str | None) -> None:
        """Drop the client at once (no lingering on unsent data); ``reason`` is counted."""
        if self.closed:
            return
        self.closed = True
        self._disarm()
        self.site.forget(self, reason)
        if self.transport is not None:
            self.transport.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # timers ------------------------------------------------------------------------------------
    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self.close_now("header_timeout" if self.state is _State.WAITING else "idle_timeout")


class ConnectionBudget:
    """The process's connection limit (``process_connection_limit`` of the soft open-files
    limit, read at each server start) and the servers sharing it equally."""

    def __init__(self, limit: int | None = None) -> None:
        self._fixed = limit
        self.limit = limit if limit is not None else sys.maxsize
        self.sites: set[GuardedSite] = set()

    def refresh_limit(self) -> None:
        if self._fixed is None:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            self.limit = process_connection_limit(soft)

    def share(self) -> int:
        """Connections one server may hold (never below MIN_SITE_CONNECTIONS)."""
        return max(MIN_SITE_CONNECTIONS, self.limit // max(1, len(self.sites)))


_PROCESS_BUDGET = ConnectionBudget()


Handler = Callable[[Request], Awaitable[Response]]


class GuardedSite:
    """Serves ``handler`` on ``bind``:``port`` within ``limits``; ``name`` labels its log
    lines. The handler gets every well-formed request (any method, any path) and answers it;
    HEAD answers are sent without their body."""

    def __init__(
        self,
        handler: Handler,
        bind: str,
        port: int,
        limits: HttpLimits,
        *,
        log: Any,
        name: str,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self.handler = handler
        self.bind = bind
        self.limits = limits
        self.log = log
        self.name = name
        self.port: int | None = None
        self._port = port
        self._budget = budget if budget is not None else _PROCESS_BUDGET
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socks: list[socket.socket] = []
        self._conns: dict[_Connection, None] = {}  # oldest first
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = False
        self._waiting_for_room = False
        self._retry: asyncio.TimerHandle | None = None
        self.closing = False
        self._throttles = {"accept": LogThrottle(), "closed": LogThrottle()}
        self._flush: dict[str, asyncio.TimerHandle] = {}

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _cap(self) -> int:
        return min(self.limits.max_connections, self._budget.share())

    # lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and serve; raises OSError when the address is unusable. Call once."""
        loop = asyncio.get_running_loop()
        self._budget.refresh_limit()
        socks = await _listen(loop, self.bind, self._port)
        self._loop, self._socks = loop, socks
        self.port = int(socks[0].getsockname()[1])
        self._budget.sites.add(self)
        self._resume()

    async def close(self) -> None:
        """Stop accepting, close every connection (in-flight handlers get a few seconds)."""
        if self.closing:
            return
        self.closing = True
        self._pause()
        for handle in (self._retry, *self._flush.values()):
            if handle is not None:
                handle.cancel()
        self._retry = None
        self._flush.clear()
        for kind, throttle in self._throttles.items():
            self._emit(kind, throttle.drain())  # what the last window counted
        self._budget.sites.discard(self)
        for sock in self._socks:
            sock.close()
        self._socks = []
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        handlers = {c.task for c in self._conns if c.task is not None and not c.task.done()}
        if handlers:
            await asyncio.wait(handlers, timeout=SHUTDOWN_TIMEOUT_S)
        for conn in list(self._conns):
            conn.close_now(None)

    # connections -------------------------------------------------------------------------------
    def forget(self, conn: _Connection, reason: str | None = None) -> None:
        """``conn`` no longer counts (closed, or being closed for ``reason``)."""
        if conn not in self._conns:
            return
        del self._conns[conn]
        if reason in ("header_timeout", "evicted"):  # idle timeouts are normal keep-alive ends
            self._note("closed", reason)
        if self._waiting_for_room:
            self._resume()

    # accepting ---------------------------------------------------------------------------------
    def _victim(self) -> _Connection | None:
        """The connection to close for room: the oldest still waiting for its request head,
        else the oldest idle one; None when all are busy (or have their request in)."""
        idle: _Connection | None = None
        for conn in self._conns:
            if conn.state is _State.WAITING and not conn.head_seen:
                return conn
            if conn.state is _State.IDLE and idle is None:
                idle = conn
        return idle

    def _room_possible(self) -> bool:
        """One more connection fits, or fits once a waiting/idle one is closed."""
        return len(self._conns) < self._cap() or self._victim() is not None

    def _make_room(self) -> bool:
        """Close waiting/idle connections until one more fits; False when all are busy."""
        while len(self._conns) >= self._cap():
            victim = self._victim()
            if victim is None:
                return False
            victim.close_now("evicted")
        return True

    def _on_readable(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._room_possible():  # every connection is busy: leave the rest queued
                self._pause(retry_s=ACCEPT_RETRY_S, until_room=True)
                return
            try:
                client, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: back off, never spin
                self._pause(retry_s=ACCEPT_RETRY_S)
                self._note("accept", errno.errorcode.get(exc.errno or 0, str(exc.errno)))
                return
            if not self._make_room():  # cannot happen after _room_possible; never exceed
                client.close()
                continue
            self._adopt(client)

    def _adopt(self, client: socket.socket) -> None:
        assert self._loop is not None
        client.setblocking(False)
        conn = _Connection(self)
        self._conns[conn] = None
        task = self._loop.create_task(self._connect(client, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, client: socket.socket, conn: _Connection) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(lambda: conn, client)
        except BaseException as exc:
            conn.close_now(None)
            client.close()
            if not isinstance(exc, OSError):
                raise

    def _pause(self, retry_s: float | None = None, *, until_room: bool = False) -> None:
        if self._accepting and self._loop is not None:
            for sock in self._socks:
                self._loop.remove_reader(sock.fileno())
            self._accepting = False
        self._waiting_for_room = until_room
        if retry_s is not None and self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(retry_s, self._resume)

    def _resume(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._waiting_for_room = False
        if self.closing or self._accepting or self._loop is None:
            return
        for sock in self._socks:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        self._accepting = True

    # logging -----------------------------------------------------------------------------------
    def _note(self, kind: str, what: str) -> None:
        self._emit(kind, self._throttles[kind].add(what))

    def _emit(self, kind: str, counts: dict[str, int]) -> None:
        if counts:
            if kind == "accept":
                self.log.warning(
                    "http accept failing; retrying every second",
                    server=self.name,
                    port=self.port,
                    errors=counts,
                )
            else:
                self.log.warning(
                    "http clients dropped (request head too slow, or room made at the cap)",
                    server=self.name,
                    port=self.port,
                    closed=counts,
                    cap=self._cap(),
                )
        due = self._throttles[kind].due_in()
        if due is not None and kind not in self._flush and self._loop and not self.closing:
            self._flush[kind] = self._loop.call_later(due, self._flush_due, kind)

    def _flush_due(self, kind: str) -> None:
        self._flush.pop(kind, None)
        if not self.closing:
            self._emit(kind, self._throttles[kind].take())


async def _listen(loop: asyncio.AbstractEventLoop, bind: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``bind`` resolves to (non-blocking)."""
    infos = await loop.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(errno.EADDRNOTAVAIL, f"{bind!r} resolves to no address")
    return socks

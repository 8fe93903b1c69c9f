"""A small real HTTP server on 127.0.0.1 for tests, with fault injection.

It runs a ``ThreadingHTTPServer`` in a background thread on a free port picked at start, so an
in-process async client and a subprocess can both talk to it. Faults queued with ``inject``
(or the helpers ``slow``, ``fail``, ``garbage``, ``reset``, ``close``, ``hang``, ``trickle``)
apply to the next matching requests in order; everything else goes to
``handle(method, path, headers, body)``, which subclasses (Slack, Ollama, an LLM endpoint,
Paperless, a ping receiver) override or which is passed as ``handler=``. ``trickle_s`` set on
the server sends every answer one byte per ``trickle_s`` seconds (a peer that never trips a
per-read timeout). Every request is recorded. It must never talk to anything but
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Body",
    "FakeHTTPServer",
    "Fault",
    "Handler",
    "RecordedRequest",
    "Response",
]

# A handler's body: bytes/str as is, anything else is sent as JSON.
Body = bytes | str | dict[str, Any] | list[Any] | None
Response = tuple[int, Mapping[str, str], Body]
Handler = Callable[[str, str, Mapping[str, str], bytes], Response]
FaultAction = Literal["respond", "reset", "close", "hang"]


@dataclass(frozen=True)
class Fault:
    """What to do to one request instead of (or before) handling it.

    ``delay_s`` is waited first (cut short when the server stops). Then ``action``:
    ``respond`` answers ``status``/``headers``/``body`` if ``status`` is set, else hands the
    request to ``handle`` (so ``Fault(delay_s=2)`` is just "slow"), one byte per ``trickle_s``
    seconds when that is set (status line and headers too); ``reset`` closes the
    connection with a TCP RST; ``close`` closes it cleanly without a response; ``hang`` keeps it
    open, unanswered, until the server stops. ``path`` limits the fault to request paths
    starting with it.
    """

    action: FaultAction = "respond"
    delay_s: float = 0.0
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Body = None
    path: str | None = None
    name: str = ""
    trickle_s: float = 0.0

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.action != "respond":
            return self.action
        if self.trickle_s:
            return "trickle"
        if self.status is not None:
            return f"status:{self.status}"
        return "slow"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # parsed JSON body, or None
    form: dict[str, str]  # parsed urlencoded body (last value per key), or {}
    fault: str | None  # the injected fault's label, None if handled normally
    at: float  # time.monotonic() on arrival


def parse_body(headers: Mapping[str, str], body: bytes) -> tuple[Any, dict[str, str]]:
    """(json, form) for a request body, by Content-Type; unparseable bodies give (None, {})."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    parsed_json: Any = None
    form: dict[str, str] = {}
    if ctype == "application/json" or (not ctype and body[:1] in (b"{", b"[")):
        try:
            parsed_json = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed_json = None
    elif ctype == "application/x-www-form-urlencoded":
        try:
            qs = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            qs = {}
        form = {k: v[-1] for k, v in qs.items()}
    return parsed_json, form


def encode_body(body: Body, headers: dict[str, str]) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return body.encode("utf-8")
    headers.setdefault("Content-Type", "application/json; charset=utf-8")
    return json.dumps(body).encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog of 5 resets a burst of concurrent connects (an
    # LLM client with 32 requests in flight); real servers queue them.
    request_queue_size = 128
    fake: FakeHTTPServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # the client went away; that is the client's business
        self.fake._record_error(exc)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY the client's delayed
    # ACK adds ~40 ms to every keep-alive request, which would skew every benchmark.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read fake.requests instead

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        fake = self.server.fake
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        split = urlsplit(self.path)
        fault = fake._next_fault(split.path)
        fake._record(self.command, split, headers, body, fault)
        trickle_s = fault.trickle_s if fault is not None else fake.trickle_s
        if fault is not None:
            if fault.delay_s > 0 and fake._stopping.wait(fault.delay_s):
                self._drop(rst=False)
                return
            if fault.action == "reset":
                self._drop(rst=True)
                return
            if fault.action == "close":
                self._drop(rst=False)
                return
            if fault.action == "hang":
                fake._stopping.wait()
                self._drop(rst=False)
                return
            if fault.status is not None:
                self._respond(fault.status, fault.headers, fault.body, trickle_s)
                return
        try:
            path = self.path if fake.wants_query else split.path
            status, resp_headers, resp_body = fake.handle(self.command, path, headers, body)
        except Exception as exc:  # a bug in a fake must show up in the test, not hang it
            fake._record_error(exc)
            self._respond(500, {}, {"error": f"fake handler raised {type(exc).__name__}"})
            return
        self._respond(status, resp_headers, resp_body, trickle_s)

    def _respond(
        self, status: int, headers: Mapping[str, str], body: Body, trickle_s: float = 0.0
    ) -> None:
        out_headers = dict(headers)
        data = encode_body(body, out_headers)
        if trickle_s > 0:
            self._trickle(status, out_headers, data, trickle_s)
            return
        self.send_response(status)
        for name, value in out_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _trickle(self, status: int, headers: dict[str, str], data: bytes, every_s: float) -> None:
        """The whole answer, status line first, one byte every ``every_s`` seconds; stops when
        the client goes away or the server stops."""
        self.close_connection = True
        reason = self.responses.get(status, ("",))[0]
        head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
        head.append(f"Content-Length: {len(data)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        stopping = self.server.fake._stopping
        for i in range(len(raw)):
            if stopping.wait(every_s):
                break
            try:
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
            except OSError:
                break

    def _drop(self, *, rst: bool) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            if rst:
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve


class FakeHTTPServer:
    """A fault-injecting HTTP server in a background thread; use as a context manager.

    ``base_url`` is ``http://127.0.0.1:PORT``. Override ``handle`` (or pass ``handler=``) to
    answer requests; the default answers 404. ``stop()`` then ``start()`` again reuses the same
    port, so a client configured with ``base_url`` sees "connection refused" in between.
    """

    def __init__(self, handler: Handler | None = None, *, host: str = "127.0.0.1") -> None:
        self._handler = handler
        self._host = host
        self._port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.trickle_s = 0.0  # > 0: every answer one byte per trickle_s seconds
        self.wants_query = False  # True: ``handle`` gets the path with its query string

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping = threading.Event()
        server = _Server((self._host, self._port), _RequestHandler)
        server.fake = self
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-http-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and release hanging connections; the port is kept for ``start``."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        # Kept-alive connections would otherwise still be served after the stop.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # request handling --------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one request: (status, headers, body). ``headers`` has lower-case names."""
        if self._handler is not None:
            return self._handler(method, path, headers, body)
        return 404, {}, {"error": "not found", "path": path}

    # faults ------------------------------------------------------------------------------
    def inject(self, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (matching ``fault.path``), in order."""
        with self._lock:
            self._faults.extend([fault] * times)

    def slow(self, delay_s: float, times: int = 1, path: str | None = None) -> None:
        self.inject(Fault(delay_s=delay_s, path=path), times)

    def fail(
        self,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        self.inject(Fault(status=status, headers=dict(headers or {}), body=body, path=path), times)

    def garbage(
        self,
        times: int = 1,
        *,
        status: int = 200,
        content_type: str = "text/html",
        body: bytes = b"<html><body>502 Bad Gateway</body></html>",
        path: str | None = None,
    ) -> None:
        """A non-JSON (or truncated-JSON, with content_type=application/json) answer."""
        fault = Fault(
            status=status,
            headers={"Content-Type": content_type},
            body=body,
            path=path,
            name=f"garbage:{content_type}",
        )
        self.inject(fault, times)

    def reset(self, times: int = 1, path: str | None = None) -> None:
        self.inject(Fault(action="reset", path=path), times)

    def close(self, times: int = 1, path: str | None = None) -> None:
        self.inject(Fault(action="close", path=path), times)

    def hang(self, times: int = 1, path: str | None = None) -> None:
        self.inject(Fault(action="hang", path=path), times)

    def trickle(self, every_s: float = 1.0, times: int = 1, path: str | None = None) -> None:
        """Answer normally, but one byte every ``every_s`` seconds."""
        self.inject(Fault(trickle_s=every_s, path=path), times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path is None or path.startswith(fault.path):
                    return self._faults.pop(i)
        return None

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # recording ---------------------------------------------------------------------------
    def _record(
        self,
        method: str,
        split: Any,
        headers: dict[str, str],
        body: bytes,
        fault: Fault | None,
    ) -> None:
        parsed_json, form = parse_body(headers, body)
        req = RecordedRequest(
            method=method,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=body,
            json=parsed_json,
            form=form,
            fault=fault.label if fault is not None else None,
            at=time.monotonic(),
        )
        with self._changed:
            self._requests.append(req)
            self._changed.notify_all()

    def _record_error(self, exc: BaseException | None) -> None:
        if exc is None:
            return
        with self._changed:
            self._errors.append(exc)
            self._changed.notify_all()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised inside the fake itself (a broken fake, not a client error)."""
        with self._lock:
            return list(self._errors)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests have arrived (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

"""A raw TCP server on loopback for HTTP client tests: it reads each request's head and answers
scripted bytes verbatim, what ``FakeHTTPServer`` cannot send (a chunked body, a body ended by
close, an oversized or endless head, garbage instead of HTTP), over TLS when given a context.

Each connection gets the same answer: ``answer`` parts written in order (one byte per
``trickle_s`` seconds when set), then ``then``: ``close`` closes the connection, ``hang`` keeps
it open until the client closes it or the server stops. It records every request head and
every connection the client closed (or reset) while the server still held it. It binds
127.0.0.1 (or ``::1``) only and never calls out.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Sequence
from typing import Literal, Self

__all__ = ["RawHTTPServer"]

MAX_HEAD = 64 * 1024


class RawHTTPServer:
    def __init__(
        self,
        answer: Sequence[bytes],
        *,
        then: Literal["close", "hang"] = "close",
        trickle_s: float = 0.0,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "::1"):
            raise ValueError("a fake binds loopback only")
        self.answer = list(answer)
        self.then = then
        self.trickle_s = trickle_s
        self.tls = tls
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.base_url = (
            f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        )
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._heads: list[bytes] = []
        self._client_closes = 0
        self._tls_errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="raw-http", daemon=True)

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    # what was seen -----------------------------------------------------------------------
    @property
    def heads(self) -> list[bytes]:
        with self._changed:
            return list(self._heads)

    @property
    def tls_errors(self) -> list[str]:
        with self._changed:
            return list(self._tls_errors)

    def request_headers(self, index: int = 0) -> tuple[str, dict[str, str]]:
        """The request line and the headers (lower-case names) of request ``index``."""
        line, *fields = self.heads[index].decode("latin-1").split("\r\n")
        headers = {}
        for field in fields:
            if field:
                name, _, value = field.partition(":")
                headers[name.strip().lower()] = value.strip()
        return line, headers

    def wait_for_heads(self, count: int, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._heads) >= count, timeout)

    def wait_for_client_closes(self, count: int, timeout: float = 10.0) -> bool:
        """Block until the client closed ``count`` connections the server held open."""
        with self._changed:
            return self._changed.wait_for(lambda: self._client_closes >= count, timeout)

    # serving -----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        try:
            if self.tls is not None:
                conn.settimeout(5)
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    with self._changed:
                        self._tls_errors.append(str(exc))
                        self._changed.notify_all()
                    return
                conn.settimeout(0.05)
            head = self._read_head(conn)
            if head is None:
                return
            with self._changed:
                self._heads.append(head)
                self._changed.notify_all()
            if not self._write_answer(conn):
                return
            if self.then == "hang" and self._wait_for_client_close(conn):
                with self._changed:
                    self._client_closes += 1
                    self._changed.notify_all()
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def _read_head(self, conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < MAX_HEAD:
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                if self._stopping.is_set():
                    return None
                continue
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return data.split(b"\r\n\r\n", 1)[0]

    def _write_answer(self, conn: socket.socket) -> bool:
        """Write the answer; False if the client went away or the server stopped."""
        for part in self.answer:
            pieces = [part[i : i + 1] for i in range(len(part))] if self.trickle_s > 0 else [part]
            for piece in pieces:
                if self.trickle_s > 0 and self._stopping.wait(self.trickle_s):
                    return False
                try:
                    conn.settimeout(5)
                    conn.sendall(piece)
                except OSError:
                    return False
                finally:
                    with contextlib.suppress(OSError):
                        conn.settimeout(0.05)
        return True

    def _wait_for_client_close(self, conn: socket.socket) -> bool:
        """Read (and drop) until the client closes or resets; False if the server stopped."""
        while not self._stopping.is_set():
            try:
                if not conn.recv(4096):
                    return True
            except TimeoutError:
                continue
            except OSError:  # reset by the client
                return True
        return False

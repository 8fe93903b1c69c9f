"""A slowloris client for the system tests (no tests here): many connections to one port on
127.0.0.1, each sending the start of a request line and never finishing it.

Every loop in it is bounded (by a count or a deadline); it never sleeps to wait for the
server, it polls the sockets it holds.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time

PARTIAL_REQUEST = b"GET /health HTT"  # a request line that never ends


class Slowloris:
    """``count`` half-sent requests to ``port``, kept topped up on demand."""

    def __init__(self, port: int, count: int = 300) -> None:
        self.port = port
        self.count = count
        self.open: list[socket.socket] = []  # connected, partial request sent, no EOF seen
        self.closed_by_server = 0  # sockets that saw EOF or a reset from the server
        self.opened = 0  # connections ever established

    def top_up(self, connect_timeout: float = 5.0) -> int:
        """Open connections until ``count`` are held (replacing those the server closed);
        returns how many are held. Connections the server does not complete within
        ``connect_timeout`` are given up (a server that stopped accepting)."""
        self.poll()
        want = self.count - len(self.open)
        pending: list[socket.socket] = []
        for _ in range(max(0, want)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", self.port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                continue
            pending.append(sock)
        deadline = time.monotonic() + connect_timeout
        with selectors.DefaultSelector() as sel:
            for sock in pending:
                sel.register(sock, selectors.EVENT_WRITE)
            left = len(pending)
            while left and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.2):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    sel.unregister(sock)
                    left -= 1
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        sock.close()
                        continue
                    try:
                        sock.send(PARTIAL_REQUEST)
                    except OSError:
                        sock.close()
                        continue
                    self.open.append(sock)
                    self.opened += 1
            for key in list(sel.get_map().values()):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sock.close()
        return len(self.open)

    def poll(self) -> int:
        """Drop the sockets the server has closed (EOF or reset); returns how many are held."""
        still: list[socket.socket] = []
        for sock in self.open:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                still.append(sock)
                continue
            except OSError:  # reset by the server
                data = b""
            if data:  # an error answer before the close: keep reading until the EOF
                still.append(sock)
                continue
            sock.close()
            self.closed_by_server += 1
        self.open = still
        return len(self.open)

    def wait_all_closed(self, timeout: float) -> bool:
        """True once the server has closed every held connection (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            while self.poll() and time.monotonic() < deadline:
                for sock in self.open:
                    sel.register(sock, selectors.EVENT_READ)
                sel.select(timeout=0.5)
                for sock in self.open:
                    sel.unregister(sock)
        return not self.open

    def close(self) -> None:
        for sock in self.open:
            sock.close()
        self.open = []

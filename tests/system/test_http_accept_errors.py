"""A metrics server whose process has run out of file descriptors (EMFILE on accept) backs off
instead of spinning, logs the failure at most once a minute with a count, and serves the
clients that waited once descriptors are free again.

The server runs in a child process (a small script driving the real ``MetricsServer``) that
fills its own descriptor table on command, so this test's process keeps its limits.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytestmark = pytest.mark.system

SERVER_SCRIPT = r"""
import asyncio, json, os, resource, sys

from shared.logging import configure_logging
from shared.metrics import DaemonMetrics
from shared.metrics_server import HealthReport, MetricsServer


def say(**fields):
    print(json.dumps({"control": fields}), flush=True)


async def main():
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    configure_logging(host="testhost", daemon="emfile-probe")
    metrics = DaemonMetrics("emfile-probe", "0")
    server = MetricsServer(metrics, lambda: HealthReport(True), "127.0.0.1", 0)
    await server.start()
    say(port=server.port)
    loop = asyncio.get_running_loop()
    hogs = []
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "exhaust":
            try:
                while True:
                    hogs.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
        elif command == "release":
            for fd in hogs:
                os.close(fd)
            hogs.clear()
        else:
            break
        say(done=command)
    await server.close()
    say(done="close")


asyncio.run(main())
"""


class ServerProcess:
    """The script above, its stdout read continuously (a flood must not block it)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.control: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and "control" in doc:
                self.control.put(doc["control"])
            else:
                self.lines.append(line.rstrip("\n"))

    def next_control(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            return self.control.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the server script: {self.lines[-5:]}") from None

    def command(self, text: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.next_control()

    def accept_lines(self) -> list[str]:
        return [line for line in list(self.lines) if "accept" in line.lower()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def send_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    return sock


def read_status(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def test_emfile_on_accept_is_logged_once_with_a_count_and_waiting_clients_are_served() -> None:
    server = ServerProcess()
    clients: list[socket.socket] = []
    try:
        port = int(server.next_control()["port"])
        assert server.command("exhaust") == {"done": "exhaust"}
        started = time.monotonic()
        clients = [send_request(port) for _ in range(5)]

        deadline = time.monotonic() + 30
        while not server.accept_lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.accept_lines(), f"EMFILE on accept was never logged: {server.lines[-5:]}"
        # Give a spinning accept loop the time to flood (a backing-off one retries ~3 times).
        time.sleep(3)
        flooded = len(server.accept_lines())

        assert server.command("release") == {"done": "release"}
        for client in clients:
            assert read_status(client) == "HTTP/1.1 200 OK"
        assert server.command("close") == {"done": "close"}
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
        server.stop()

    assert flooded == 1, server.accept_lines()[:3]
    accept_lines = server.accept_lines()
    assert len(accept_lines) <= 2, accept_lines[:3]  # the first, and the count flushed at close
    counts: dict[str, int] = {}
    for line in accept_lines:
        for name, n in json.loads(line)["errors"].items():
            counts[name] = counts.get(name, 0) + n
    assert set(counts) == {"EMFILE"}, counts
    # One failed accept per second at most (the retry delay): a spinning loop makes thousands.
    assert 1 <= counts["EMFILE"] <= elapsed + 2, (counts, elapsed)

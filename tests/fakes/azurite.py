"""Azurite (the Azure Blob emulator, npm package ``azurite``) as a real local blob endpoint for
litestream's ``abs`` replicas: on 127.0.0.1, a free port, a tmp location, telemetry disabled.

``CountingProxy`` forwards a port to it and counts the requests passing (LIST, PUT, GET), so
each client (the primary, a standby) is counted apart: the request lines Azurite's debug log
shows. ``stop()`` then ``start()`` reuses port and location, so a client sees the endpoint go
down and come back with its data. The container is created with a SharedKey-signed request
(the public development account), so no Azure SDK is needed.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import hmac
import http.client
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.litestream_primary import AZURITE_ACCOUNT, AZURITE_KEY

__all__ = ["Azurite", "CountingProxy", "azurite_binary"]

API_VERSION = "2021-08-06"


def azurite_binary() -> str:
    """The azurite-blob command; skip (fail under CI) when it is not installed."""
    found = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    if found:
        return found
    message = "azurite-blob not installed (npm install -g azurite@3.35.0)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Azurite:
    def __init__(self, location: Path) -> None:
        self.binary = azurite_binary()
        self.location = location
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        location.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def start(self, timeout_s: float = 60.0) -> Azurite:
        if self.proc is not None:
            return self
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                str(self.location),
                "--disableTelemetry",
                "--silent",
                "--skipApiVersionCheck",
            ],
            stdout=(self.location / "azurite.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("azurite did not start listening")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            # A graceful exit saves Azurite's blob metadata; a kill could lose the last
            # seconds of it, so give a loaded machine time (the bound is only for a hang).
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_container(self, name: str) -> int:
        """PUT the container (201 created, 409 already there)."""
        date = email.utils.formatdate(usegmt=True)
        to_sign = "\n".join(
            [
                "PUT",
                *[""] * 11,
                f"x-ms-date:{date}\nx-ms-version:{API_VERSION}",
                f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container",
            ]
        )
        signature = base64.b64encode(
            hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(
                "PUT",
                f"/{AZURITE_ACCOUNT}/{name}?restype=container",
                body=b"",
                headers={
                    "x-ms-date": date,
                    "x-ms-version": API_VERSION,
                    "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}",
                },
            )
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if response.status not in (201, 409):
            raise RuntimeError(f"create container {name}: HTTP {response.status}")
        return response.status


# An HTTP/1.1 request line (the client side of the stream, split at CRLF).
REQUEST = re.compile(rb"(GET|PUT|HEAD|DELETE|POST) (\S+) HTTP/1\.[01]\Z")


class CountingProxy:
    """Forwards 127.0.0.1:<port> to Azurite and counts the requests passing: LIST (a GET with
    ``comp=list``), PUT, GET (reads), other."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self, account: str) -> str:
        return f"http://127.0.0.1:{self.port}/{account}"

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _count(self, lines: list[bytes]) -> None:
        with self._lock:
            for line in lines:
                m = REQUEST.search(line)  # a body may precede it on the line
                if m is None:
                    continue
                method, target = m.groups()
                if method == b"GET" and b"comp=list" in target:
                    self.counts["LIST"] += 1
                elif method in (b"PUT", b"GET"):
                    self.counts[method.decode()] += 1
                else:
                    self.counts["other"] += 1

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        pending = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    lines = (pending + data).split(b"\r\n")
                    pending = lines.pop()[-8192:]  # a request line is never that long
                    self._count(lines)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

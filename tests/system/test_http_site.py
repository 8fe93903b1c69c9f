"""The fleet's HTTP server (``shared.http_site`` serving ``MetricsServer``) over real sockets on
127.0.0.1: methods and paths, HEAD, keep-alive and pipelining, discarded request bodies, refused
heads (status, then a close), a failing handler, the read deadline; and that no daemon process
imports aiohttp. Slowloris floods and EMFILE are in test_http_starvation.py and
test_http_accept_errors.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from shared.http_site import GuardedSite, HttpLimits
from shared.http_wire import MAX_BODY_BYTES, MAX_HEAD_BYTES, Request, Response
from shared.metrics import DaemonMetrics
from shared.metrics_server import HealthReport, MetricsServer
from tests.recording_log import RecordingLog

pytestmark = pytest.mark.system

Answer = tuple[int, dict[str, str], bytes]


class Client:
    """One raw TCP connection: write bytes, read answers (bounded by ``timeout``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, *, head_only: bool = False, timeout: float = 10) -> Answer:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = 0 if head_only else int(headers["content-length"])
            body = await self.reader.readexactly(length)
            return status, headers, body

    async def closed_by_server(self, timeout: float = 10) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(65536) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    metrics = DaemonMetrics("probe", "0")
    metrics.cycles.labels("probe", "ok").inc()
    srv = MetricsServer(
        metrics,
        lambda: HealthReport(True, {"daemon": "probe"}),
        "127.0.0.1",
        0,
        limits=HttpLimits(header_timeout_s=1.0, idle_timeout_s=5.0, max_connections=16),
        log=RecordingLog(),
    )
    await srv.start()
    yield srv
    await srv.close()


def port_of(server: MetricsServer) -> int:
    assert server.port is not None
    return server.port


async def test_get_head_and_other_methods_and_paths(server: MetricsServer) -> None:
    client = await Client.connect(port_of(server))
    try:
        await client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await client.answer()
        assert status == 200 and headers["content-type"].startswith("text/plain; version=")
        assert b'fleet_cycles_total{daemon="probe",outcome="ok"} 1.0' in body
        assert headers["connection"] == "keep-alive"

        await client.send(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        status, head_headers, _ = await client.answer(head_only=True)
        assert status == 200 and head_headers["content-length"] == headers["content-length"]

        await client.send(b"GET /healthz HTTP/1.1\r\n\r\n")
        status, headers, body = await client.answer()
        assert status == 200 and json.loads(body) == {"ok": True, "daemon": "probe"}

        for method in (b"POST", b"PUT", b"DELETE"):
            await client.send(method + b" /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            status, headers, _ = await client.answer()
            assert status == 405 and headers["allow"] == "GET, HEAD", method
        for path in (b"/", b"/metrics/", b"/healthz/../metrics", b"/state/role"):
            await client.send(b"GET " + path + b" HTTP/1.1\r\n\r\n")
            assert (await client.answer())[0] == 404, path
    finally:
        client.close()


async def test_pipelined_requests_are_answered_in_order(server: MetricsServer) -> None:
    client = await Client.connect(port_of(server))
    try:
        await client.send(
            b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n"
            b"\r\nGET /metrics HTTP/1.1\r\n\r\n"  # an empty line before a request is skipped
        )
        statuses = [(await client.answer())[0] for _ in range(3)]
        assert statuses == [200, 404, 200]
    finally:
        client.close()


async def test_a_request_body_is_discarded_and_the_connection_stays_usable(
    server: MetricsServer,
) -> None:
    client = await Client.connect(port_of(server))
    try:
        body = b"GET /metrics HTTP/1.1\r\n\r\n" * 10  # must not be read as requests
        await client.send(b"POST /healthz HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body))
        await client.send(body)
        await client.send(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (await client.answer())[0] == 405
        status, _, answer = await client.answer()
        assert status == 200 and json.loads(answer)["ok"] is True
        await client.send(b"GET /healthz HTTP/1.1\r\n\r\n")  # nothing else was queued
        assert (await client.answer())[0] == 200
    finally:
        client.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), 413),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10), 431),
    ],
)
async def test_refused_heads_get_their_status_then_a_close(
    server: MetricsServer, request_bytes: bytes, status: int
) -> None:
    client = await Client.connect(port_of(server))
    try:
        await client.send(request_bytes)
        got, headers, _ = await client.answer()
        assert got == status and headers["connection"] == "close"
        assert await client.closed_by_server()
    finally:
        client.close()
    # The server serves the next client as before.
    other = await Client.connect(port_of(server))
    try:
        await other.send(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (await other.answer())[0] == 200
    finally:
        other.close()


async def test_http_1_0_and_connection_close_are_answered_then_closed(
    server: MetricsServer,
) -> None:
    for request in (
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    ):
        client = await Client.connect(port_of(server))
        try:
            await client.send(request)
            status, headers, _ = await client.answer()
            assert status == 200 and headers["connection"] == "close"
            assert await client.closed_by_server()
        finally:
            client.close()


async def test_a_body_that_never_arrives_is_cut_at_the_header_timeout(
    server: MetricsServer,
) -> None:
    client = await Client.connect(port_of(server))
    try:
        await client.send(b"POST /metrics HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc")
        assert await client.closed_by_server(timeout=15)
    finally:
        client.close()


async def test_a_client_that_never_reads_its_answers_gets_no_more_of_them() -> None:
    # 5000 pipelined requests for a 64 KiB answer, never read: the server stops answering
    # once the socket buffers and its own write buffer are full (it would otherwise queue
    # ~320 MB), then closes the connection at the idle timeout.
    calls = 0

    async def big(_request: Request) -> Response:
        nonlocal calls
        calls += 1
        return Response(200, b"x" * 65536)

    limits = HttpLimits(header_timeout_s=5.0, idle_timeout_s=1.0, max_connections=16)
    site = GuardedSite(big, "127.0.0.1", 0, limits, log=RecordingLog(), name="probe")
    await site.start()
    assert site.port is not None
    _reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    try:
        writer.write(b"GET /big HTTP/1.1\r\n\r\n" * 5000)  # buffered; never drained
        async with asyncio.timeout(30):
            while site.connections:
                await asyncio.sleep(0.05)
        assert 0 < calls < 1000, calls
    finally:
        writer.transport.abort()
        await site.close()


async def test_a_failing_handler_answers_500_and_the_server_keeps_serving() -> None:
    calls = 0

    def health() -> HealthReport:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return HealthReport(True)

    log = RecordingLog()
    srv = MetricsServer(DaemonMetrics("probe", "0"), health, "127.0.0.1", 0, log=log)
    await srv.start()
    client = await Client.connect(port_of(srv))  # type: ignore[arg-type]
    try:
        await client.send(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (await client.answer())[0] == 500
        await client.send(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (await client.answer())[0] == 200
    finally:
        client.close()
        await srv.close()
    [event] = log.events("http handler failed")
    assert event["error"] == "RuntimeError" and "boom" not in json.dumps(event)


def test_no_daemon_process_imports_aiohttp() -> None:
    code = (
        "import sys, fleet.cli, fleet.registry, shared.runner, shared.runtime\n"
        "import daemons.heartbeat.health, shared.notify.slack, shared.http\n"
        "for manifest in fleet.registry.manifests(): manifest.load_daemon()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"

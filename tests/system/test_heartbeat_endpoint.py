"""The host /health endpoint and the dead-man's-switch pings, with real processes: `fleet run
heartbeat` beside a real `fleet run claim-sweeper` that gets killed; only the two health paths
are served; 1,000 requests from 50 concurrent clients all answered while probes hang; a taken
port is retried, not fatal; promtool is clean; the ping secret never reaches the log."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FLEET_BIN, free_port, http_get, wait_until
from tests.fakes.peer import FakePeer
from tests.fakes.pings import FakePingReceiver
from tests.heartbeat_support import (
    HeartbeatProcess,
    metric_value,
    only_enabled,
    write_config,
)

pytestmark = pytest.mark.system

PING_UUID = "5b0c7f6e-1d2a-4c3b-9e8f-0a1b2c3d4e5f"


def start_sweeper(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    env = {
        **env,
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(free_port()),
        "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.3",
    }
    return subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def raw_request(port: int, method: str, path: str) -> int:
    """Send ``path`` exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_endpoint_degrades_naming_the_killed_daemon_and_pings_switch_to_fail(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    env = only_enabled(fleet_env, "heartbeat", "claim-sweeper")
    with FakePingReceiver() as pings:
        ping_url = pings.check_url(PING_UUID)
        config = write_config(
            tmp_path / "fleet.toml",
            heartbeat={"interval_s": 0.1, "health_cache_s": 0.1},
            pings=[{"name": "hc-anvil", "url": ping_url, "interval_s": 0.1, "retries": 0}],
        )
        sweeper = start_sweeper(env, tmp_path)
        hb = HeartbeatProcess(env, tmp_path, config).start()
        try:

            def healthy() -> bool:
                status, body = hb.health()
                return (
                    status == 200
                    and body is not None
                    and body["status"] == "ok"
                    and body["daemons"].get("claim-sweeper", {}).get("last_ok_at") is not None
                )

            assert wait_until(healthy, timeout=20), (hb.health(), hb.stop())
            status, body = hb.health()
            assert body is not None
            assert set(body["daemons"]) == {"heartbeat", "claim-sweeper"}
            assert body["host"] == "testhost" and body["role"] == "primary"
            assert {"status", "host", "role", "ts", "version", "daemons"} <= set(body)
            row = body["daemons"]["claim-sweeper"]
            assert row["ok"] is True and row["expected_interval_s"] == 0.3
            assert {"ok", "last_ok_at", "age_s", "expected_interval_s"} <= set(row)
            assert hb.health("/health/fleet")[0] == 200
            # (A ping sent before claim-sweeper's first heartbeat may have been a /fail.)
            n = len(pings.kinds(PING_UUID))
            assert wait_until(lambda: pings.kinds(PING_UUID)[n:].count("success") >= 3, 10)
            assert "fail" not in pings.kinds(PING_UUID)[n + 2 :]

            sweeper.send_signal(signal.SIGKILL)
            sweeper.wait(timeout=5)
            n = len(pings.kinds(PING_UUID))

            def degraded() -> bool:
                _, b = hb.health()
                return b is not None and b["status"] == "degraded"

            assert wait_until(degraded, timeout=15), hb.health()
            status, body = hb.health()
            assert status == 200, "/health answers 200 while the host is up"
            assert body is not None and body["stale"] == ["claim-sweeper"]
            assert body["daemons"]["claim-sweeper"]["ok"] is False
            assert body["daemons"]["heartbeat"]["ok"] is True
            fleet_status, fleet_body = hb.health("/health/fleet")
            assert fleet_status == 503 and fleet_body is not None
            assert fleet_body["stale"] == ["claim-sweeper"]
            assert wait_until(lambda: "fail" in pings.kinds(PING_UUID)[n:], timeout=10)
            key = hashlib.sha256(ping_url.encode()).hexdigest()[:8]

            def fail_counted() -> bool:
                # The receiver records a ping before the daemon has its answer and counts it.
                value = metric_value(
                    hb.metrics(), "fleet_heartbeat_pings_total", url_hash=key, outcome="fail"
                )
                return (value or 0) >= 1

            assert wait_until(fail_counted, timeout=10), hb.metrics()
            text = hb.metrics()
            assert metric_value(text, "fleet_heartbeat_fleet_degraded") == 1
            assert (
                metric_value(text, "fleet_heartbeat_pings_total", url_hash=key, outcome="ok") or 0
            ) >= 1
            assert PING_UUID not in text

            # Nothing else is served, whatever the method or path.
            for method, path in [
                ("GET", "/"),
                ("GET", "/metrics"),
                ("GET", "/health/"),
                ("GET", "/health/fleet/x"),
                ("GET", "/health/../state/role"),
                ("GET", "/../../etc/passwd"),
                ("GET", "/state/heartbeats/claim-sweeper.json"),
                ("POST", "/health"),
                ("DELETE", "/health"),
                ("PUT", "/health/fleet"),
            ]:
                assert raw_request(hb.health_port, method, path) == 404, (method, path)
            assert raw_request(hb.health_port, "GET", "/health?file=/etc/passwd") == 200

            # The daemon comes back: the host is ok again and success pings resume.
            sweeper = start_sweeper(env, tmp_path)
            assert wait_until(healthy, timeout=20), hb.health()
            n = len(pings.kinds(PING_UUID))
            assert wait_until(lambda: pings.kinds(PING_UUID)[n:].count("success") >= 1, 10)
        finally:
            if sweeper.poll() is None:
                sweeper.send_signal(signal.SIGTERM)
                sweeper.wait(timeout=10)
            out = hb.stop()
    assert PING_UUID not in out, "the ping URL is a secret: never logged"
    assert '"fleet degraded on this host"' in out and "claim-sweeper" in out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert records and all(r.get("daemon") for r in records)


async def hammer(url: str, total: int, clients: int) -> list[int | str]:
    """``total`` GETs from ``clients`` concurrent connections; each result is a status code or
    the name of the error."""
    results: list[int | str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=30)

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    async with session.get(url) as resp:
                        payload = await resp.json()
                        ok = isinstance(payload, dict) and "status" in payload
                        results.append(resp.status if ok else "bad body")
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    results.append(type(exc).__name__)

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def test_1000_requests_from_50_clients_all_answered_while_probes_hang(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = only_enabled(fleet_env, "heartbeat")
    with FakePeer() as peer, FakePingReceiver() as pings:
        peer.hang(times=1000)
        pings.hang(times=1000)
        config = write_config(
            tmp_path / "fleet.toml",
            heartbeat={"interval_s": 0.1},
            peers=[{"name": "forge", "url": peer.health_url, "interval_s": 0.1, "timeout_s": 60}],
            pings=[{"url": pings.check_url(PING_UUID), "interval_s": 0.1, "timeout_s": 60}],
        )
        with HeartbeatProcess(env, tmp_path, config) as hb:
            assert wait_until(lambda: hb.health()[0] == 200, timeout=15), hb.stop()
            # Both probes are in flight and unanswered for the whole run.
            assert peer.wait_for_requests(1, timeout=10) and pings.wait_for_requests(1, 10)
            results = asyncio.run(hammer(hb.url("/health"), total=1000, clients=50))

            def cycles() -> float:
                text = hb.metrics()
                return metric_value(text, "fleet_cycles_total", outcome="ok") or 0

            # Several more cycles pass, each finding both probes still in flight.
            seen = cycles()
            assert wait_until(lambda: cycles() >= seen + 3, timeout=10)
            assert len(peer.requests) == 1 and len(pings.requests) == 1, "probes overlapped"
            assert hb.proc is not None and hb.proc.poll() is None
    errors = [r for r in results if r != 200]
    assert len(results) == 1000 and errors == [], errors[:10]


def test_taken_health_port_is_retried_not_fatal(fleet_env: dict[str, str], tmp_path: Path) -> None:
    env = only_enabled(fleet_env, "heartbeat")
    config = write_config(tmp_path / "fleet.toml", heartbeat={"interval_s": 0.1})
    hb = HeartbeatProcess(env, tmp_path, config)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", hb.health_port))
    squatter.listen(1)
    hb.start()
    try:
        metrics_up = lambda: "fleet_heartbeat_endpoint_up 0.0" in hb.metrics()  # noqa: E731
        assert wait_until(metrics_up, timeout=15), hb.stop()
        assert hb.proc is not None and hb.proc.poll() is None, "a taken port must not kill it"
        assert http_get(f"http://127.0.0.1:{hb.metrics_port}/healthz")[0] in (200, 503)
        squatter.close()
        assert wait_until(lambda: hb.health()[0] == 200, timeout=15), hb.stop()
        assert "fleet_heartbeat_endpoint_up 1.0" in hb.metrics()
    finally:
        squatter.close()
        out = hb.stop()
    assert out.count('"health endpoint cannot bind; retrying every cycle"') == 1
    assert '"health endpoint serving"' in out


def test_promtool_check_metrics(fleet_env: dict[str, str], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI: .ci/run must install the prometheus package")
        pytest.skip("promtool not installed (Debian package prometheus)")
    env = only_enabled(fleet_env, "heartbeat")
    with FakePeer(role="primary") as peer, FakePingReceiver() as pings:
        config = write_config(
            tmp_path / "fleet.toml",
            heartbeat={"interval_s": 0.1},
            peers=[{"name": "forge", "url": peer.health_url, "interval_s": 0.1}],
            pings=[{"url": pings.check_url(PING_UUID), "interval_s": 0.1}],
        )
        with HeartbeatProcess(env, tmp_path, config) as hb:
            assert wait_until(
                lambda: 'fleet_heartbeat_peer_up{peer="forge"} 1.0' in hb.metrics(), timeout=15
            ), hb.stop()
            body = hb.metrics()
    for name in (
        "fleet_heartbeat_peer_up",
        "fleet_heartbeat_peer_consecutive_failures",
        "fleet_heartbeat_pings_total",
        "fleet_heartbeat_fleet_degraded",
    ):
        assert name in body
    res = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr

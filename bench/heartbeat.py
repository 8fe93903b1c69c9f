"""Heartbeat benchmarks against the real daemon (`fleet run heartbeat`) on loopback:

(a) /health requests/s and p50/p99 latency with 50 concurrent clients, against a baseline
    measured in the same run: a trivial aiohttp handler returning a constant (separate process,
    same client). The daemon runs with a peer and a ping that hang for the whole run, so the
    figures are "while probes hang". Also with ``health_cache_s = 0`` (heartbeat files read on
    every request) to show what the cache buys.
(b) detection time for a dead peer: probes (and seconds) from the peer's death to the #ops
    alert and to the escalation, read from the outbox rows' times and the fake peer's log.

Prints figures; asserts nothing about timings. Everything lives in a temporary directory.

    .venv/bin/python bench/heartbeat.py            # 3 rounds of 10,000 requests per server
    .venv/bin/python bench/heartbeat.py --quick    # 1 round of 3,000 requests per server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
FLEET_BIN = Path(sys.executable).parent / "fleet"
CLIENTS = 50
DAEMONS = (
    "email-reactor",
    "ollama-health",
    "restore-loop",
    "heartbeat",
    "blueprint-watchdog",
    "claim-sweeper",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


# baseline server -------------------------------------------------------------------------------
def baseline_server(port: int) -> None:
    """A trivial aiohttp handler returning a constant, served the way the daemon serves /health
    (AppRunner + TCPSite, no access log), so the comparison isolates the handler."""
    from aiohttp import web

    body = json.dumps({"status": "ok", "host": "baseline", "daemons": {}}).encode()

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def serve() -> None:
        app = web.Application()
        app.router.add_route("*", "/health", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


# load ------------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    name: str
    requests: int
    errors: int
    wall_s: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    def pct(self, p: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(p / 100 * len(data)))] * 1000


async def load(url: str, total: int, clients: int = CLIENTS) -> tuple[int, float, list[float]]:
    remaining = total
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)

    async def client() -> None:
        nonlocal remaining, errors
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return errors, time.perf_counter() - start, latencies


def measure(name: str, url: str, total: int) -> LoadResult:
    asyncio.run(load(url, min(500, total)))  # warm-up: connections, caches
    errors, wall, latencies = asyncio.run(load(url, total))
    return LoadResult(name, total, errors, wall, latencies)


# the daemon ------------------------------------------------------------------------------------
def fleet_env(root: Path, enabled: tuple[str, ...]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "NOTIFY_SOCKET"))}
    env.update(
        HOME=str(root.parent / "home"),
        FLEET_FLEET__ROOT=str(root),
        FLEET_FLEET__HOST="benchhost",
        FLEET_SLACK__BASE_URL="http://127.0.0.1:9/api/",
    )
    for name in DAEMONS:
        env[f"FLEET_{name.replace('-', '_').upper()}__ENABLED"] = (
            "true" if name in enabled else "false"
        )
    return env


def write_peer_config(
    path: Path, peers: list[dict[str, Any]], pings: list[str], extra: dict[str, Any]
) -> None:
    lines = ["[heartbeat]"] + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    for peer in peers:
        lines.append("[[heartbeat.peers]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in peer.items()]
    for url in pings:
        lines += [
            "[[heartbeat.pings]]",
            f"url = {json.dumps(url)}",
            "interval_s = 1.0",
            "timeout_s = 60",
        ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # ping URLs are secrets: the daemon refuses a config others can read


class Daemon:
    def __init__(
        self,
        tmp: Path,
        name: str,
        config_extra: dict[str, Any],
        peers: list[dict[str, Any]],
        pings: list[str],
    ) -> None:
        self.root = tmp / name / "root"
        self.root.mkdir(parents=True)
        self.port = free_port()
        config = tmp / name / "fleet.toml"
        write_peer_config(
            config,
            peers,
            pings,
            {**config_extra, "health_port": self.port, "metrics_port": free_port()},
        )
        # A second enabled daemon with a fresh heartbeat file, as on a host.
        beats = self.root / "state/heartbeats"
        beats.mkdir(parents=True)
        now = time.time()
        (beats / "claim-sweeper.json").write_text(
            json.dumps(
                {
                    "daemon": "claim-sweeper",
                    "host": "benchhost",
                    "pid": 1,
                    "version": "0.1.0",
                    "role": "primary",
                    "last_ok_at": now,
                    "last_duration_s": 0.01,
                    "cycles": 1,
                    "expected_interval_s": 600.0,
                    "started_at": now,
                }
            )
        )
        env = {**fleet_env(self.root, ("heartbeat", "claim-sweeper")), "FLEET_CONFIG": str(config)}
        self.proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "heartbeat"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# (a) /health throughput ------------------------------------------------------------------------
def bench_health(tmp: Path, total: int, rounds: int) -> None:
    # A listener that never accepts: the kernel completes the handshake, nobody answers.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    hang_url = f"http://127.0.0.1:{hang.getsockname()[1]}"
    peers = [{"name": "forge", "url": hang_url + "/health", "interval_s": 1.0, "timeout_s": 60}]
    pings = [hang_url + "/ping/bench-uuid"]

    port = free_port()
    base = subprocess.Popen(
        [sys.executable, __file__, "--baseline-server", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemons: list[Daemon] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        servers = [("baseline: constant aiohttp handler", f"http://127.0.0.1:{port}/health")]
        for label, extra in [
            ("heartbeat /health (cache 1 s, probes hanging)", {"interval_s": 1.0}),
            (
                "heartbeat /health (cache 0: read files per request)",
                {"interval_s": 1.0, "health_cache_s": 0},
            ),
        ]:
            daemons.append(Daemon(tmp, f"d{len(daemons)}", extra, peers, pings))
            servers.append((label, daemons[-1].url))
        # Rounds alternate between the servers so background load on the machine hits all
        # of them alike; the median round is reported.
        runs: dict[str, list[LoadResult]] = {label: [] for label, _ in servers}
        for _ in range(rounds):
            for label, url in servers:
                runs[label].append(measure(label, url, total))
    finally:
        for daemon in daemons:
            daemon.stop()
        base.terminate()
        base.wait(timeout=10)
        hang.close()

    results = [sorted(rs, key=lambda r: r.rps)[len(rs) // 2] for rs in runs.values()]
    baseline = results[0]
    print(
        f"\n(a) GET /health, {total} requests x {rounds} round(s) per server (median round),"
        f" {CLIENTS} concurrent clients, loopback"
    )
    print(f"{'server':<52} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs base':>8}")
    for r in results:
        errors = sum(x.errors for x in runs[r.name])
        print(
            f"{r.name:<52} {r.rps:>8.0f} {r.pct(50):>8.2f} {r.pct(99):>8.2f} {errors:>7}"
            f" {r.rps / baseline.rps:>7.2f}x"
        )


# (b) dead-peer detection -----------------------------------------------------------------------
class SwitchablePeer:
    """A peer /health that answers ok until ``kill()``, then 503; logs probe arrival times."""

    def __init__(self) -> None:
        self.dead_since: float | None = None
        self.arrivals: list[float] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                peer.arrivals.append(time.time())
                if peer.dead_since is None:
                    body, code = b'{"status": "ok", "role": "standby"}', 200
                else:
                    body, code = b"down", 503
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def kill(self) -> None:
        self.dead_since = time.time()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def outbox_times(root: Path) -> dict[str, float]:
    db = root / "state/outbox.db"
    if not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT dedup_key, created_at FROM outbox").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return {key.rsplit(":", 1)[1]: float(at) for key, at in rows}


def detection_figures(at: float | None, failed: list[float], dead: float) -> tuple[str, str]:
    """(failed probes answered before the outbox row was written, seconds since death)."""
    if at is None:
        return "-", "-"
    return str(sum(1 for t in failed if t < at)), f"{at - dead:.2f}"


def bench_detection(tmp: Path, interval_s: float, runs: int) -> None:
    print(
        f"\n(b) dead peer: probes every {interval_s} s (alert_after 2, escalate_after 5);"
        f" {runs} run(s)"
    )
    print(f"{'run':>4} {'probes to #ops':>15} {'s':>6} {'probes to escalation':>21} {'s':>6}")
    for run in range(runs):
        peer = SwitchablePeer()
        peers = [{"name": "forge", "url": peer.url, "interval_s": interval_s, "timeout_s": 5}]
        daemon = Daemon(tmp, f"detect{run}", {"interval_s": min(1.0, interval_s / 2)}, peers, [])
        try:
            deadline = time.monotonic() + 30
            while len(peer.arrivals) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            peer.kill()
            while time.monotonic() < deadline:
                if "escalated" in outbox_times(daemon.root):
                    break
                time.sleep(0.02)
        finally:
            daemon.stop()
            peer.close()
        times = outbox_times(daemon.root)
        dead = peer.dead_since or 0.0
        failed = [t for t in peer.arrivals if t >= dead]
        down_n, down_s = detection_figures(times.get("down"), failed, dead)
        esc_n, esc_s = detection_figures(times.get("escalated"), failed, dead)
        print(f"{run + 1:>4} {down_n:>15} {down_s:>6} {esc_n:>21} {esc_s:>6}")
    print(
        "At the production interval (60 s) that is ~2 probes = 1-2 min to #ops and 5 probes"
        " = 4-5 min to escalation (the seed's target: notice within ~2 min, escalate at 5)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server)
        return
    total, rounds = (3000, 1) if args.quick else (10000, 3)
    print(
        f"heartbeat bench on {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs),"
        f" Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-heartbeat-") as tmp:
        bench_health(Path(tmp), total, rounds)
        bench_detection(Path(tmp), interval_s=0.2, runs=1 if args.quick else 3)


if __name__ == "__main__":
    main()

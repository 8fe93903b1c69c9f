"""Hostile HTTP clients cannot starve a daemon: real `fleet run heartbeat` and `fleet run
claim-sweeper` processes with their soft open-files limit lowered to macOS's default (256),
each port held by ~300 connections that sent half a request line and never finish it.

While those are held, /health, /healthz and /metrics still answer and the heartbeat file keeps
being rewritten; the log stays quiet (no accept-error flood); once the header timeout has
passed the server has closed every one of those connections.
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, free_port, http_get
from tests.heartbeat_support import only_enabled
from tests.slowloris import Slowloris

pytestmark = pytest.mark.system

SOFT_NOFILE = 256  # macOS's default soft limit; Linux's is 1024
HEADER_TIMEOUT_S = 3.0


def lowered_nofile() -> None:
    """In the child, before exec: the soft open-files limit a LaunchAgent gets on macOS."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = SOFT_NOFILE if hard == resource.RLIM_INFINITY else min(SOFT_NOFILE, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Daemon:
    """`fleet run NAME` at the lowered limit, its log in a file (a flood must not block it)."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [str(FLEET_BIN), "run", name],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lowered_nofile,
        )

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def get(url: str) -> tuple[int, str]:
    try:
        return http_get(url, timeout=10)
    except OSError as exc:  # refused, reset, timed out: starved
        return 0, f"{type(exc).__name__}: {exc}"


def answered_under_pressure(
    attackers: list[Slowloris], url: str, ok: Callable[[int, str], bool], tries: int = 3
) -> tuple[int, str]:
    """GET ``url`` right after topping every attacker back up to its full count, so the
    request competes with the held connections; a few tries, each bounded by its timeout."""
    status, body = 0, ""
    for _ in range(tries):
        for attacker in attackers:
            attacker.top_up()
        status, body = get(url)
        if ok(status, body):
            break
    return status, body


def heartbeat_cycles(root: Path, daemon: str) -> int:
    path = root / "state" / "heartbeats" / f"{daemon}.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["cycles"])
    except (OSError, ValueError, KeyError):
        return -1


def heartbeat_advances(root: Path, daemon: str, attackers: list[Slowloris], by: int) -> bool:
    """True once the daemon's heartbeat file shows ``by`` more cycles, the attackers topped up
    before every look (bounded: 60 s)."""
    start = heartbeat_cycles(root, daemon)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for attacker in attackers:
            attacker.top_up()
        if start >= 0 and heartbeat_cycles(root, daemon) >= start + by:
            return True
        time.sleep(0.2)
    return False


def accept_error_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "accept" in line.lower()]


@pytest.fixture
def hostile_env(fleet_env: dict[str, str]) -> Iterator[dict[str, str]]:
    env = {
        **fleet_env,
        "FLEET_FLEET__HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "FLEET_FLEET__HTTP_IDLE_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    yield env


def wait_serving(url: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if get(url)[0] == 200:
            return True
        time.sleep(0.1)
    return False


def test_heartbeat_serves_and_beats_while_300_slowloris_connections_are_held(
    hostile_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    health_port, metrics_port = free_port(), free_port()
    env = {
        **only_enabled(hostile_env, "heartbeat"),
        "FLEET_HEARTBEAT__HEALTH_PORT": str(health_port),
        "FLEET_HEARTBEAT__METRICS_PORT": str(metrics_port),
        "FLEET_HEARTBEAT__INTERVAL_S": "0.3",
        "FLEET_HEARTBEAT__HEALTH_CACHE_S": "0",
    }
    daemon = Daemon("heartbeat", env, tmp_path)
    health = f"http://127.0.0.1:{health_port}/health"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    on_health, on_metrics = Slowloris(health_port), Slowloris(metrics_port)
    attackers = [on_health, on_metrics]
    try:
        assert wait_serving(health), daemon.log_lines()[-20:]
        assert heartbeat_cycles(fleet_root, "heartbeat") >= 0

        # A loaded machine may accept slowly: give the first wave time to connect.
        held = on_health.top_up(connect_timeout=30), on_metrics.top_up(connect_timeout=30)
        assert sum(held) >= 400, f"the attack itself failed: {held} connections held"

        status, body = answered_under_pressure(attackers, health, lambda s, _b: s == 200)
        assert status == 200, f"/health starved: {body}"
        assert json.loads(body)["daemons"]["heartbeat"]["ok"] is True

        status, body = answered_under_pressure(
            attackers, metrics, lambda s, b: s == 200 and "fleet_cycles_total" in b
        )
        assert status == 200 and "fleet_cycles_total" in body, f"/metrics starved: {body}"

        assert heartbeat_advances(fleet_root, "heartbeat", attackers, by=3), (
            "the heartbeat file stopped being rewritten",
            daemon.log_lines()[-20:],
        )

        # Stop topping up: every connection still held is closed by the header timeout.
        for attacker in attackers:
            assert attacker.wait_all_closed(timeout=60), (
                f"{len(attacker.open)} half-sent connections never closed by the server"
            )
        assert daemon.proc.poll() is None, daemon.log_lines()[-20:]
    finally:
        for attacker in attackers:
            attacker.close()
        daemon.stop()
    lines = daemon.log_lines()
    accept_lines = accept_error_lines(lines)
    assert len(accept_lines) <= 5, (len(accept_lines), accept_lines[:5])
    assert len(lines) < 200, f"{len(lines)} log lines: {lines[:10]}"


def test_claim_sweeper_metrics_answer_while_300_slowloris_connections_are_held(
    hostile_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **only_enabled(hostile_env, "claim-sweeper"),
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(port),
        "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.3",
    }
    daemon = Daemon("claim-sweeper", env, tmp_path)
    metrics = f"http://127.0.0.1:{port}/metrics"
    healthz = f"http://127.0.0.1:{port}/healthz"
    attacker = Slowloris(port)
    try:
        assert wait_serving(metrics), daemon.log_lines()[-20:]

        assert attacker.top_up(connect_timeout=30) >= 250, "the attack itself failed"
        status, body = answered_under_pressure(
            [attacker], metrics, lambda s, b: s == 200 and "fleet_claims_" in b
        )
        assert status == 200 and "fleet_claims_" in body, f"/metrics starved: {body}"
        status, body = answered_under_pressure([attacker], healthz, lambda s, _b: s == 200)
        assert status == 200 and json.loads(body)["ok"] is True, f"/healthz starved: {body}"

        assert heartbeat_advances(fleet_root, "claim-sweeper", [attacker], by=3), (
            "the heartbeat file stopped being rewritten",
            daemon.log_lines()[-20:],
        )
        assert attacker.wait_all_closed(timeout=60), (
            f"{len(attacker.open)} half-sent connections never closed by the server"
        )
        assert daemon.proc.poll() is None, daemon.log_lines()[-20:]
    finally:
        attacker.close()
        daemon.stop()
    lines = daemon.log_lines()
    accept_lines = accept_error_lines(lines)
    assert len(accept_lines) <= 5, (len(accept_lines), accept_lines[:5])
    assert len(lines) < 200, f"{len(lines)} log lines: {lines[:10]}"

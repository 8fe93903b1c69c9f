"""The daemons as their generated units run them: under PYTHONOPTIMIZE=2 (-OO: no docstrings
nor asserts; shared.units.PYTHON_OPTIMIZE). A cycle of each daemon still completes, a config
error still exits 78 naming the key, a long-running daemon still says READY, serves /metrics,
reloads on SIGHUP and stops on SIGTERM, and the code it ran was the -OO byte-code."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

import daemons.claim_sweeper.policy
from shared.units import PYTHON_OPTIMIZE
from tests.conftest import FLEET_BIN, NotifySocket, free_port, run_fleet

pytestmark = pytest.mark.system


@pytest.fixture
def optimized_env(fleet_env: dict[str, str]) -> dict[str, str]:
    return {**fleet_env, "PYTHONOPTIMIZE": PYTHON_OPTIMIZE, "FLEET_HEARTBEAT__HEALTH_PORT": "0"}


@pytest.mark.parametrize(
    ("name", "port_key"),
    [
        ("claim-sweeper", "FLEET_CLAIM_SWEEPER__METRICS_PORT"),
        ("email-reactor", "FLEET_EMAIL_REACTOR__METRICS_PORT"),
        ("heartbeat", "FLEET_HEARTBEAT__METRICS_PORT"),
        ("blueprint-watchdog", "FLEET_BLUEPRINT_WATCHDOG__METRICS_PORT"),
    ],
)
def test_a_cycle_completes_under_the_units_optimisation(
    name: str, port_key: str, optimized_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    env = {**optimized_env, port_key: str(free_port())}
    proc = run_fleet(["run", name, "--once"], env, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    beat = json.loads((fleet_root / f"state/heartbeats/{name}.json").read_text())
    assert beat["daemon"] == name and beat["cycles"] == 1


def test_the_daemon_loads_the_optimised_byte_code(
    optimized_env: dict[str, str], tmp_path: Path
) -> None:
    source = daemons.claim_sweeper.policy.__file__
    compiled = Path(importlib.util.cache_from_source(source, optimization=int(PYTHON_OPTIMIZE)))
    compiled.unlink(missing_ok=True)
    env = {**optimized_env, "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(free_port())}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a host: the cache is written
    proc = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert compiled.exists()  # imported at -OO, so cached at that level


def test_a_bad_key_still_exits_78_naming_it(optimized_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[claim_sweeper]\ninterval_s = -1\n[email_reactor]\nno_such_key = 1\n")
    proc = run_fleet(["run", "claim-sweeper", "--config", str(config)], optimized_env, tmp_path)
    assert proc.returncode == 78, proc.stderr
    assert "claim_sweeper.interval_s" in proc.stderr
    assert "email_reactor.no_such_key" in proc.stderr


def test_a_long_running_daemon_serves_reloads_and_stops(
    optimized_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    env = {
        **optimized_env,
        "NOTIFY_SOCKET": notify_socket.path,
        "FLEET_OLLAMA_HEALTH__METRICS_PORT": str(port),
        "FLEET_OLLAMA_HEALTH__HOSTS": '{"anvil": {"url": "http://127.0.0.1:9"}}',
    }
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", "ollama-health"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert notify_socket.wait_for("READY=1", timeout=30), notify_socket.messages
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert "fleet_build_info" in body
        proc.send_signal(signal.SIGHUP)
        assert notify_socket.wait_for("RELOADING=1", timeout=30), notify_socket.messages
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert '"stopped"' in out

"""Signals a daemon may get besides SIGTERM, on a real `fleet run claim-sweeper` with a real
NOTIFY_SOCKET: SIGHUP reloads the config in-process (RELOADING=1, then READY=1 again, the new
metrics port served, the old one closed; a config that does not load keeps the running one),
SIGUSR1/SIGUSR2 log a state dump and change nothing, and any other catchable terminating signal
(SIGALRM here) stops gracefully with exit 128+signal, which the units restart. Every wait is for
an observed state; the deadlines only bound a failure."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, wait_until

pytestmark = pytest.mark.system


def _config(path: Path, port: int, extra: str = "") -> None:
    path.write_text(
        f"[claim_sweeper]\nmetrics_port = {port}\ninterval_s = 0.2\nbackoff_max_s = 0.5\n{extra}"
    )


def _start(env: dict[str, str], cwd: Path, ns: NotifySocket, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper", "--config", str(config)],
        env={**env, "NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _serves(port: int) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def _finish(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, list[dict]]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no exit within 30 s of {signal.Signals(sig).name}")
    assert "Traceback" not in err, err
    return proc.returncode, [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_sighup_reloads_the_config_in_process(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = tmp_path / "fleet.toml"
    first, second = free_port(), free_port()
    _config(config, first)
    proc = _start(fleet_env, tmp_path, notify_socket, config)
    try:
        assert notify_socket.wait_for("READY=1", timeout=20), notify_socket.messages
        assert wait_until(lambda: _serves(first), timeout=20)
        pid = proc.pid

        _config(config, second)
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: notify_socket.count("READY=1") >= 2, timeout=30)
        assert notify_socket.count("RELOADING=1") == 1
        assert any("MONOTONIC_USEC=" in m for m in notify_socket.messages if "RELOADING" in m)
        assert proc.poll() is None and proc.pid == pid
        assert wait_until(lambda: _serves(second), timeout=20), "the new port is served"
        assert not _serves(first), "the old port is closed"
        before = notify_socket.count("WATCHDOG=1")
        assert wait_until(lambda: notify_socket.count("WATCHDOG=1") >= before + 3, timeout=20)

        # A config that does not load: the running one stays, and the error names the key.
        _config(config, first, extra="no_such_key = 1\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: notify_socket.count("READY=1") >= 3, timeout=30)
        assert proc.poll() is None
        assert _serves(second) and not _serves(first)
    finally:
        code, lines = _finish(proc)
    assert code == 0
    reloaded = [r for r in lines if r["event"] == "reloaded"]
    assert len(reloaded) == 1 and reloaded[0]["level"] == "info"
    (failed,) = [r for r in lines if r["event"] == "reload failed; still running as before"]
    assert "claim_sweeper.no_such_key" in json.dumps(failed)


def test_sigusr1_and_sigusr2_dump_state_and_harm_nothing(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = tmp_path / "fleet.toml"
    port = free_port()
    _config(config, port)
    proc = _start(fleet_env, tmp_path, notify_socket, config)
    try:
        assert notify_socket.wait_for("READY=1", timeout=20), notify_socket.messages
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
            proc.send_signal(sig)
            before = notify_socket.count("WATCHDOG=1")
            assert wait_until(
                lambda b=before: notify_socket.count("WATCHDOG=1") >= b + 3, timeout=20
            )
            assert proc.poll() is None, f"{sig.name} killed the daemon"
        assert _serves(port)
        assert notify_socket.count("STOPPING=1") == 0 and notify_socket.count("READY=1") == 1
    finally:
        code, lines = _finish(proc)
    assert code == 0
    dumps = [r for r in lines if r["event"] == "state"]
    assert [d["signal"] for d in dumps] == ["SIGUSR1", "SIGUSR2", "SIGUSR1"]
    (row,) = dumps[-1]["daemons"]
    assert row["daemon"] == "claim-sweeper" and row["cycles"] >= 1 and row["role"] == "primary"


def test_another_terminating_signal_stops_gracefully_and_is_restarted(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = tmp_path / "fleet.toml"
    _config(config, free_port())
    proc = _start(fleet_env, tmp_path, notify_socket, config)
    try:
        assert notify_socket.wait_for("READY=1", timeout=20), notify_socket.messages
    finally:
        code, lines = _finish(proc, signal.SIGALRM)
    # Non-zero, so Restart=on-failure and launchd's KeepAlive{SuccessfulExit=false} bring it
    # back; but a clean stop (STOPPING=1, closed, logged), not a kill.
    assert code == 128 + signal.SIGALRM
    assert notify_socket.wait_for("STOPPING=1", timeout=5)
    assert any(r["event"] == "stopping" and r.get("signal") == "SIGALRM" for r in lines)
    assert any(r["event"] == "stopped" for r in lines)

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


async def test_a_kept_or_swapped_reload_never_runs_two_loops_at_once(tmp_path: Path) -> None:
    """In process: SIGHUP with a config that does not load keeps the running loop (not a second
    one beside it); SIGHUP with a good one replaces it. Cycles never overlap."""
    import asyncio
    import os

    from fleet.config import RootConfig
    from shared.config import ConfigError
    from shared.runtime import CycleResult, Daemon, run_daemons
    from shared.sections import FleetSection

    state = {"running": 0, "most": 0, "cycles": 0, "opened": 0}

    class Counting(Daemon):  # type: ignore[type-arg]
        name = "claim-sweeper"

        async def open(self) -> None:
            state["opened"] += 1

        async def cycle(self) -> CycleResult:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["cycles"] += 1
            try:
                await asyncio.sleep(0.01)
            finally:
                state["running"] -= 1
            return CycleResult()

    config = RootConfig(fleet=FleetSection(root=tmp_path, host="t", stop_grace_s=0.5))
    config.claim_sweeper.interval_s = 0.01
    config.claim_sweeper.metrics_port = 0
    answers: list[object] = [ConfigError([("claim_sweeper.bad", "nope")]), config]

    def reload() -> tuple[object, list[type]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, [Counting]

    async def until(predicate, limit: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not predicate():
            assert loop.time() < deadline, state
            await asyncio.sleep(0.01)

    async def drive() -> None:
        await until(lambda: state["cycles"] >= 3)
        os.kill(os.getpid(), signal.SIGHUP)  # kept: the config does not load
        await until(lambda: not answers[:1] or not isinstance(answers[0], Exception))
        seen = state["cycles"]
        await until(lambda: state["cycles"] >= seen + 20)
        os.kill(os.getpid(), signal.SIGHUP)  # swapped
        await until(lambda: state["opened"] == 2)
        seen = state["cycles"]
        await until(lambda: state["cycles"] >= seen + 20)
        os.kill(os.getpid(), signal.SIGTERM)

    driver = asyncio.create_task(drive())
    code = await asyncio.wait_for(
        run_daemons([Counting], config, reload=reload),  # type: ignore[arg-type]
        60,
    )
    await driver
    assert code == 0
    assert state["most"] == 1, "two loops cycled the same daemon at once"
    assert state["opened"] == 2 and answers == []

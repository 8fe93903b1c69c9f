"""The generated user-mode unit of a real daemon under a real systemd user manager.

systemctl cannot reach a system manager here, but `systemd --user` runs inside a private mount
namespace (`unshare --mount --propagation private`) with tmpfs on /run/systemd (plus the
/run/systemd/inaccessible nodes the sandboxing directives bind over paths) and on an
XDG_RUNTIME_DIR; `nsenter` puts each systemctl call into that namespace. Shown: `fleet units
install --now` starts it and it is active after READY=1; a daemon wedged on purpose
(FLEET_DEBUG_WEDGE_AFTER_CYCLES) is killed by WatchdogSec and restarted; exit 78 is not
restarted; `systemctl --user stop` exits 0 cleanly; `fleet units uninstall --now` removes it.
Drop-ins only shorten timings and add test settings: the unit file is the generated one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.units import GENERATED_MARKER
from tests.conftest import FLEET_BIN, free_port, http_get, wait_until

pytestmark = pytest.mark.system

SYSTEMD = Path("/lib/systemd/systemd")
UNIT = "alai-fleet-claim-sweeper.service"

# The holder inside the new mount namespace: private /run/systemd and runtime dir, then the
# user manager.
HOLDER = r"""
set -eu
XDG="$1"; HOME_DIR="$2"; PY="$3"
mount -t tmpfs -o mode=755 tmpfs /run/systemd
mkdir -p /run/systemd/system /run/systemd/inaccessible
cd /run/systemd/inaccessible
touch reg; mkdir dir; mkfifo fifo; mknod chr c 0 0; mknod blk b 0 0
"$PY" -c "import socket; socket.socket(socket.AF_UNIX).bind('sock')"
chmod 0000 reg dir fifo chr blk sock
mount -t tmpfs -o mode=700 tmpfs "$XDG"
cd /
"$SYSTEMD_BIN" --user </dev/null >"$HOME_DIR/manager.log" 2>&1 &
wait
"""


class UserManager:
    """A `systemd --user` in its own mount namespace; `run` executes a command inside it."""

    def __init__(self, holder: subprocess.Popen[bytes], xdg: Path, home: Path) -> None:
        self.holder = holder
        self.xdg = xdg
        self.home = home
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(xdg),
            "LANG": "C.UTF-8",
            **_passthrough(),
        }

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "nsenter",
                "-t",
                str(self.holder.pid),
                "-m",
                "--",
                "env",
                "-i",
                *(f"{k}={v}" for k, v in self.env.items()),
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--user", *args)

    def show(self, unit: str = UNIT) -> dict[str, str]:
        out = self.systemctl(
            "show",
            unit,
            "-p",
            "ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus,ExecMainCode,"
            "WatchdogUSec,LoadState",
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    @property
    def log(self) -> str:
        try:
            return (self.home / "manager.log").read_text(errors="replace")
        except OSError:
            return ""


def _passthrough() -> dict[str, str]:
    """PYTHONPATH, when the suite runs against a source tree other than the installed one:
    the services must run the code under test."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


def _skip_reason() -> str | None:
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing (Debian package systemd)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return (
            "unshare --mount is not permitted here (needs root or CAP_SYS_ADMIN): "
            + probe.stderr.strip()
        )
    return None


@pytest.fixture
def user_manager(tmp_path: Path) -> Iterator[UserManager]:
    reason = _skip_reason()
    if reason:
        pytest.skip(f"systemd --user harness unavailable: {reason}")
    xdg = Path(tempfile.mkdtemp(prefix="xdg", dir="/tmp"))  # AF_UNIX paths must stay short
    home = tmp_path / "home"
    home.mkdir()
    holder = subprocess.Popen(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            HOLDER,
            "holder",
            str(xdg),
            str(home),
            sys.executable,
        ],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(xdg),
            "SYSTEMD_BIN": str(SYSTEMD),
            "LANG": "C.UTF-8",
            **_passthrough(),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    manager = UserManager(holder, xdg, home)
    try:
        ready = wait_until(
            lambda: (
                holder.poll() is None
                and manager.systemctl("is-system-running").stdout.strip() in ("running", "degraded")
            ),
            timeout=30,
            interval=0.2,
        )
        if not ready:
            err = (
                holder.stderr.read().decode() if holder.poll() is not None and holder.stderr else ""
            )
            pytest.fail(f"systemd --user did not come up: {err}\n{manager.log}")
        # services sandboxed under another uid mapping must still reach the notify socket
        manager.run("chmod", "0666", str(xdg / "systemd" / "notify"))
        yield manager
    finally:
        if holder.poll() is None:
            manager.systemctl("exit")
            try:
                holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait(timeout=10)
        for stream in (holder.stdout, holder.stderr):
            if stream:
                stream.close()
        shutil.rmtree(xdg, ignore_errors=True)


def write_dropin(manager: UserManager, name: str, body: str) -> None:
    d = manager.home / ".config" / "systemd" / "user" / f"{UNIT}.d"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.conf").write_text("[Service]\n" + body)


def remove_dropin(manager: UserManager, name: str) -> None:
    (manager.home / ".config" / "systemd" / "user" / f"{UNIT}.d" / f"{name}.conf").unlink()


def test_generated_user_unit_runs_under_systemd(user_manager: UserManager, tmp_path: Path) -> None:
    m = user_manager
    root = tmp_path / "root"
    port = free_port()
    service_log = tmp_path / "service.log"
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(
        f'[fleet]\nroot = "{root}"\nhost = "testhost"\nstop_grace_s = 5.0\n'
        '[slack]\nbase_url = "http://127.0.0.1:9/api/"\n'
        f"[claim_sweeper]\nenabled = true\nmetrics_port = {port}\ninterval_s = 0.2\n"
        "backoff_max_s = 0.5\n"
    )
    # No journald in the namespace: the daemon's output goes to a file, and every stop's
    # outcome as systemd saw it ($SERVICE_RESULT $EXIT_CODE $EXIT_STATUS) is appended to
    # another ("+": outside the sandbox, which would make tmp_path read-only).
    stops = tmp_path / "stops.log"
    write_dropin(
        m,
        "test",
        f"RestartSec=200ms\nStandardOutput=append:{service_log}\n"
        f"StandardError=append:{service_log}\n"
        'ExecStopPost=+/bin/sh -c \'echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> "$0"\' '
        f"{stops}\n",
    )

    def stop_results() -> list[str]:
        return stops.read_text().splitlines() if stops.exists() else []

    # 1. install --now: written, enabled, started; active only after READY=1
    res = m.run(
        str(FLEET_BIN),
        "units",
        "install",
        "--mode",
        "user",
        "--now",
        "--config",
        str(cfg),
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr + m.log
    unit_file = m.home / ".config" / "systemd" / "user" / UNIT
    assert GENERATED_MARKER in unit_file.read_text()
    state = m.show()
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert state["WatchdogUSec"] == "30s"
    assert wait_until(
        lambda: (
            'fleet_cycles_total{daemon="claim-sweeper",outcome="ok"}'
            in http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)[1]
        ),
        timeout=20,
    )
    assert (m.home / ".config/systemd/user/default.target.wants" / UNIT).exists()

    # 2. SIGTERM via stop: clean exit 0 within TimeoutStopSec
    res = m.systemctl("stop", UNIT)
    assert res.returncode == 0, res.stderr
    state = m.show()
    assert state["ActiveState"] == "inactive", state
    assert state["Result"] == "success", state  # "timeout" had it needed SIGKILL
    assert (state["ExecMainCode"], state["ExecMainStatus"]) == ("1", "0"), state  # CLD_EXITED
    assert '"event": "stopped"' in service_log.read_text()
    assert stop_results() == ["success exited 0"]

    # 3. wedged on purpose: the watchdog kills it, Restart= brings it back
    write_dropin(m, "wedge", "WatchdogSec=2s\nEnvironment=FLEET_DEBUG_WEDGE_AFTER_CYCLES=5\n")
    assert m.systemctl("daemon-reload").returncode == 0
    assert m.systemctl("reset-failed", UNIT).returncode in (0, 1)
    assert m.systemctl("start", UNIT).returncode == 0, m.log
    first_pid = m.show()["MainPID"]
    # WatchdogSignal is SIGABRT: "watchdog killed ABRT" (or "dumped" with core dumps on)
    assert wait_until(
        lambda: any(r.startswith("watchdog ") and r.endswith(" ABRT") for r in stop_results()),
        timeout=60,
    ), stop_results()
    assert wait_until(
        lambda: int(m.show()["NRestarts"]) >= 1 and m.show()["MainPID"] not in ("0", first_pid),
        timeout=30,
    ), m.show()
    assert "wedging the event loop on purpose" in service_log.read_text()
    assert m.systemctl("stop", UNIT).returncode == 0
    remove_dropin(m, "wedge")

    # 4. exit 78 (refused role) is not restarted
    write_dropin(
        m,
        "refuse",
        "Environment=FLEET_FLEET__ROLE=standby FLEET_CLAIM_SWEEPER__AUTO_RELEASE=true\n",
    )
    assert m.systemctl("daemon-reload").returncode == 0
    m.systemctl("reset-failed", UNIT)
    assert m.systemctl("start", UNIT).returncode != 0
    assert wait_until(lambda: m.show()["ActiveState"] == "failed", timeout=20), m.show()
    # RestartSec is 200 ms: watch ten times that long for a restart that must not come
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        state = m.show()
        assert state["ActiveState"] == "failed" and state["NRestarts"] == "0", state
        time.sleep(0.1)
    assert state["ExecMainStatus"] == "78", state
    assert stop_results()[-1] == "exit-code exited 78"
    assert sum(r == "exit-code exited 78" for r in stop_results()) == 1
    assert "refusing to start" in service_log.read_text()
    remove_dropin(m, "refuse")
    assert m.systemctl("daemon-reload").returncode == 0

    # 5. uninstall --now: stopped, disabled, removed
    m.systemctl("reset-failed", UNIT)
    res = m.run(str(FLEET_BIN), "units", "uninstall", "--mode", "user", "--now", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not unit_file.exists()
    assert not (m.home / ".config/systemd/user/default.target.wants" / UNIT).exists()
    assert m.show()["LoadState"] in ("not-found", "masked") or m.show()["ActiveState"] == "inactive"


def test_status_asks_systemd_about_installed_units(
    user_manager: UserManager, tmp_path: Path
) -> None:
    """`fleet status` reports the unit's state from systemd: active while it runs, and after
    `systemctl --user stop` the daemon is down (exit 1) with the unit named in the reason."""
    import json

    m = user_manager
    cfg = tmp_path / "fleet.toml"
    enabled = "".join(
        f"[{section}]\nenabled = false\n"
        for section in ("email_reactor", "ollama_health", "restore_loop", "heartbeat")
    )
    cfg.write_text(
        f'[fleet]\nroot = "{tmp_path / "root"}"\nhost = "testhost"\n'
        '[slack]\nbase_url = "http://127.0.0.1:9/api/"\n'
        f"{enabled}[blueprint_watchdog]\nenabled = false\n"
        f"[claim_sweeper]\nmetrics_port = {free_port()}\ninterval_s = 0.2\n"
    )
    service_log = tmp_path / "service.log"
    write_dropin(
        m, "test", f"StandardOutput=append:{service_log}\nStandardError=append:{service_log}\n"
    )

    def status() -> tuple[int, dict[str, object]]:
        res = m.run(
            str(FLEET_BIN), "status", "--json", "--service-timeout", "30", "--config", str(cfg)
        )
        rows = json.loads(res.stdout) if res.stdout.strip() else []
        found = [r for r in rows if r["daemon"] == "claim-sweeper"]
        return res.returncode, found[0] if found else {}

    code, row = status()
    assert row["service"] is None and row["services"] == []  # not installed: not asked
    res = m.run(
        str(FLEET_BIN),
        "units",
        "install",
        "--mode",
        "user",
        "--now",
        "--config",
        str(cfg),
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr + m.log
    assert wait_until(lambda: status()[1].get("ok") is True, timeout=60), status()
    code, row = status()
    assert code == 0 and row["service"] == "active" and row["process"] == "running"
    (unit,) = row["services"]  # type: ignore[misc]
    assert unit["manager"] == "systemd-user" and unit["pid"] == row["pid"]

    assert m.systemctl("stop", UNIT).returncode == 0
    code, row = status()
    assert code == 1 and row["ok"] is False and row["service"] == "inactive"
    assert str(row["reason"]).startswith("unit systemd-user inactive"), row
    text = m.run(str(FLEET_BIN), "status", "--service-timeout", "30", "--config", str(cfg))
    line = next(x for x in text.stdout.splitlines() if x.startswith("claim-sweeper"))
    assert line.split()[1:4] == ["no", "stopped", "inactive"], text.stdout
    m.run(str(FLEET_BIN), "units", "uninstall", "--mode", "user", "--now", timeout=120)

"""Where a real `fleet run claim-sweeper` puts its log lines, and how they look there:

- ``[fleet] log_file`` set: the daemon appends JSON lines to its own file. Renamed away (what
  newsyslog does) and then SIGHUP: the next line is already in the new file. Renamed away with
  no signal at all: within a couple of seconds the daemon sees the path name another file and
  moves to it, and the renamed file gets nothing more.
- ``JOURNAL_STREAM`` naming the very file stdout is (systemd's StandardOutput=journal): every
  line starts with its ``<N>`` priority; naming anything else, or unset: plain JSON.
- stdout a terminal (a real pty): the console renderer, no JSON.
- Every JSON line has ``logger``.
- A generated LaunchAgent hands its daemon the log file; run as launchd would run it, the
  daemon writes there and launchd's own file (the .err.log) stays empty.

Every wait is for an observed state; the deadlines only bound a failure."""

from __future__ import annotations

import json
import os
import plistlib
import pty
import re
import select
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.units import LaunchAgentPlist
from tests.conftest import FLEET_BIN, NotifySocket, free_port, wait_until
from tests.units_support import gen, layout, load, write_config

pytestmark = pytest.mark.system

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # a line still being written is not one yet
    return [json.loads(x) for x in complete if x.strip()]


def _events(path: Path) -> list[str]:
    return [str(r["event"]) for r in _records(path)]


def _config(path: Path, port: int, extra: str = "") -> Path:
    path.write_text(
        '[fleet]\nlog_file = "<root>/logs/{daemon}.log"\n'
        f"{extra}"
        f"[claim_sweeper]\nmetrics_port = {port}\ninterval_s = 0.2\nbackoff_max_s = 0.5\n"
    )
    return path


def _start(
    env: dict[str, str], cwd: Path, ns: NotifySocket, config: Path, **extra_env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper", "--config", str(config)],
        env={**env, "NOTIFY_SOCKET": ns.path, **extra_env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("no exit within 30 s of SIGTERM")
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def test_rotated_then_sighup_the_next_line_lands_in_the_new_file(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    log = fleet_root / "logs" / "claim-sweeper.log"
    rotated = log.with_name("claim-sweeper.log.0")
    proc = _start(fleet_env, tmp_path, notify_socket, _config(tmp_path / "fleet.toml", free_port()))
    try:
        assert notify_socket.wait_for("READY=1", timeout=20), notify_socket.messages
        assert wait_until(lambda: "daemon started" in _events(log), timeout=10)
        assert oct(log.stat().st_mode & 0o777) == oct(0o600)
        log.rename(rotated)  # newsyslog: rename, then signal the process
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: notify_socket.count("READY=1") >= 2, timeout=30)
        assert wait_until(lambda: "reloaded" in _events(log), timeout=10)
    finally:
        code, out, _err = _stop(proc)
    assert code == 0
    assert out == "", "with a log file, nothing goes to stdout"
    new = _events(log)
    assert new[0] == "reload requested", new
    assert new[-1] == "stopped"
    old = _events(rotated)
    assert "daemon started" in old and "reload requested" not in old
    assert all(r["logger"] for r in _records(log) + _records(rotated))


def test_rotated_without_a_signal_the_daemon_moves_to_the_new_file(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """A database that is not one makes every cycle fail; at debug each retry logs a line, so
    the daemon writes steadily while the file is rotated under it."""
    bad_db = tmp_path / "not-a-db.db"
    bad_db.write_bytes(b"this is not an sqlite database" * 100)
    log = fleet_root / "logs" / "claim-sweeper.log"
    rotated = log.with_name("claim-sweeper.log.0")
    config = _config(
        tmp_path / "fleet.toml",
        free_port(),
        extra=f'log_level = "debug"\n[mission_control]\ndb = "{bad_db}"\n',
    )
    proc = _start(fleet_env, tmp_path, notify_socket, config)
    try:
        assert wait_until(lambda: _events(log).count("cycle still failing") >= 2, timeout=20)
        log.rename(rotated)
        assert wait_until(lambda: len(_events(log)) >= 1, timeout=10), "never moved"
        # Moved: from now on only the new file grows.
        size = rotated.stat().st_size
        have = len(_events(log))
        assert wait_until(lambda: len(_events(log)) >= have + 3, timeout=10)
        assert rotated.stat().st_size == size
        assert proc.poll() is None
    finally:
        code, out, _err = _stop(proc)
    assert code == 0 and out == ""
    assert "reload requested" not in _events(log) + _events(rotated)
    assert _events(log)[-1] == "stopped"
    assert all(r["logger"] and r["daemon"] == "claim-sweeper" for r in _records(log))


def _once_failing(
    env: dict[str, str], tmp_path: Path, stdout: Any, stderr: Any, **extra_env: str
) -> int:
    bad_db = tmp_path / "not-a-db.db"
    bad_db.write_bytes(b"this is not an sqlite database" * 100)
    return subprocess.run(
        [str(FLEET_BIN), "run", "claim-sweeper", "--once"],
        env={**env, "FLEET_MISSION_CONTROL__DB": str(bad_db), **extra_env},
        cwd=tmp_path,
        stdout=stdout,
        stderr=stderr,
        timeout=60,
        check=False,
    ).returncode


@pytest.mark.parametrize("journal", ["this-stream", "other-file", "unset"])
def test_journald_priority_prefix_only_on_the_journal_stream(
    fleet_env: dict[str, str], tmp_path: Path, journal: str
) -> None:
    out_path, other = tmp_path / "stream", tmp_path / "other"
    other.write_text("")
    env = {k: v for k, v in fleet_env.items() if k != "JOURNAL_STREAM"}
    with out_path.open("w") as stream:
        st = os.fstat(stream.fileno()) if journal == "this-stream" else other.stat()
        extra = {} if journal == "unset" else {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        # stdout and stderr on one stream, as systemd's StandardOutput=journal does
        code = _once_failing(env, tmp_path, stream, stream, **extra)
    assert code == 1
    lines = out_path.read_text().splitlines()
    assert lines, "the failing cycle is logged"
    if journal == "this-stream":
        assert all(re.match(r"^<[0-7]>\{", line) for line in lines), lines
        by_event = {json.loads(line[3:])["event"]: line[:3] for line in lines}
        assert by_event["cycle failed"] == "<3>"
    else:
        assert all(line.startswith("{") for line in lines), lines
        assert all(json.loads(line)["logger"] for line in lines)


def test_journal_stream_on_stderr_only_does_not_prefix_stdout(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    err_path, out_path = tmp_path / "stderr", tmp_path / "stdout"
    with err_path.open("w") as err, out_path.open("w") as out:
        st = os.fstat(err.fileno())
        code = _once_failing(
            fleet_env, tmp_path, out, err, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"
        )
    assert code == 1
    lines = out_path.read_text().splitlines()
    assert lines and all(line.startswith("{") for line in lines), lines


def test_a_terminal_gets_the_console_renderer(fleet_env: dict[str, str], tmp_path: Path) -> None:
    master, slave = pty.openpty()
    env = {k: v for k, v in fleet_env.items() if k != "JOURNAL_STREAM"}
    bad_db = tmp_path / "not-a-db.db"
    bad_db.write_bytes(b"this is not an sqlite database" * 100)
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", "claim-sweeper", "--once"],
        env={**env, "FLEET_MISSION_CONTROL__DB": str(bad_db), "TERM": "xterm"},
        cwd=tmp_path,
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:  # until the child's end of the pty closes (EIO on Linux), bounded
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "no output on the terminal within 30 s"
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    text = ANSI.sub("", b"".join(chunks).decode())
    lines = [line for line in text.splitlines() if line.strip()]
    assert any("cycle failed" in line and "error" in line for line in lines), text
    assert not any(line.lstrip().startswith("{") for line in lines), text
    assert '"event"' not in text
    assert "daemon=claim-sweeper" in text and "[shared.runner]" in text  # the logger


def test_the_launchagent_hands_the_daemon_its_log_file(
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = write_config(
        tmp_path / "fleet.toml",
        fleet_root,
        fleet='log_file = "<root>/logs/fleet-{daemon}.log"',
        body=f"[claim_sweeper]\nmetrics_port = {free_port()}\ninterval_s = 0.2\n",
    )
    files = gen(load(cfg, monkeypatch), "launchd", layout("user", cfg)).files
    agent = LaunchAgentPlist.model_validate(
        plistlib.loads(files["no.alai.fleet.claim-sweeper.plist"])
    )
    own = fleet_root / "logs" / "fleet-claim-sweeper.log"
    assert agent.EnvironmentVariables["FLEET_FLEET__LOG_FILE"] == str(own)
    err_log = fleet_root / "logs" / "claim-sweeper.err.log"
    assert agent.StandardOutPath == agent.StandardErrorPath == str(err_log)

    # As launchd runs it: its arguments, its environment, stdout and stderr on its file.
    assert agent.ProgramArguments[0] == str(FLEET_BIN)
    plist_env = {k: v for k, v in agent.EnvironmentVariables.items() if k != "PATH"}
    err_log.parent.mkdir(parents=True, exist_ok=True)
    with err_log.open("a") as launchd_file:
        proc = subprocess.Popen(
            agent.ProgramArguments,
            env={**fleet_env, **plist_env, "NOTIFY_SOCKET": notify_socket.path},
            cwd=tmp_path,
            stdout=launchd_file,
            stderr=launchd_file,
        )
    try:
        assert notify_socket.wait_for("READY=1", timeout=20), err_log.read_text()
        assert wait_until(lambda: "daemon started" in _events(own), timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert _events(own)[-1] == "stopped"
    assert err_log.read_text() == ""


@pytest.mark.parametrize("kind", ["directory", "symlink", "unwritable-dir"])
def test_a_log_file_that_cannot_be_opened_exits_78_naming_the_key(
    fleet_env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "logs" / "claim-sweeper.log"
    target.parent.mkdir()
    if kind == "directory":
        target.mkdir()
    elif kind == "symlink":
        target.symlink_to(tmp_path / "elsewhere.log")
    else:
        target.parent.chmod(0o500)
        if os.access(target.parent, os.W_OK):
            pytest.skip("root writes into a read-only directory")
    env = {**fleet_env, "FLEET_FLEET__LOG_FILE": str(tmp_path / "logs" / "{daemon}.log")}
    res = subprocess.run(
        [str(FLEET_BIN), "run", "claim-sweeper"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 78, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"fleet.log_file: {target}" in res.stderr, res.stderr
    assert res.stdout == ""

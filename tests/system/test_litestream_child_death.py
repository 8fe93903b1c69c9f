"""litestream children die with the daemon, even when it is SIGKILLed (Linux: PR_SET_PDEATHSIG
set by util-linux's setpriv, which then execs the program; no Python runs in the child between
fork and exec, and the daemon never loads ctypes for it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemons.restore_loop.litestream import SETPRIV_PATHS, Litestream, LitestreamError, child_death

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux"),
]

HELPER = """
import asyncio, sys
from pathlib import Path
from daemons.restore_loop.litestream import Litestream

async def main():
    ls = Litestream(Path(sys.argv[1]), Path("/dev/null"), call_timeout_s=5, log=None)
    proc = await ls._spawn(["replicate"])
    print(proc.pid, "ctypes" in sys.modules, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"  # killed, not yet reaped by its new parent


def test_a_child_dies_when_the_daemon_is_killed(tmp_path: Path) -> None:
    fake = tmp_path / "litestream"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    daemon = subprocess.Popen(
        [sys.executable, "-c", HELPER, str(fake)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    child = 0
    try:
        assert daemon.stdout is not None
        pid_text, ctypes_loaded = daemon.stdout.readline().split()
        child = int(pid_text)
        assert not gone(child)
        deadline = time.monotonic() + 10
        while "sleep" not in Path(f"/proc/{child}/cmdline").read_bytes().decode():
            assert time.monotonic() < deadline, "the child never became the program"
            time.sleep(0.01)
        if any(os.access(p, os.X_OK) for p in SETPRIV_PATHS):
            assert child_death()[0][1:] == ("--pdeathsig", "KILL", "--")
            assert ctypes_loaded == "False"
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not gone(child):
            assert time.monotonic() < deadline, "the child outlived the killed daemon"
            time.sleep(0.01)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if child and not gone(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize(
    ("content", "mode", "why"),
    [(None, 0, "No such file or directory"), ("#!/bin/sh\n", 0o644, "Permission denied")],
    ids=["missing", "not-executable"],
)
async def test_a_binary_that_cannot_run_is_a_spawn_error(
    tmp_path: Path, content: str | None, mode: int, why: str
) -> None:
    """A litestream gone or not executable when a child is spawned (an upgrade under way) is
    the ``spawn`` error naming it, as before setpriv went in front: never setpriv's exit 127
    with its own text, read as litestream's answer."""
    binary = tmp_path / "litestream"
    if content is not None:
        binary.write_text(content)
        binary.chmod(mode)
    ls = Litestream(binary, tmp_path / "litestream.yml", call_timeout_s=10, log=None)
    follower = ls.start_follower(tmp_path / "a.db", tmp_path / "copy.db", 1.0)
    for call in (ls.version(), follower):
        with pytest.raises(LitestreamError) as caught:
            await call
        assert caught.value.reason == "spawn"
        assert str(caught.value) == f"cannot run {binary}: {why}"

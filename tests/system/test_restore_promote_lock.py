"""Two `fleet restore promote` runs never both promote: the promotion lock
(``<root>/state/restore-loop/promote.lock``, flock, 0600) makes the second refuse with exit 75
naming the holder's pid, and a run that gets the lock after a finished promotion finds the role
already primary. Exactly one promotion record is written. Real subprocesses, a real standby
copy, the real litestream against an empty file replica."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, run_fleet
from tests.fakes.litestream_primary import Primary, Standby

pytestmark = pytest.mark.system

EX_BUSY = 75  # sysexits EX_TEMPFAIL: another promote holds the lock


def _standby(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> Standby:
    primary = Primary(tmp_path / "anvil", ["alpha", "beta"]).create()
    standby = Standby(fleet_env, fleet_root, tmp_path, primary)
    standby.standby_dir.mkdir(parents=True, exist_ok=True)
    for name in ("alpha", "beta"):
        src = sqlite3.connect(primary.db_path(name))
        dst = sqlite3.connect(standby.copy(name))
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # as a restored copy is: no -wal
        finally:
            src.close()
            dst.close()
    return standby


def _records(fleet_root: Path) -> list[dict[str, object]]:
    path = fleet_root / "state/restore-loop/promotions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_held_lock_refuses_a_second_promote_naming_the_holder(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    standby = _standby(fleet_env, fleet_root, tmp_path)
    lock_path = fleet_root / "state/restore-loop/promote.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # This test process is "the first promote": it holds the lock for the whole second run.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        res = run_fleet(["restore", "promote", "--all"], standby.env, tmp_path, timeout=120)
        assert res.returncode == EX_BUSY, res.stdout + res.stderr
        assert f"pid {os.getpid()}" in res.stderr and "Traceback" not in res.stderr
        assert _records(fleet_root) == [], "a refused promote writes no record"
        assert (fleet_root / "state/role").read_text() == "standby\n"
        assert not (fleet_root / "state/restore-loop/fence.json").exists()
    finally:
        os.close(fd)  # releases the flock
    res = run_fleet(["restore", "promote", "--all"], standby.env, tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(_records(fleet_root)) == 1
    assert lock_path.stat().st_mode & 0o777 == 0o600
    again = run_fleet(["restore", "promote", "--all"], standby.env, tmp_path, timeout=120)
    assert again.returncode == 1 and "already primary" in again.stderr
    assert len(_records(fleet_root)) == 1


def test_two_promotes_started_together_write_one_record(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    standby = _standby(fleet_env, fleet_root, tmp_path)
    procs = [
        subprocess.Popen(
            [str(FLEET_BIN), "restore", "promote", "--all"],
            env=standby.env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append((proc.returncode, out, err))
    codes = sorted(code for code, _o, _e in results)
    assert codes[0] == 0 and codes[1] in (1, EX_BUSY), results
    loser = next(r for r in results if r[0] != 0)
    # "held by pid N" (N written just after the lock is taken; a loser waits for it)
    assert "is held by" in loser[2] or "already primary" in loser[2], loser
    records = _records(fleet_root)
    assert len(records) == 1, records
    assert records[0]["role_set"] is True
    assert (fleet_root / "state/role").read_text() == "primary\n"

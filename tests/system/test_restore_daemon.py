"""The restore-loop daemon driven in-process, one cycle at a time, against real `litestream
replicate` primaries (file replicas): a replica that falls behind the copy, a follower supervisor
that dies, a copy path it cannot write, a broken plan file, a torn copy after a follower died,
and a role file that is garbled for one read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from daemons.restore_loop.daemon import RestoreLoop, SetupError
from daemons.restore_loop.promote import Promoter
from daemons.restore_loop.snapshot import snapshot_txid_path
from daemons.restore_loop.state import read_txid_file, write_txid_file
from fleet.config import load_config
from shared.logging import get_logger
from shared.metrics import DaemonMetrics
from shared.notify import Message
from shared.runtime import DaemonContext
from tests.conftest import wait_until
from tests.fakes.litestream_primary import Primary, Standby, count_rows, read_rows

pytestmark = pytest.mark.system


class Harness:
    def __init__(self, loop: RestoreLoop, sent: list[Message], standby: Standby) -> None:
        self.loop = loop
        self.sent = sent
        self.standby = standby

    async def cycles_until(self, cond: Callable[[], bool], max_cycles: int = 80) -> bool:
        """Run cycles (0.25 s apart) until ``cond``; bounded."""
        for _ in range(max_cycles):
            # "no standby copy is usable" is the cycle's failure report, not the test's.
            with contextlib.suppress(SetupError):
                await self.loop.cycle()
            if cond():
                return True
            await asyncio.sleep(0.25)
        return False

    def row(self, name: str) -> dict[str, Any]:
        return next(r for r in self.loop._status_doc()["databases"] if r["db"] == name)

    def alerts(self, kind: str) -> list[Message]:
        return [m for m in self.sent if m.dedup_key.startswith(f"restore-{kind}:")]


def make_loop(standby: Standby, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Harness:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    for key, value in standby.env.items():
        if key.startswith("FLEET_") or key in ("HOME", "LITESTREAM_AZURE_ACCOUNT_KEY"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    config = load_config()
    sent: list[Message] = []
    ctx = DaemonContext(
        config=config,
        section=config.restore_loop,
        role="standby",
        log=get_logger(daemon="restore-loop"),
        metrics=DaemonMetrics("restore-loop", "test"),
        outbox=None,
    )

    async def notify(msg: Message) -> bool:
        sent.append(msg)
        return True

    ctx.notify = notify  # type: ignore[method-assign]
    return Harness(RestoreLoop(ctx), sent, standby)


def written_primary(root: Path, rows: int) -> Primary:
    """A primary whose replica holds ``rows`` written rows (plus the seed), then idle."""
    p = Primary(root, ["alpha"]).create()
    p.start_replicate()
    p.start_writer(rate_per_s=50, max_s=rows / 50)
    assert p.writer is not None
    p.writer.wait(timeout=30)
    assert wait_until(lambda: any(p.replica_dir.glob("alpha/ltx/0/*.ltx")), timeout=15)
    return p


@pytest.fixture
async def harness(
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    primary = written_primary(tmp_path / "anvil", 40)
    standby = Standby(fleet_env, fleet_root, tmp_path, primary)
    h = make_loop(standby, monkeypatch, tmp_path)
    await h.loop.open()
    try:
        yield h
    finally:
        await h.loop.close()
        primary.close()


def caught_up(h: Harness) -> bool:
    copy = h.standby.copy("alpha")
    return h.row("alpha")["state"] == "following" and (
        count_rows(copy) == len(h.standby.primary.rows("alpha"))
    )


async def test_replica_behind_the_copy_restarts_fresh_and_alerts_once(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    assert await h.cycles_until(lambda: caught_up(h))
    # Writes spread over several syncs: the copy holds several TXIDs. How many syncs a
    # fixed burst spans depends on the machine's load, so write until the copy has seen them.
    old = h.standby.primary
    old.start_writer(rate_per_s=20, max_s=120)
    assert old.writer is not None
    assert await h.cycles_until(lambda: h.row("alpha")["local_txid"] >= 4, max_cycles=400)
    old.stop_writer()
    assert await h.cycles_until(lambda: caught_up(h))
    old_txid = h.row("alpha")["local_txid"]
    # The replica is recreated: a new primary DB with far fewer transactions takes its place.
    old.stop_replicate()
    fresh = written_primary(tmp_path / "anvil2", 3)
    fresh.stop_replicate()
    shutil.rmtree(old.replica_dir)
    shutil.copytree(fresh.replica_dir, old.replica_dir)
    new_rows = fresh.rows("alpha")
    old_count = count_rows(h.standby.copy("alpha"))
    assert len(new_rows) < old_count

    def restored_from_new_replica() -> bool:
        rows = read_rows(h.standby.copy("alpha"))
        return (
            0 < len(rows) < old_count
            and rows == new_rows[: len(rows)]
            and h.row("alpha")["state"] == "following"
        )

    assert await h.cycles_until(restored_from_new_replica), (h.row("alpha"), old_txid)
    assert await h.cycles_until(
        lambda: h.row("alpha")["local_txid"] < old_txid and not h.row("alpha")["diverged"]
    )
    assert h.loop.dbs["alpha"].restarts.total >= 1
    opened = [m for m in h.alerts("diverged") if not m.dedup_key.endswith(":recovered")]
    assert len(opened) == 1 and "replica TXID" in opened[0].text


async def test_a_dead_supervisor_is_restarted(harness: Harness) -> None:
    h = harness
    assert await h.cycles_until(lambda: caught_up(h))
    st = h.loop.dbs["alpha"]
    assert st.follower is not None and st.task is not None

    async def boom() -> None:
        raise RuntimeError("unexpected")

    # An unexpected error ends the supervisor task; the next cycles start a new one.
    st.follower._start_fresh = boom  # type: ignore[method-assign]
    st.follower.request_restart("stall")
    dead = st.task
    await asyncio.wait({dead}, timeout=15)
    assert dead.done() and isinstance(dead.exception(), RuntimeError)
    assert await h.cycles_until(lambda: h.loop.dbs["alpha"].task is not dead and caught_up(h))
    registry = h.loop.ctx.metrics.registry
    assert (
        registry.get_sample_value(
            "fleet_restore_failures_total", {"db": "alpha", "reason": "supervisor"}
        )
        == 1
    )


async def test_request_restart_terminates_gracefully(harness: Harness) -> None:
    h = harness
    assert await h.cycles_until(lambda: caught_up(h))
    follower = h.loop.dbs["alpha"].follower
    assert follower is not None and follower.proc is not None
    proc = follower.proc
    follower.request_restart("stall")
    await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode != -signal.SIGKILL, "SIGTERM first, so no page write is cut short"


async def test_copy_path_not_writable_is_a_start_failure_not_a_dead_task(
    harness: Harness,
) -> None:
    h = harness
    copy = h.standby.copy("alpha")
    copy.mkdir(parents=True)  # a directory where the copy goes: os.replace fails
    with contextlib.suppress(SetupError):
        await h.loop.cycle()
    st = h.loop.dbs["alpha"]
    assert st.task is not None and not st.task.done()
    assert h.row("alpha")["state"] in ("backoff", "waiting", "restoring")
    assert "cannot place the restore" in h.row("alpha")["last_error"]
    copy.rmdir()
    assert await h.cycles_until(lambda: caught_up(h))


async def test_a_broken_plan_file_keeps_the_previous_plan(harness: Harness) -> None:
    h = harness
    assert await h.cycles_until(lambda: caught_up(h))
    table = h.loop.section.databases_file
    table.write_text("[[databases]\nbroken")
    os.utime(table, (1, 1))
    result = await h.loop.cycle()  # must not raise SetupError
    assert result.detail["dbs"] == 1
    assert h.loop._status_doc()["plan_error"]
    assert h.row("alpha")["state"] == "following"


async def test_a_torn_copy_after_a_follower_died_is_suspect(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    assert await h.cycles_until(lambda: caught_up(h))
    follower = h.loop.dbs["alpha"].follower
    assert follower is not None and follower.pid is not None
    # The replica goes away (so the restart cannot replace the copy) and the copy is torn.
    h.standby.primary.stop_replicate()
    h.standby.primary.replica_dir.rename(tmp_path / "replicas-gone")
    copy = h.standby.copy("alpha")
    data = bytearray(copy.read_bytes())
    data[4096 : 2 * 4096] = b"\x5a" * 4096
    copy.write_bytes(bytes(data))
    os.kill(follower.pid, signal.SIGKILL)
    assert await h.cycles_until(lambda: bool(h.row("alpha")["suspect"]))
    assert await h.cycles_until(lambda: len(h.alerts("suspect")) >= 1)
    await h.cycles_until(lambda: False, max_cycles=4)
    assert len(h.alerts("suspect")) == 1, "one alert per incident"
    h.loop.paths.write_status(h.loop._status_doc())
    loop = h.loop
    target = loop.dbs["alpha"].target
    await loop.close()
    promoter = Promoter(
        loop.section, loop.paths, loop.config.role_file, "testhost", None, log=get_logger()
    )
    report = await promoter.promote([target], catch_up_timeout_s=5, ack_timeout_s=1)
    assert [d.status for d in report.dbs] == ["refused"]
    assert "suspect" in report.dbs[0].reason and not report.role_set


async def test_a_garbled_role_read_does_not_promote(
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary = Primary(tmp_path / "anvil", ["alpha"]).create()
    standby = Standby(fleet_env, fleet_root, tmp_path, primary)
    standby.env["FLEET_FLEET__ROLE"] = "primary"  # the fallback a bad read used to take
    h = make_loop(standby, monkeypatch, tmp_path)
    loop = h.loop
    role = loop.config.role_file
    registry = loop.ctx.metrics.registry
    role.write_text("prim")  # torn mid-write
    for _ in range(3):
        await loop._apply_fence()
    assert not loop._promoted and not loop.is_fenced("alpha")
    assert registry.get_sample_value("fleet_restore_promoted") == 0
    role.write_text("primary\n")
    # Promote cleared its fence already: the role file alone fences every DB at once.
    assert loop.is_fenced("alpha")
    await loop._apply_fence()
    assert not loop._promoted
    await loop._apply_fence()
    assert loop._promoted
    assert registry.get_sample_value("fleet_restore_promoted") == 1


async def test_snapshot_mode_restores_fresh_when_the_replica_is_behind(
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    primary = written_primary(tmp_path / "anvil", 10)
    standby = Standby(fleet_env, fleet_root, tmp_path, primary, mode="snapshot")
    h = make_loop(standby, monkeypatch, tmp_path)
    await h.loop.open()
    try:
        record = snapshot_txid_path(h.loop.work_dir, "alpha")
        assert await h.cycles_until(lambda: read_txid_file(record) is not None)
        replica_txid = read_txid_file(record)
        assert replica_txid is not None
        # The copy's record is far ahead of the replica (replica reset or recreated).
        write_txid_file(record, 10_000)
        inode = standby.copy("alpha").stat().st_ino
        assert await h.cycles_until(lambda: read_txid_file(record) == replica_txid)
        assert standby.copy("alpha").stat().st_ino != inode, "replaced by a fresh restore"
        assert len([m for m in h.alerts("diverged") if "recovered" not in m.text]) == 1
    finally:
        await h.loop.close()
        primary.close()

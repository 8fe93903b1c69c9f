"""Snapshot mode: restore to a temporary file, DELETE journal mode, rename over the copy only when
the restore succeeded and is not older. A reader never sees a partial file; a failed, timed-out
or corrupt restore never touches the good copy. Real litestream, real file replicas."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from daemons.restore_loop.litestream import Litestream, LitestreamError, find_litestream
from daemons.restore_loop.snapshot import SnapshotRestorer, snapshot_txid_path
from daemons.restore_loop.state import RestoreTarget, write_txid_file
from shared.logging import get_logger
from tests.conftest import NotifySocket, free_port, wait_until
from tests.fakes.litestream_primary import Primary, Standby, count_rows, read_rows

pytestmark = pytest.mark.system


@pytest.fixture
def primary(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = Primary(tmp_path / "anvil", ["alpha"]).create()
    p.start_replicate()
    p.start_writer(rate_per_s=20)
    assert wait_until(lambda: any(p.replica_dir.glob("alpha/ltx/0/*.ltx")), timeout=10)
    yield p
    p.close()


def restorer(
    primary: Primary, standby_dir: Path, timeout_s: float = 20.0
) -> tuple[SnapshotRestorer, RestoreTarget]:
    config = standby_dir.parent / "restore.yml"
    primary.write_standby_config(config, standby_dir, ["P0"])
    ls = Litestream(find_litestream(""), config, call_timeout_s=10, log=get_logger())
    target = RestoreTarget("alpha", "P0", standby_dir / "alpha.db", "snapshot", 1.0, 60.0, 60.0)
    work = standby_dir / ".restore-loop"
    return (
        SnapshotRestorer(
            ls, work, restore_timeout_s=timeout_s, log=get_logger(), is_fenced=lambda _n: False
        ),
        target,
    )


async def test_snapshot_restore_replaces_only_with_a_good_newer_copy(
    primary: Primary, tmp_path: Path
) -> None:
    standby_dir = tmp_path / "forge" / "databases"
    standby_dir.mkdir(parents=True)
    snap, target = restorer(primary, standby_dir)
    first = await snap.restore(target)
    assert first.replaced and first.txid >= 1
    header = target.path.read_bytes()[:20]
    assert header[18] == 1 and header[19] == 1, "journal_mode=DELETE in the file header"
    assert target.path.stat().st_mode & 0o777 == 0o600
    assert snap.current_txid(target) == first.txid
    rows = read_rows(target.path)
    assert rows == primary.rows("alpha")[: len(rows)]
    assert sorted(p.name for p in standby_dir.iterdir()) == [".restore-loop", "alpha.db"]
    assert [p.name for p in (standby_dir / ".restore-loop").iterdir()] == ["alpha~snapshot.txid"]

    # Never older than what is there: a copy claiming a future TXID is kept.
    write_txid_file(snapshot_txid_path(snap.work_dir, "alpha"), first.txid + 10_000)
    inode = target.path.stat().st_ino
    kept = await snap.restore(target)
    assert not kept.replaced and target.path.stat().st_ino == inode

    # Timed out mid-restore: the copy is untouched and nothing is left behind.
    write_txid_file(snapshot_txid_path(snap.work_dir, "alpha"), first.txid)
    before = target.path.read_bytes()
    slow, _ = restorer(primary, standby_dir, timeout_s=0.001)
    with pytest.raises(LitestreamError) as info:
        await slow.restore(target)
    assert info.value.reason == "timeout"
    assert target.path.read_bytes() == before
    assert [p.name for p in (standby_dir / ".restore-loop").iterdir()] == ["alpha~snapshot.txid"]


async def test_corrupt_replica_never_replaces_the_copy(primary: Primary, tmp_path: Path) -> None:
    standby_dir = tmp_path / "forge" / "databases"
    standby_dir.mkdir(parents=True)
    snap, target = restorer(primary, standby_dir)
    assert (await snap.restore(target)).replaced
    before = target.path.read_bytes()
    primary.close()  # no more writes or uploads: the replica is what we corrupt
    for ltx in primary.replica_dir.glob("alpha/ltx/*/*.ltx"):
        data = bytearray(ltx.read_bytes())
        data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
        ltx.write_bytes(bytes(data))
    write_txid_file(snapshot_txid_path(snap.work_dir, "alpha"), 0)
    with pytest.raises(LitestreamError):
        await snap.restore(target)
    assert target.path.read_bytes() == before
    assert [p.name for p in (standby_dir / ".restore-loop").iterdir()] == ["alpha~snapshot.txid"]


def test_snapshot_mode_never_shows_a_partial_file(
    primary: Primary,
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
) -> None:
    standby = Standby(
        fleet_env,
        fleet_root,
        tmp_path,
        primary,
        mode="snapshot",
        snapshot_interval_s="0.3",
        check_interval_s="0.3",
    )
    copy = standby.copy("alpha")
    problems: list[str] = []
    inodes: set[int] = set()
    visible: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            visible.update(p.name for p in standby.standby_dir.glob("*"))
            try:
                inode = copy.stat().st_ino
            except FileNotFoundError:
                time.sleep(0.01)
                continue
            try:
                conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True, timeout=5)
                try:
                    check = conn.execute("PRAGMA quick_check").fetchone()[0]
                    n, top = conn.execute("SELECT count(*), max(id) FROM t").fetchone()
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            if check != "ok" or n != top:
                problems.append(f"check={check} rows={n} max_id={top}")
            inodes.add(inode)

    thread = threading.Thread(target=reader, daemon=True)
    standby.start(notify_socket.path, free_port())
    thread.start()
    try:
        assert wait_until(lambda: len(inodes) >= 6, timeout=30), (inodes, problems)
        assert wait_until(lambda: count_rows(copy) >= 40, timeout=20)
    finally:
        stop.set()
        thread.join(timeout=10)
        code, out = standby.stop()
    assert code == 0, out[-2000:]
    assert problems == []
    # Only finished copies are ever visible beside the hidden work dir.
    assert visible <= {"alpha.db", ".restore-loop", "alpha.db-journal"}, visible
    row = standby.row("alpha")
    assert row["mode"] == "snapshot" and row["local_txid"] >= 1
    assert '"standby copy replaced by a snapshot restore"' in out

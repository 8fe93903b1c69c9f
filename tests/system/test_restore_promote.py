"""`fleet restore promote`: the failover step, against a live restore-loop following a primary that
is still being written. The promoted DB is writable and holds a prefix of the primary's rows
(nothing invented, nothing reordered); a DB that fails integrity is refused, with the reason.

Every step waits for the state it asserts; the deadlines only bound a failure."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.litestream import Litestream, find_litestream
from daemons.restore_loop.promote import Promoter
from daemons.restore_loop.state import RestoreTarget, StatePaths
from shared.logging import get_logger
from tests.conftest import NotifySocket, free_port, run_fleet, wait_until
from tests.fakes.litestream_primary import Primary, Standby, count_rows, process_exists, read_rows

pytestmark = pytest.mark.system

# Bounds on a failure only: a passing run returns as soon as the state is there.
DEADLINE_S = 120.0


def test_promote_all_while_following(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    primary = Primary(tmp_path / "anvil", ["alpha", "beta"], tiers={"beta": "P1"}).create()
    primary.start_replicate()
    primary.start_writer(rate_per_s=20)
    standby = Standby(fleet_env, fleet_root, tmp_path, primary)
    try:
        standby.start(notify_socket.path, free_port())
        for name in ("alpha", "beta"):
            assert wait_until(lambda n=name: count_rows(standby.copy(n)) >= 30, timeout=DEADLINE_S)
        # The follower PIDs come from the one status snapshot that showed both running (a
        # second read could catch a follower between restarts).
        followers: list[int] = []

        def both_following() -> bool:
            rows = standby.status().get("databases") or []
            pids = [r.get("follower_pid") for r in rows]
            if len(rows) != 2 or not all(isinstance(p, int) for p in pids):
                return False
            followers[:] = pids
            return True

        assert wait_until(both_following, timeout=DEADLINE_S), standby.status()

        res = run_fleet(
            ["restore", "promote", "--all", "--ack-timeout", "120"],
            standby.env,
            tmp_path,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert "RPO" in res.stdout and "RTO" in res.stdout
        assert res.stdout.count("promoted:") == 2
        assert "role set to primary" in res.stdout
        # The primary's units are generated per role: the next step is named.
        assert "fleet units install --now" in res.stdout
        assert (fleet_root / "state" / "role").read_text().strip() == "primary"
        # The running daemon acknowledged the fence and stopped its followers for good.
        assert "did not acknowledge" not in res.stdout
        assert wait_until(lambda: not any(process_exists(p) for p in followers), timeout=DEADLINE_S)
        assert wait_until(lambda: standby.status().get("promoted") is True, timeout=DEADLINE_S)

        records = [
            json.loads(line)
            for line in (fleet_root / "state/restore-loop/promotions.jsonl")
            .read_text()
            .splitlines()
        ]
        assert len(records) == 1 and records[0]["role_set"] is True
        assert records[0]["daemon_acknowledged"] is True
        by_db = {d["db"]: d for d in records[0]["dbs"]}
        assert set(by_db) == {"alpha", "beta"}
        for d in by_db.values():
            assert d["status"] == "promoted" and d["integrity"] == "ok"
            assert d["rpo_s"] is not None and d["rto_s"] is not None
        assert (fleet_root / "state/restore-loop/promotions.jsonl").stat().st_mode & 0o777 == 0o600
        primary.stop_writer()
        for name in ("alpha", "beta"):
            promoted = read_rows(standby.copy(name))
            source = primary.rows(name)
            assert promoted == source[: len(promoted)], f"{name}: not a prefix of the primary"
            assert len(promoted) >= 30
            conn = sqlite3.connect(standby.copy(name), timeout=30)
            try:
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                conn.execute("INSERT INTO t(ts, payload) VALUES (0, 'written after failover')")
                conn.commit()
            finally:
                conn.close()
            leftovers = list((standby.standby_dir / ".restore-loop").glob(f"{name}~*"))
            assert leftovers == [], "sidecars removed: an ordinary SQLite DB"
        # Promoted files are never touched again: a second run refuses (role primary).
        again = run_fleet(["run", "restore-loop", "--once"], standby.env, tmp_path)
        assert again.returncode == 78
        assert standby.proc is not None and standby.proc.poll() is None
    finally:
        try:
            code, out = standby.stop()
        finally:
            primary.close()
    assert code == 0, out[-2000:]


def test_promote_refuses_a_corrupt_copy_and_keeps_the_role(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    primary = Primary(tmp_path / "anvil", ["alpha", "beta"]).create()
    primary.start_replicate()
    primary.start_writer(rate_per_s=50, max_s=2)
    assert primary.writer is not None
    primary.writer.wait(timeout=30)
    standby = Standby(fleet_env, fleet_root, tmp_path, primary)
    try:
        assert wait_until(
            lambda: (
                run_fleet(["run", "restore-loop", "--once"], standby.env, tmp_path).returncode == 0
                and count_rows(standby.copy("beta")) == len(primary.rows("beta"))
            ),
            timeout=DEADLINE_S,
        )
    finally:
        primary.close()
    # ANVIL and its replica are gone (no catch-up possible); beta's copy is damaged.
    primary.replica_dir.rename(tmp_path / "replicas-gone")
    data = bytearray(standby.copy("beta").read_bytes())
    assert len(data) >= 3 * 4096
    data[4096 : 2 * 4096] = b"\x5a" * 4096
    standby.copy("beta").write_bytes(bytes(data))

    unknown = run_fleet(["restore", "promote", "nope"], standby.env, tmp_path)
    assert unknown.returncode == 2 and "unknown DB" in unknown.stderr  # not found
    usage = run_fleet(["restore", "promote"], standby.env, tmp_path)
    assert usage.returncode == 64

    res = run_fleet(["restore", "promote", "--all", "--json"], standby.env, tmp_path, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    by_db = {d["db"]: d for d in report["dbs"]}
    assert by_db["alpha"]["status"] == "promoted"
    assert by_db["beta"]["status"] == "refused"
    assert "integrity check failed" in by_db["beta"]["reason"]
    assert (
        by_db["alpha"]["catch_up"].startswith("skipped")
        or "not needed" in by_db["alpha"]["catch_up"]
    )
    assert report["role_set"] is False and report["refused"] == ["beta"]
    assert (fleet_root / "state" / "role").read_text().strip() == "standby"
    assert not (fleet_root / "state/restore-loop/fence.json").exists()
    rows = read_rows(standby.copy("alpha"))
    assert rows == primary.rows("alpha")[: len(rows)]


async def test_promote_refuses_a_copy_ahead_of_its_replica(tmp_path: Path) -> None:
    """The replica was reset or recreated (its newest TXID is behind the copy's): the copy's
    age is unknown and no catch-up is possible, so promote refuses unless --allow-partial."""
    primary = Primary(tmp_path / "anvil", ["alpha"]).create()
    primary.start_replicate()
    try:
        assert wait_until(
            lambda: any(primary.replica_dir.glob("alpha/ltx/0/*.ltx")), timeout=DEADLINE_S
        )
        standby_dir = tmp_path / "forge" / "databases"
        standby_dir.mkdir(parents=True)
        config = tmp_path / "forge" / "restore.yml"
        primary.write_standby_config(config, standby_dir, ["P0"])
        section = RestoreLoopSection(standby_dir=standby_dir, config_path=config)
        ls = Litestream(find_litestream(""), config, call_timeout_s=60, log=get_logger())
        target = RestoreTarget("alpha", "P0", standby_dir / "alpha.db", "follow", 1.0, 60, 60)
        await ls.restore(target.path, target.path, integrity="quick", timeout_s=DEADLINE_S)
        paths = StatePaths(tmp_path / "state")
        # The daemon's last status: the copy held TXID 10000, far past the replica's newest.
        paths.write_status({"databases": [{"db": "alpha", "local_txid": 10_000}]})
        promoter = Promoter(section, paths, tmp_path / "role", "testhost", ls, log=get_logger())
        refused = await promoter.promote([target], catch_up_timeout_s=DEADLINE_S, set_role=False)
        assert [d.status for d in refused.dbs] == ["refused"]
        assert "behind the copy" in refused.dbs[0].reason
        assert "--allow-partial" in refused.dbs[0].reason
        forced = await promoter.promote(
            [target], catch_up_timeout_s=DEADLINE_S, set_role=False, allow_partial=True
        )
        assert [d.status for d in forced.dbs] == ["promoted"]
        assert any("RPO unknown" in n for n in forced.dbs[0].notes)
    finally:
        primary.close()

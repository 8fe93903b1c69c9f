"""`fleet restore promote`: the failover step, against a live restore-loop following a primary that
is still being written. The promoted DB is writable and holds a prefix of the primary's rows
(nothing invented, nothing reordered); a DB that fails integrity is refused, with the reason."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import NotifySocket, free_port, run_fleet, wait_until
from tests.fakes.litestream_primary import Primary, Standby, count_rows, process_exists, read_rows

pytestmark = pytest.mark.system


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
            assert wait_until(lambda n=name: count_rows(standby.copy(n)) >= 30, timeout=20)
        assert wait_until(
            lambda: all(r.get("follower_pid") for r in standby.status()["databases"]), timeout=20
        )
        followers = [int(r["follower_pid"]) for r in standby.status()["databases"]]

        res = run_fleet(["restore", "promote", "--all"], standby.env, tmp_path, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "RPO" in res.stdout and "RTO" in res.stdout
        assert res.stdout.count("promoted:") == 2
        assert "role set to primary" in res.stdout
        assert (fleet_root / "state" / "role").read_text().strip() == "primary"
        # The running daemon acknowledged the fence and stopped its followers for good.
        assert "did not acknowledge" not in res.stdout
        assert wait_until(lambda: not any(process_exists(p) for p in followers), timeout=10)
        assert wait_until(lambda: standby.status().get("promoted") is True, timeout=10)

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
            conn = sqlite3.connect(standby.copy(name), timeout=5)
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
        code, out = standby.stop()
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
            timeout=30,
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
    assert unknown.returncode == 64 and "unknown DB" in unknown.stderr
    usage = run_fleet(["restore", "promote"], standby.env, tmp_path)
    assert usage.returncode == 64

    res = run_fleet(["restore", "promote", "--all", "--json"], standby.env, tmp_path, timeout=60)
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

"""`fleet dr drill` on a real pair: litestream replicating to Azurite, restore-loop following on
the standby, heartbeat watching the primary (a fake /health standing in for the remote host).

One replica missing: the drill fails naming that DB (exit 1), the evidence says so, and
heartbeat exports ``fleet_dr_drill_db_ok{db}`` 0 with no success time. Once the replica exists
and the standby follows it, the drill passes, writes its JSON and Markdown evidence (0600) with
the acceptance table, and the success time is exported. A corrupted replica (file replica,
every LTX file overwritten) fails the drill naming that DB.

Every step waits for the state it asserts; the deadlines only bound a failure."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.conftest import NotifySocket, free_port, run_fleet, wait_until
from tests.fakes.azurite import Azurite
from tests.fakes.litestream_primary import Primary, Standby, count_rows, metric_value
from tests.fakes.peer import FakePeer
from tests.heartbeat_support import HeartbeatProcess, write_config

pytestmark = pytest.mark.system

DEADLINE_S = 120.0


def _routing(path: Path) -> Path:
    doc = {
        "ollamaHosts": {
            "anvil": {"url": "http://127.0.0.1:9", "role": "infra"},
            "forge": {"url": "http://127.0.0.1:9", "role": "compute"},
        },
        "failoverRules": {
            "anvil-down": {"redirect_anvil_tiers": ["1", "2"], "to_forge_models": {"m": "m"}}
        },
    }
    path.write_text(json.dumps(doc))
    return path


def _drill_env(standby: Standby, tmp_path: Path, config: Path) -> dict[str, str]:
    env = dict(standby.env)
    env["FLEET_FLEET__HOST"] = "forge"
    env["FLEET_CONFIG"] = str(config)
    env["FLEET_OLLAMA_HEALTH__TIER_ROUTING_FILE"] = str(_routing(tmp_path / "tier-routing.json"))
    return env


def test_drill_fails_on_a_missing_replica_then_passes(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    azurite = Azurite(tmp_path / "azurite").start()
    primary: Primary | None = None
    standby: Standby | None = None
    try:
        azurite.create_container("backups")
        names = ["alpha", "beta", "gamma"]
        primary = Primary(tmp_path / "anvil", names, abs_endpoint=azurite.endpoint).create()
        primary.start_replicate(only=["alpha", "beta"])  # gamma's replica does not exist yet
        primary.start_writer(rate_per_s=10, only=["alpha", "beta"])
        standby = Standby(fleet_env, fleet_root, tmp_path, primary)
        standby.start(notify_socket.path, free_port())
        for name in ("alpha", "beta"):
            assert wait_until(lambda n=name: count_rows(standby.copy(n)) >= 20, timeout=DEADLINE_S)

        with FakePeer(role="primary") as anvil:
            config = tmp_path / "fleet.toml"
            hb = HeartbeatProcess({**standby.env, "FLEET_FLEET__HOST": "forge"}, tmp_path, config)
            peer = {"name": "anvil", "url": anvil.health_url, "interval_s": 0.2, "timeout_s": 5}
            write_config(config, heartbeat={"interval_s": 0.2}, peers=[peer])
            env = _drill_env(standby, tmp_path, config)
            with hb:
                assert wait_until(lambda: len(anvil.requests) >= 3, timeout=DEADLINE_S)
                assert wait_until(
                    lambda: (fleet_root / "state/heartbeats/heartbeat.json").exists(),
                    timeout=DEADLINE_S,
                )

                # 1. gamma has no replica: the drill fails naming it.
                res = run_fleet(["dr", "drill", "--table", "alpha:t"], env, tmp_path, timeout=300)
                assert res.returncode == 1, res.stdout + res.stderr
                assert "FAILED DB gamma: replica missing" in res.stdout
                record = json.loads((fleet_root / "state/dr/last-drill.json").read_text())
                assert record["passed"] is False and record["failed_dbs"] == ["gamma"]
                assert record["last_success_at"] == 0

                def exported(db: str, value: float) -> bool:
                    text = hb.metrics()
                    return metric_value(text, "fleet_dr_drill_db_ok", db=db) == value

                assert wait_until(lambda: exported("gamma", 0), timeout=DEADLINE_S)
                text = hb.metrics()
                assert metric_value(text, "fleet_dr_drill_db_ok", db="alpha") == 1
                assert metric_value(text, "fleet_dr_drill_last_success_timestamp_seconds") == 0
                assert metric_value(text, "fleet_dr_drill_expected") == 1
                assert metric_value(text, "fleet_dr_drill_passed") == 0
                assert metric_value(text, "fleet_dr_drill_criterion_ok", criterion="p0_count") == 0

                # 2. gamma replicates and the standby follows it: the drill passes.
                primary.start_replicate(only=["gamma"])
                primary.stop_writer()
                primary.start_writer(rate_per_s=10)
                assert wait_until(
                    lambda: count_rows(standby.copy("gamma")) >= 10, timeout=DEADLINE_S
                )
                res = run_fleet(
                    ["dr", "drill", "--table", "alpha:t", "--json"], env, tmp_path, timeout=300
                )
                assert res.returncode == 0, res.stdout + res.stderr
                report = json.loads(res.stdout)
                assert report["passed"] is True and report["failed_dbs"] == []
                by_db = {d["db"]: d for d in report["dbs"]}
                assert set(by_db) == set(names)
                for d in by_db.values():
                    assert d["ok"] and d["integrity"] == "ok"
                    assert d["restored_txid"] >= d["replica_txid"] >= 1
                    assert d["standby_txid"] is not None
                    assert d["restored_txid"] >= d["standby_txid"]
                assert by_db["alpha"]["prefix_ok"] is True
                assert by_db["alpha"]["standby_rows"] >= 20
                assert by_db["alpha"]["restored_rows"] >= by_db["alpha"]["standby_rows"]
                crit = {c["key"]: c for c in report["criteria"]}
                assert crit["p0_count"]["ok"] and "3 of 3" in crit["p0_count"]["measured"]
                assert crit["routing"]["ok"] and "1->forge" in crit["routing"]["measured"]
                assert crit["alert_path"]["ok"], crit["alert_path"]
                assert crit["no_loss_on_restart"]["ok"] is None
                md = Path(report["evidence"]["markdown"])
                for path in (md, Path(report["evidence"]["json"])):
                    assert stat.S_IMODE(path.stat().st_mode) == 0o600
                text_md = md.read_text()
                assert "| P0 DB count on FORGE |" in text_md and "PASS" in text_md
                assert "litestream restore" in text_md
                assert not list((fleet_root / "state/dr").glob("scratch-*"))
                assert wait_until(lambda: exported("gamma", 1), timeout=DEADLINE_S)
                text = hb.metrics()
                last = metric_value(text, "fleet_dr_drill_last_success_timestamp_seconds")
                assert last is not None and last > 0
                assert metric_value(text, "fleet_dr_drill_passed") == 1
        # The drill touched nothing: restore-loop still follows every DB.
        assert standby.proc is not None and standby.proc.poll() is None
        assert len(list((fleet_root / "state/dr/drills").glob("drill-*.md"))) >= 1
    finally:
        try:
            if standby is not None and standby.proc is not None:
                standby.stop()
        finally:
            if primary is not None:
                primary.close()
            azurite.stop()


def test_drill_names_a_corrupted_replica(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    primary = Primary(tmp_path / "anvil", ["alpha", "beta"]).create()
    try:
        primary.start_replicate()
        primary.start_writer(rate_per_s=50, max_s=2)
        assert primary.writer is not None
        primary.writer.wait(timeout=30)
        ltx = lambda n: sorted((primary.replica_dir / n).rglob("*.ltx"))  # noqa: E731
        assert wait_until(lambda: len(ltx("alpha")) >= 2 and len(ltx("beta")) >= 2, timeout=60)
        primary.stop_replicate()
        for path in ltx("beta"):
            path.write_bytes(b"\xde\xad" * max(1, path.stat().st_size // 2))
        standby = Standby(fleet_env, fleet_root, tmp_path, primary)
        env = {**standby.env, "FLEET_FLEET__HOST": "forge"}
        env["FLEET_OLLAMA_HEALTH__TIER_ROUTING_FILE"] = str(_routing(tmp_path / "t.json"))
        res = run_fleet(["dr", "drill", "--json"], env, tmp_path, timeout=300)
        assert res.returncode == 1, res.stdout + res.stderr
        report = json.loads(res.stdout)
        assert report["failed_dbs"] == ["beta"], report["dbs"]
        beta = next(d for d in report["dbs"] if d["db"] == "beta")
        assert beta["problem"]
        record = json.loads((fleet_root / "state/dr/last-drill.json").read_text())
        assert record["failed_dbs"] == ["beta"] and record["passed"] is False
    finally:
        primary.close()

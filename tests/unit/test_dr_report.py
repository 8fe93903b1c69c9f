"""The drill's acceptance table (fleet.dr_report.criteria_for), its summary record and
heartbeat's export of it: pure functions of plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from daemons.heartbeat.drill_metrics import DrillMetrics
from fleet.dr_checks import Check
from fleet.dr_report import criteria_for
from shared.dr_record import DrillRecord, read_drill_record, write_drill_record
from shared.roles import Role


def _db(name: str, ok: bool = True, lag: float = 0.5) -> dict[str, Any]:
    return {
        "db": name,
        "tier": "P0",
        "ok": ok,
        "restored_txid": 10,
        "replica_txid": 10,
        "standby_lag_s": lag,
        "problem": "" if ok else "replica missing",
    }


def _crit(dbs: list[dict[str, Any]], expected: int = 2, rehearsal: float = 3.0) -> dict[str, Any]:
    ok = Check("routing", True, "anvil down: 1->forge")
    watch = Check("peer_watch", True, "live", {"alert_latency_bound_s": 130.0})
    return {
        c.key: c.ok
        for c in criteria_for(
            dbs=dbs,
            p0_expected=expected,
            rehearsal_wall_s=rehearsal,
            cli_wall_s=0.5,
            routing=ok,
            peer_watch=watch,
        )
    }


def test_a_healthy_drill_meets_every_criterion() -> None:
    crit = _crit([_db("a"), _db("b")])
    assert crit == {
        "alert_path": True,
        "rpo": True,
        "rto": True,
        "p0_count": True,
        "routing": True,
        "no_loss_on_restart": None,
    }


def test_a_failed_db_or_a_missing_p0_or_lag_fails_criteria() -> None:
    assert _crit([_db("a"), _db("b", ok=False)])["p0_count"] is False
    assert _crit([_db("a")], expected=2)["p0_count"] is False  # one P0 DB not drilled
    assert _crit([_db("a"), _db("b", lag=75.0)])["rpo"] is False
    assert _crit([_db("a"), _db("b")], rehearsal=400.0)["rto"] is False


def test_a_failed_drill_keeps_the_last_success(tmp_path: Path) -> None:
    write_drill_record(tmp_path, DrillRecord(run_at=100.0, passed=True, last_success_at=100.0))
    failed = write_drill_record(
        tmp_path, DrillRecord(run_at=200.0, passed=False, failed_dbs=("gamma",))
    )
    assert failed.last_success_at == 100.0
    assert read_drill_record(tmp_path) == failed
    (tmp_path / "dr/last-drill.json").write_text('{"run_at": "x"}')
    assert read_drill_record(tmp_path) is None


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gauges: dict[str, Gauge] = {}

    def gauge(self, name: str) -> Gauge:
        labels = {"fleet_dr_drill_criterion_ok": ["criterion"], "fleet_dr_drill_db_ok": ["db"]}
        if name not in self.gauges:
            self.gauges[name] = Gauge(name, name, labels.get(name, []), registry=self.registry)
        return self.gauges[name]


def test_heartbeat_exports_the_record() -> None:
    m = _Metrics()
    drill = DrillMetrics(m)
    drill.export(None, Role.STANDBY)
    value = m.registry.get_sample_value
    assert value("fleet_dr_drill_expected") == 1
    assert value("fleet_dr_drill_last_success_timestamp_seconds") == 0
    record = DrillRecord(
        run_at=50.0,
        passed=False,
        last_success_at=10.0,
        criteria={"p0_count": False},
        failed_dbs=("gamma",),
        dbs=("alpha", "gamma"),
    )
    drill.export(record, Role.PRIMARY)
    assert value("fleet_dr_drill_expected") == 0
    assert value("fleet_dr_drill_db_ok", {"db": "gamma"}) == 0
    assert value("fleet_dr_drill_db_ok", {"db": "alpha"}) == 1
    assert value("fleet_dr_drill_criterion_ok", {"criterion": "p0_count"}) == 0
    assert value("fleet_dr_drill_last_success_timestamp_seconds") == 10.0
    drill.export(
        DrillRecord(run_at=60.0, passed=True, last_success_at=60.0, dbs=("alpha",)), Role.STANDBY
    )
    assert value("fleet_dr_drill_db_ok", {"db": "gamma"}) is None  # old labels cleared

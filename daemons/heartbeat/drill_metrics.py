"""heartbeat's export of the last DR drill (``shared.dr_record``) as ``fleet_dr_drill_*`` gauges,
so Prometheus alerts when no drill passed in 30 days or the last one failed, naming the DB.

A thin view over the record: it must never run a drill or write the record. A standby is expected
to drill (``fleet_dr_drill_expected`` 1) and reports 0 as its last success until one passes; a
primary reports what it has (usually nothing) and is not expected to drill.
"""

from __future__ import annotations

from typing import Any

from shared.dr_record import DrillRecord
from shared.roles import Role

__all__ = ["DrillMetrics"]


class DrillMetrics:
    def __init__(self, metrics: Any) -> None:
        self.m_expected = metrics.gauge("fleet_dr_drill_expected")
        self.m_last_success = metrics.gauge("fleet_dr_drill_last_success_timestamp_seconds")
        self.m_last_run = metrics.gauge("fleet_dr_drill_last_run_timestamp_seconds")
        self.m_passed = metrics.gauge("fleet_dr_drill_passed")
        self.m_criterion = metrics.gauge("fleet_dr_drill_criterion_ok")
        self.m_db = metrics.gauge("fleet_dr_drill_db_ok")
        self._shown: DrillRecord | None = None

    def export(self, record: DrillRecord | None, role: Role) -> None:
        self.m_expected.set(1 if role is Role.STANDBY else 0)
        if record == self._shown:
            return
        self._shown = record
        self.m_criterion.clear()
        self.m_db.clear()
        if record is None:
            self.m_last_success.set(0)
            self.m_last_run.set(0)
            self.m_passed.set(0)
            return
        self.m_last_success.set(record.last_success_at)
        self.m_last_run.set(record.run_at)
        self.m_passed.set(1 if record.passed else 0)
        for name, ok in record.criteria.items():
            self.m_criterion.labels(name).set(1 if ok else 0)
        failed = set(record.failed_dbs)
        for db in (*record.dbs, *failed):
            self.m_db.labels(db).set(0 if db in failed else 1)

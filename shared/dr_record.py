"""The DR drill's summary record, ``<state>/dr/last-drill.json``: when the last drill ran, whether
it passed, when one last passed, each acceptance criterion's verdict and the DBs that failed.

`fleet dr drill` writes it (atomic, 0600) beside its full evidence reports; the heartbeat daemon
reads it to export ``fleet_dr_drill_*`` so Prometheus can alert when no drill passed in 30 days.
This module is the one reader and writer; a garbled record reads as "no drill ever ran", and it
must never hold a secret or a raw address (DB names and verdicts only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DR_DIR", "DrillRecord", "drill_record_path", "read_drill_record", "write_drill_record"]

DR_DIR = "dr"
_RECORD = "last-drill.json"
_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class DrillRecord:
    run_at: float
    passed: bool
    #: when a drill last passed (0.0: never)
    last_success_at: float = 0.0
    criteria: dict[str, bool] = field(default_factory=dict)
    failed_dbs: tuple[str, ...] = ()
    dbs: tuple[str, ...] = ()
    report: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_at": self.run_at,
            "passed": self.passed,
            "last_success_at": self.last_success_at,
            "criteria": dict(self.criteria),
            "failed_dbs": list(self.failed_dbs),
            "dbs": list(self.dbs),
            "report": self.report,
        }

    @classmethod
    def from_json(cls, raw: Any) -> DrillRecord | None:
        if not isinstance(raw, dict):
            return None
        run_at, passed, last = raw.get("run_at"), raw.get("passed"), raw.get("last_success_at")
        if not isinstance(passed, bool):
            return None
        if not isinstance(run_at, int | float) or not isinstance(last, int | float):
            return None
        if not _finite(run_at) or not _finite(last):
            return None
        criteria = raw.get("criteria")
        crit = (
            {str(k): v for k, v in criteria.items() if isinstance(v, bool)}
            if isinstance(criteria, dict)
            else {}
        )
        return cls(
            run_at=float(run_at),
            passed=passed,
            last_success_at=float(last),
            criteria=crit,
            failed_dbs=_names(raw.get("failed_dbs")),
            dbs=_names(raw.get("dbs")),
            report=str(raw.get("report") or "")[:1000],
        )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v)[:200] for v in value if isinstance(v, str))[:500]


def drill_record_path(state_dir: Path) -> Path:
    return state_dir / DR_DIR / _RECORD


def read_drill_record(state_dir: Path) -> DrillRecord | None:
    """The last drill's record; None when none ran or the file is not a record. Blocking."""
    try:
        with drill_record_path(state_dir).open("rb") as fh:
            data = fh.read(_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > _MAX_BYTES:
        return None
    try:
        return DrillRecord.from_json(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def write_drill_record(state_dir: Path, record: DrillRecord) -> DrillRecord:
    """Write ``record``, carrying the previous ``last_success_at`` over a failed drill."""
    from shared.files import atomic_write_json

    if not record.passed:
        previous = read_drill_record(state_dir)
        if previous is not None and previous.last_success_at > record.last_success_at:
            record = DrillRecord(
                run_at=record.run_at,
                passed=False,
                last_success_at=previous.last_success_at,
                criteria=record.criteria,
                failed_dbs=record.failed_dbs,
                dbs=record.dbs,
                report=record.report,
            )
    atomic_write_json(drill_record_path(state_dir), record.to_json())
    return record

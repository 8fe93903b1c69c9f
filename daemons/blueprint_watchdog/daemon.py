"""The blueprint-watchdog daemon: on its cron schedule (default 02:00 UTC) it scans the roots
for blueprints, DEPLOY-MAPs and ZAKON rules, writes the report atomically, updates the
metrics, and when anything is non-compliant (or the registry is unusable) enqueues exactly one
HiveMind message and one Slack #ops summary for the run (dedup key: host + run date).

The scan itself is inspection.py (pure over the file tree) run in a worker thread. With the
HiveMind DB sink it writes a replicated database, so it refuses to start on a standby. It must
never alert per file, alert when everything is compliant, or write anything in --dry-run.
"""

from __future__ import annotations

import asyncio

from daemons.blueprint_watchdog.config import BlueprintWatchdogSection
from daemons.blueprint_watchdog.findings import Report, alert_text
from daemons.blueprint_watchdog.inspection import ScanSettings, inspect_tree
from daemons.blueprint_watchdog.manifest import MANIFEST
from daemons.blueprint_watchdog.schedule import schedule_period_s
from daemons.blueprint_watchdog.schema import DOC_TYPE_NAMES, REASONS
from shared.config import FleetConfig
from shared.files import atomic_write_json, complete_in_thread
from shared.notify import Message
from shared.runtime import CycleResult, Daemon, DaemonContext

__all__ = ["BlueprintWatchdog", "alert_messages", "scan_settings", "schedule_period_s"]


def scan_settings(config: FleetConfig) -> ScanSettings:
    section = config.section(BlueprintWatchdogSection)
    db = config.mission_control.db
    return ScanSettings(
        roots=tuple(section.roots),
        doc_types=section.doc_types(),
        registry_file=section.registry_file,
        mission_control_db=db,
        exclude_dirs=tuple(section.exclude_dirs),
        max_file_bytes=section.max_file_bytes,
        max_entries=section.max_walk_entries,
        follow_symlinks=section.follow_symlinks,
        follow_outside_roots=section.follow_symlinks_outside_roots,
    )


def alert_messages(
    report: Report, *, ops_channel: str, topic: str, report_path: str, max_files: int
) -> list[Message]:
    """The run's alerts: none when all is compliant, else one Slack #ops summary and one
    HiveMind message, keyed by host and run date so a rerun the same day repeats neither."""
    if not report.needs_alert:
        return []
    text = alert_text(report, report_path=report_path, max_files=max_files)
    key = f"blueprint-watchdog:{report.host}:{report.run_date}"
    severity = "critical" if report.registry_alarm else "warning"
    return [
        Message(
            channel=ops_channel,
            text=text,
            dedup_key=f"{key}:slack",
            kind="alert",
            daemon="blueprint-watchdog",
        ),
        Message(
            channel=topic,
            text=text,
            dedup_key=f"{key}:hivemind",
            kind="alert",
            sink="hivemind",
            daemon="blueprint-watchdog",
            payload={"severity": severity, "source": "blueprint-watchdog"},
        ),
    ]


class BlueprintWatchdog(Daemon[BlueprintWatchdogSection]):
    manifest = MANIFEST

    def __init__(self, ctx: DaemonContext[BlueprintWatchdogSection]) -> None:
        super().__init__(ctx)
        self.schedule = self.section.schedule
        self._period_s = schedule_period_s(self.schedule)
        self._last_state: tuple[int, bool] | None = None
        metrics = self.own_metrics()
        self.m_files = metrics.gauge("fleet_blueprint_files")
        self.m_noncompliant = metrics.gauge("fleet_blueprint_noncompliant")
        self.m_duration = metrics.gauge("fleet_blueprint_scan_duration_seconds")
        self.m_problems = metrics.gauge("fleet_blueprint_scan_problems")
        self.m_registry_ok = metrics.gauge("fleet_zakon_registry_ok")
        for doc_type in DOC_TYPE_NAMES:
            self.m_files.labels(doc_type)
            for reason in REASONS:
                self.m_noncompliant.labels(doc_type, reason)

    @property
    def expected_interval_s(self) -> float:
        return self._period_s

    async def cycle(self) -> CycleResult:
        config = self.ctx.config
        report = await asyncio.to_thread(
            inspect_tree, scan_settings(config), now=self.ctx.clock(), host=config.fleet.host
        )
        self._record_metrics(report)
        report_path = self.section.report_file
        if self.ctx.dry_run:
            self.log.info("dry-run: would write report", path=str(report_path))
        else:
            await complete_in_thread(atomic_write_json, report_path, report.to_json())
        summary = report.summary()
        state = (summary["noncompliant"], report.registry_ok)
        if state != self._last_state:
            log = self.log.warning if report.needs_alert else self.log.info
            log(
                "blueprint scan",
                files=summary["total"],
                noncompliant=summary["noncompliant"],
                by_reason=summary["by_reason"],
                registry_ok=report.registry_ok,
                problems=summary["problems"],
                duration_s=round(report.duration_s, 3),
            )
            self._last_state = state
        for message in alert_messages(
            report,
            ops_channel=config.slack.ops_channel,
            topic=self.section.hivemind_topic,
            report_path=str(report_path),
            max_files=self.section.alert_max_files,
        ):
            await self.ctx.notify(message)
        return CycleResult(detail=summary)

    def _record_metrics(self, report: Report) -> None:
        for doc_type, count in report.files_by_type().items():
            self.m_files.labels(doc_type).set(count)
        counts = report.by_type_reason()
        for doc_type in DOC_TYPE_NAMES:
            for reason in REASONS:
                self.m_noncompliant.labels(doc_type, reason).set(counts.get((doc_type, reason), 0))
        self.m_duration.set(report.duration_s)
        self.m_problems.set(len(report.problems))
        self.m_registry_ok.set(1 if report.registry_ok else 0)

"""The claim-sweeper daemon: each cycle counts held and expired Mission Control leases, alerts
#ops once per lease expired longer than ``alert_after_s``, and with ``auto_release`` releases
expired leases by compare-and-set (a lease extended between read and write is never released).

Mission Control is ``[mission_control] db`` (SQLite) or ``url``/``$ALAI_MC_URL`` (Postgres,
shared by every host: sweepers on two hosts are safe, every release is a CAS).
It must never write mission-control.db on a standby: there it opens the database read-only in
spirit (no create, no migration) and ``auto_release`` refuses to start. It never changes the
schema of an existing ``tasks`` table (mc.js owns it; ``fleet mc migrate`` is the operator's
command); only on a primary with no database at all does it create a fresh one. A lease whose
``lease_until`` cannot be read is alerted once per task and never released.
"""

from __future__ import annotations

import asyncio

from daemons.claim_sweeper.config import ClaimSweeperSection
from daemons.claim_sweeper.manifest import MANIFEST
from daemons.claim_sweeper.policy import alert_due, alert_message, unreadable_message
from shared.cycles import CycleResult
from shared.daemon import Daemon, DaemonContext
from shared.mission_control import LeaseStore, McTarget, open_store
from shared.roles import Role

__all__ = ["ClaimSweeper"]


class ClaimSweeper(Daemon[ClaimSweeperSection]):
    manifest = MANIFEST

    def __init__(self, ctx: DaemonContext[ClaimSweeperSection]) -> None:
        super().__init__(ctx)
        self.store: LeaseStore | None = None
        self._missing_logged = False
        metrics = self.own_metrics()
        self.m_held = metrics.gauge("fleet_claims_held")
        self.m_expired = metrics.gauge("fleet_claims_expired")
        self.m_released = metrics.counter("fleet_claims_released_total")
        self.m_oldest = metrics.gauge("fleet_claims_oldest_expired_age_seconds")

    @property
    def writable(self) -> bool:
        return self.ctx.role is Role.PRIMARY and not self.ctx.dry_run

    def _target(self) -> McTarget:
        section = self.ctx.config.mission_control
        return McTarget.resolve(
            config_url=section.url, config_db=section.db, password_file=section.password_file
        )

    def _open_store(self) -> LeaseStore | None:
        target = self._target()
        if target.path is None:
            # Postgres: a server every host shares. Create the table only where writing is
            # allowed (a primary, not dry-run); elsewhere a missing table fails the cycle.
            return open_store(target, clock=self.ctx.clock, create=self.writable)
        path = target.path
        if not self.writable and not path.exists():
            return None
        fresh = self.writable and not path.exists()
        return open_store(target, clock=self.ctx.clock, create=fresh, migrate=fresh)

    async def cycle(self) -> CycleResult:
        if self.store is None:
            self.store = await asyncio.to_thread(self._open_store)
            if self.store is None:
                if not self._missing_logged:
                    self._missing_logged = True
                    self.log.warning(
                        "mission-control.db not present; nothing to sweep",
                        path=str(self.ctx.config.mission_control.db),
                    )
                for gauge in (self.m_held, self.m_expired, self.m_oldest):
                    gauge.set(0)
                return CycleResult(detail={"held": 0, "expired": 0})
        store = self.store
        try:
            held, expired_count = await asyncio.to_thread(store.lease_counts)
            expired = await asyncio.to_thread(store.expired_leases)
            unreadable = await asyncio.to_thread(store.unreadable_leases)
        except Exception:
            # Reopen next cycle: the file may have been replaced (restore, promotion).
            await asyncio.to_thread(store.close)
            self.store = None
            raise
        self.m_held.set(held)
        self.m_expired.set(expired_count)
        self.m_oldest.set(max((lease.expired_for_s for lease in expired), default=0.0))
        released = 0
        for lease in expired:
            did_release = False
            if self.section.auto_release and self.writable:
                did_release = await asyncio.to_thread(store.release_expired, lease)
                if did_release:
                    released += 1
                    self.m_released.inc()
                    self.log.info(
                        "released expired lease",
                        task_id=lease.id,
                        holder=lease.holder,
                        expired_for_s=round(lease.expired_for_s),
                    )
            if alert_due(lease, self.section.alert_after_s):
                await self.ctx.notify(
                    alert_message(
                        lease,
                        channel=self.ctx.config.slack.ops_channel,
                        host=self.ctx.config.fleet.host,
                        released=did_release,
                    )
                )
        for bad in unreadable:
            await self.ctx.notify(
                unreadable_message(
                    bad, channel=self.ctx.config.slack.ops_channel, host=self.ctx.config.fleet.host
                )
            )
        return CycleResult(
            detail={
                "held": held,
                "expired": expired_count,
                "released": released,
                "unreadable": len(unreadable),
            }
        )

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await asyncio.to_thread(store.close)

"""``fleet dr failback``: the old primary, back after a crash failover, stands down and follows
the new primary. Steps (``<state>/dr/failback.json``, resumable): ``check`` (a peer is primary
under a newer epoch), ``demote`` (role standby), ``stop-writers``, ``set-aside`` (its own DBs
moved to ``<state>/dr/failback-epoch-<N>/``, kept: rows written before it crashed that never
reached the replica are there), ``follow`` (the restore config under the new epoch's path).
Then restore-loop rebuilds the copies from the new primary's replicas, and a planned
``switchover`` moves the role back. It must never delete a DB or touch a replica.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fleet.dr_steps import StepRecord, stop_writers, write_litestream_configs, writers
from fleet.dr_switchover import SwitchoverError, SwitchoverRun
from shared.config import FleetConfig
from shared.dr_record import DR_DIR
from shared.epochs import newer_peer, read_epoch, read_peer_epochs, replication_epoch
from shared.manifest import DaemonManifest
from shared.roles import Role, effective_role, write_role_file

__all__ = ["STEPS", "failback"]

STEPS = ("check", "demote", "stop-writers", "set-aside", "follow")
PLAN = {
    "check": "a peer is primary under a newer epoch than this host's",
    "demote": "write role standby here",
    "stop-writers": "SIGTERM the writer daemons still running here",
    "set-aside": "move this host's DBs (and litestream's local state) aside, kept",
    "follow": "restore config under the new primary's epoch path",
}


def _set_aside(config: FleetConfig, epoch: int) -> dict[str, Any]:
    from daemons.restore_loop.catalog import load_tier_table
    from daemons.restore_loop.config import RestoreLoopSection

    section = config.section(RestoreLoopSection)
    table = load_tier_table(section.databases_file)
    dest = config.state_dir / DR_DIR / f"failback-epoch-{epoch}"
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    moved: list[str] = []
    for db in table.databases:
        base = section.standby_dir / db.file
        for path in (
            base,
            Path(f"{base}-wal"),
            Path(f"{base}-shm"),
            Path(f"{base}-txid"),
            section.standby_dir / f".{db.file}-litestream",
        ):
            if path.exists():
                os.replace(path, dest / path.name)
                moved.append(path.name)
    return {"kept_in": str(dest), "moved": moved}


async def failback(
    config: FleetConfig, manifests: list[DaemonManifest], *, dry_run: bool
) -> SwitchoverRun:
    started = time.monotonic()
    # one record per new epoch: a later failover's failback starts afresh
    seen = newer_peer(None, read_peer_epochs(config.role_file))
    key = f"epoch:{seen.epoch.number}" if seen is not None and seen.epoch else "unknown"
    record = StepRecord(config.state_dir, "failback", key)
    run = SwitchoverRun("failback", [f"{s}: {PLAN[s]}" for s in STEPS])
    if dry_run:
        run.skipped = [s for s in STEPS if record.done(s)]
        return run
    for step in STEPS:
        if record.done(step):
            run.skipped.append(step)
            run.details[step] = record.detail(step)
            continue
        detail: Any
        if step == "check":
            peer = newer_peer(read_epoch(config.role_file), read_peer_epochs(config.role_file))
            if peer is None or peer.epoch is None:
                raise SwitchoverError(
                    "no peer is primary under a newer epoch than this host's (heartbeat must "
                    "have probed it: `fleet heartbeat peers`); nothing to fail back to"
                )
            detail = {"primary": peer.peer, "epoch": peer.epoch.number}
        elif step == "demote":
            if effective_role(config.fleet.role, config.role_file) is Role.PRIMARY:
                write_role_file(config.role_file, Role.STANDBY)
            detail = {"role": "standby"}
        elif step == "stop-writers":
            detail = {"stopped": stop_writers(config, writers(config, manifests))}
        elif step == "set-aside":
            detail = _set_aside(config, int(record.detail("check")["epoch"]))
        else:  # follow
            epoch = replication_epoch(config.role_file, Role.STANDBY)
            paths = write_litestream_configs(config, Role.STANDBY, epoch)
            detail = {"epoch": epoch, "written": [str(p) for p in paths]}
        record.mark(step, detail)
        run.done.append(step)
        run.details[step] = detail
    primary = (record.detail("check") or {}).get("primary", "the primary")
    run.next_steps = [
        "here: fleet units install --now (restore-loop rebuilds the copies from the replicas)",
        "when `fleet restore status` shows every DB current: on "
        f"{primary} `fleet dr switchover --to {config.fleet.host}`, then here the same",
    ]
    run.wall_s = time.monotonic() - started
    return run

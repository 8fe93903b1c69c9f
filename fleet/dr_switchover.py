"""``fleet dr switchover --to HOST``: a planned move of the primary role with no loss, run once on
each host (the old primary first, then HOST), each run printing its plan and doing only the
steps not yet done (``<state>/dr/switchover.json``).

Old primary: ``demote`` (role file standby, so no writer can start again), ``stop-writers``
(SIGTERM the running ones), ``replicated`` (each DB restored from its replica into a scratch
directory until it equals the local DB: the replicas hold the last transaction).
HOST: ``old-primary-down`` (peer watch saw it standby, or the operator says so), ``promote``
(restore-loop's promote with its final catch-up: a new epoch), ``verify`` (each promoted TXID
equals the replica's newest: nothing lost), ``replicate-config`` (litestream YAML under the new
epoch's path). It must never promote while the old primary may still write.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from fleet.dr_steps import StepRecord, db_digest, stop_writers, write_litestream_configs, writers
from shared.config import FleetConfig
from shared.dr_record import DR_DIR
from shared.epochs import read_peer_epochs, replication_epoch
from shared.manifest import DaemonManifest
from shared.roles import Role, effective_role, write_role_file

__all__ = ["NEW_STEPS", "OLD_STEPS", "SwitchoverError", "SwitchoverRun", "switchover"]

OLD_STEPS = ("demote", "stop-writers", "replicated")
NEW_STEPS = ("old-primary-down", "promote", "verify", "replicate-config")
PLAN = {
    "demote": "write role standby on this host (writers refuse to start from now on)",
    "stop-writers": "SIGTERM the writer daemons still running here",
    "replicated": "restore every DB's replica to scratch until it equals the local DB",
    "old-primary-down": "check the old primary is a standby (peer watch), or --old-primary-down",
    "promote": "fleet restore promote --all: final catch-up, integrity, role primary, new epoch",
    "verify": "each promoted DB's TXID equals its replica's newest TXID (RPO 0)",
    "replicate-config": "litestream replicate configs under the new epoch's replica path",
}


class SwitchoverError(Exception):
    """A step cannot be done now; the message says why and what to do."""


@dataclass
class SwitchoverRun:
    side: str  # "old-primary" | "new-primary"
    plan: list[str]
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    next_steps: list[str] = field(default_factory=list)
    wall_s: float = 0.0


async def _replicated(config: FleetConfig, epoch: int, timeout_s: float) -> dict[str, Any]:
    """Restore each DB from its replica until the restored copy equals the local DB."""
    from daemons.restore_loop.catalog import load_tier_table
    from daemons.restore_loop.config import RestoreLoopSection
    from daemons.restore_loop.epoch_paths import with_epoch
    from daemons.restore_loop.litestream import Litestream, LitestreamError, find_litestream
    from daemons.restore_loop.litestream_yaml import render_standby
    from shared.files import atomic_write_text
    from shared.logging import get_logger

    section = config.section(RestoreLoopSection)
    table = with_epoch(load_tier_table(section.databases_file), epoch)
    scratch = config.state_dir / DR_DIR / "switchover-scratch"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = scratch / "restore.yml"
    atomic_write_text(conf, render_standby(table, section.tiers, section.standby_dir).text)
    ls = Litestream(
        find_litestream(section.litestream_bin),
        conf,
        call_timeout_s=section.call_timeout_s,
        log=get_logger(daemon="dr-switchover"),
    )
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    slots = asyncio.Semaphore(section.concurrency)

    async def one(db: Any) -> None:
        local = section.standby_dir / db.file
        if not local.exists():
            out[db.name] = {"equal": None, "note": "no local DB"}
            return
        want = await asyncio.to_thread(db_digest, local)
        attempts = 0
        while True:
            attempts += 1
            restored = scratch / db.file
            restored.unlink(missing_ok=True)
            try:
                async with slots:
                    txid = await ls.restore(
                        local, restored, integrity="quick", timeout_s=section.restore_timeout_s
                    )
                got = await asyncio.to_thread(db_digest, restored)
            except LitestreamError as exc:
                txid, got = None, {"error": str(exc)[:300]}
            if got == want:
                out[db.name] = {"equal": True, "txid": txid, "attempts": attempts, **want}
                return
            if time.monotonic() > deadline:
                raise SwitchoverError(
                    f"{db.name}: the replica still differs from the local DB after "
                    f"{timeout_s:g}s (litestream replicate running? its log?); run again"
                )
            await asyncio.sleep(1.0)

    try:
        await asyncio.gather(*(one(db) for db in table.in_tiers(section.tiers)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(sorted(out.items()))


async def _promote(config: FleetConfig) -> dict[str, Any]:
    from daemons.restore_loop.catalog import load_tier_table
    from daemons.restore_loop.config import RestoreLoopSection
    from daemons.restore_loop.litestream import open_litestream
    from daemons.restore_loop.litestream_yaml import read_restore_config
    from daemons.restore_loop.plan import build_plan
    from daemons.restore_loop.promote import Promoter
    from daemons.restore_loop.state import StatePaths
    from shared.logging import get_logger

    section = config.section(RestoreLoopSection)
    plan = build_plan(
        section, load_tier_table(section.databases_file), read_restore_config(section.config_path)
    )
    log = get_logger(daemon="dr-switchover")
    ls = await open_litestream(
        section.litestream_bin, section.config_path, call_timeout_s=section.call_timeout_s, log=log
    )
    views = {}
    promoter = Promoter(
        section,
        StatePaths.under(config.state_dir),
        config.role_file,
        config.fleet.host,
        ls,
        log=log,
    )
    report = await promoter.promote(
        list(plan.targets), catch_up_timeout_s=section.restore_timeout_s
    )
    if report.refused:
        names = ", ".join(f"{d.db} ({d.reason})" for d in report.refused)
        raise SwitchoverError(f"promote refused: {names}; nothing was switched")
    for target in plan.targets:
        view = await ls.ltx(target.path)
        views[target.name] = view.newest_txid
    dbs = {
        d.db: {"txid": d.local_txid, "replica_txid": views.get(d.db), "catch_up": d.catch_up}
        for d in report.dbs
    }
    return {"epoch": report.epoch, "rto_s": report.rto_s, "dbs": dbs}


def _verify(promoted: dict[str, Any]) -> dict[str, Any]:
    lost = {
        db: row
        for db, row in promoted["dbs"].items()
        if row.get("replica_txid") is not None and row.get("txid") != row.get("replica_txid")
    }
    if lost:
        raise SwitchoverError(f"promoted TXIDs differ from the replicas' newest: {lost}")
    return {"dbs": len(promoted["dbs"]), "rows_lost": 0}


async def switchover(
    config: FleetConfig,
    manifests: list[DaemonManifest],
    to_host: str,
    *,
    old_primary_down: bool,
    dry_run: bool,
    timeout_s: float,
) -> SwitchoverRun:
    started = time.monotonic()
    here = config.fleet.host
    record = StepRecord(config.state_dir, "switchover", f"to:{to_host}")
    steps: tuple[str, ...]
    if here != to_host:
        run = SwitchoverRun("old-primary", [f"{s}: {PLAN[s]}" for s in OLD_STEPS])
        steps = OLD_STEPS
    else:
        run = SwitchoverRun("new-primary", [f"{s}: {PLAN[s]}" for s in NEW_STEPS])
        steps = NEW_STEPS
    if dry_run:
        run.skipped = [s for s in steps if record.done(s)]
        return run
    role = effective_role(config.fleet.role, config.role_file)
    for step in steps:
        if record.done(step):
            run.skipped.append(step)
            run.details[step] = record.detail(step)
            continue
        detail: Any
        if step == "demote":
            if role is not Role.PRIMARY:
                raise SwitchoverError(f"{here} is not the primary ({role}): nothing to hand over")
            epoch = replication_epoch(config.role_file, Role.PRIMARY)
            write_role_file(config.role_file, Role.STANDBY)
            detail = {"epoch": epoch}
        elif step == "stop-writers":
            detail = {"stopped": stop_writers(config, writers(config, manifests))}
        elif step == "replicated":
            epoch = int((record.detail("demote") or {}).get("epoch", 0))
            detail = await _replicated(config, epoch, timeout_s)
        elif step == "old-primary-down":
            detail = _old_primary_down(config, old_primary_down)
        elif step == "promote":
            detail = await _promote(config)
        elif step == "verify":
            detail = _verify(record.detail("promote") or {"dbs": {}})
        else:  # replicate-config
            epoch = int((record.detail("promote") or {}).get("epoch") or 0)
            paths = write_litestream_configs(config, Role.PRIMARY, epoch)
            detail = {"epoch": epoch, "written": [str(p) for p in paths]}
        record.mark(step, detail)
        run.done.append(step)
        run.details[step] = detail
    if run.side == "old-primary":
        run.next_steps = [
            f"on {to_host}: fleet dr switchover --to {to_host}",
            f"then here: fleet dr failback (follow {to_host}'s new epoch)",
        ]
    else:
        run.next_steps = [
            "here: fleet units install --now (writers and litestream replicate start)",
            "on the old primary: fleet dr failback",
        ]
    run.wall_s = time.monotonic() - started
    return run


def _old_primary_down(config: FleetConfig, confirmed: bool) -> dict[str, Any]:
    now = time.time()
    peers = read_peer_epochs(config.role_file)
    live_primaries = [
        p.peer for p in peers.values() if p.role is Role.PRIMARY and now - p.seen_at < 300
    ]
    if live_primaries and not confirmed:
        raise SwitchoverError(
            f"peer(s) {', '.join(live_primaries)} still report primary: run `fleet dr "
            f"switchover --to {config.fleet.host}` there first (or pass --old-primary-down "
            "once you know it stopped writing)"
        )
    if not peers and not confirmed:
        raise SwitchoverError(
            "peer watch has not seen the old primary: pass --old-primary-down once its "
            "switchover run finished (its writers stopped, its replicas hold everything)"
        )
    return {"peers": {p.peer: p.role for p in peers.values()}, "confirmed": confirmed}


def run_lines(run: SwitchoverRun) -> list[str]:
    lines = [f"switchover ({run.side}) plan:"]
    lines += [f"  {i + 1}. {line}" for i, line in enumerate(run.plan)]
    for step in run.skipped:
        lines.append(f"  already done: {step}")
    for step in run.done:
        lines.append(f"  done: {step}: {_short(run.details.get(step))}")
    lines += [f"next: {n}" for n in run.next_steps]
    return lines


def _short(detail: Any) -> str:
    text = str(detail)
    return text if len(text) < 300 else text[:297] + "..."

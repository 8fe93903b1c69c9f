"""``fleet mc``: the Mission Control lease verbs of the seed's claim protocol (claim,
claim-extend, claim-release, claim-status, claim-sweep).

These run inside agents' pre-tool hooks: with ``--db PATH`` they import neither pydantic nor any
daemon. Exit codes: 0 ok, 1 held by another (stderr ``Task <id> held by <actor>:<session> until
<ISO>``), 2 no such task, 3 store error after retries, 64 usage. Nothing here prints a secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shared.cli import config_option, die, load_config_or_exit
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from shared.mission_control import MissionControl

__all__ = ["mc"]

EX_OK, EX_FAIL, EX_NO_TASK, EX_STORE, EX_USAGE = (
    ExitCode.OK,
    ExitCode.FAILURE,
    ExitCode.NO_TASK,
    ExitCode.STORE,
    ExitCode.USAGE,
)
_die = die
_config_option = config_option
_load_config = load_config_or_exit


# mc ----------------------------------------------------------------------------------------
@click.group()
def mc() -> None:
    """Mission Control task leases (the claim protocol)."""


def _db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--db",
        "db_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="mission-control.db (default: [mission_control] db)",
    )(fn)
    return _config_option(fn)


def _lease_store(db_path: str | None, config_path: str | None) -> MissionControl:
    from shared.mission_control import MissionControl, StoreError

    if db_path:
        path = Path(db_path).expanduser()
    elif os.environ.get("FLEET_MISSION_CONTROL__DB") and not config_path:
        path = Path(os.environ["FLEET_MISSION_CONTROL__DB"]).expanduser()
    else:
        path = _load_config(config_path).mission_control.db
    try:
        # Hooks call these verbs before every tool use: a locked database must fail in
        # seconds (1 s busy wait x 3 tries), not stall the session for half a minute.
        return MissionControl(path, create=False, busy_timeout_ms=1000, attempts=3).open()
    except StoreError as exc:
        _die(EX_STORE, f"error: mission control store unavailable: {exc}")


def _enforcing() -> bool:
    return os.environ.get("MC_LEASE_ENFORCE", "1").strip() not in ("0", "false", "no", "off")


def _mc_call(fn: Callable[[], Any]) -> Any:
    from shared.mission_control import LeaseHeld, LeaseNotHeld, NoSuchTask, StoreError

    try:
        return fn()
    except (LeaseHeld, LeaseNotHeld) as exc:
        _die(EX_FAIL, str(exc))
    except NoSuchTask as exc:
        _die(EX_NO_TASK, f"error: {exc}")
    except StoreError as exc:
        _die(EX_STORE, f"error: mission control store unavailable: {exc}")


_actor = click.option("--actor", required=True, help="who holds the lease (e.g. john, pi-orch)")
_session = click.option("--session", required=True, help="the holder's session id")
_ttl = click.option(
    "--ttl-minutes",
    type=click.IntRange(1, 24 * 60),
    default=10,
    show_default=True,
    help="lease length",
)


def _check_actor(actor: str) -> None:
    if ":" in actor or not actor.strip():
        raise click.BadParameter("must be non-empty and contain no ':'", param_hint="--actor")


@mc.command("claim")
@click.argument("task_id", type=int)
@_actor
@_session
@_ttl
@_db_option
def mc_claim(
    task_id: int,
    actor: str,
    session: str,
    ttl_minutes: int,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Take the lease on TASK_ID (free, expired, or already ours)."""
    _check_actor(actor)
    enforce = _enforcing()
    if not enforce:
        click.echo(
            "warning: MC_LEASE_ENFORCE=0: lease enforcement is off; taking the lease "
            "over unconditionally",
            err=True,
        )
    with _lease_store(db_path, config_path) as store:
        info = _mc_call(lambda: store.claim(task_id, actor, session, ttl_minutes, enforce=enforce))
    click.echo(f"Task {task_id} claimed by {info.holder} until {_iso(info.lease_until)}")


@mc.command("claim-extend")
@click.argument("task_id", type=int)
@_actor
@_session
@_ttl
@_db_option
def mc_claim_extend(
    task_id: int,
    actor: str,
    session: str,
    ttl_minutes: int,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Holder only: lease_until = now + ttl."""
    _check_actor(actor)
    enforce = _enforcing()
    with _lease_store(db_path, config_path) as store:
        if enforce:
            info = _mc_call(lambda: store.extend(task_id, actor, session, ttl_minutes))
        else:
            click.echo("warning: MC_LEASE_ENFORCE=0: extending without a holder check", err=True)
            info = _mc_call(
                lambda: store.claim(task_id, actor, session, ttl_minutes, enforce=False)
            )
    click.echo(f"Task {task_id} extended for {info.holder} until {_iso(info.lease_until)}")


@mc.command("claim-release")
@click.argument("task_id", type=int)
@_actor
@_session
@click.option("--force", is_flag=True, help="release whoever holds it")
@_db_option
def mc_claim_release(
    task_id: int,
    actor: str,
    session: str,
    force: bool,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Holder only (or --force): clear the lease. Releasing a free lease succeeds."""
    _check_actor(actor)
    force = force or not _enforcing()
    with _lease_store(db_path, config_path) as store:
        cleared = _mc_call(lambda: store.release(task_id, actor, session, force=force))
    click.echo(f"Task {task_id} released" if cleared else f"Task {task_id} was not claimed")


def _iso(dt: Any) -> str:
    from shared.mission_control import format_iso

    return format_iso(dt) if dt is not None else "-"


@mc.command("claim-status")
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@_db_option
def mc_claim_status(
    task_id: int, as_json: bool, db_path: str | None, config_path: str | None
) -> None:
    """Print `available` or `held by A:S until <ISO>` (`expired` when past)."""
    with _lease_store(db_path, config_path) as store:
        info = _mc_call(lambda: store.status(task_id))
    if as_json:
        click.echo(json.dumps(info.to_json()))
    elif info.holder is None:
        click.echo("available")
    else:
        suffix = " (expired)" if info.expired else ""
        click.echo(f"held by {info.holder} until {_iso(info.lease_until)}{suffix}")


@mc.command("claim-sweep")
@click.option("--auto-release", is_flag=True, help="release the expired leases (CAS)")
@click.option("--json", "as_json", is_flag=True)
@_db_option
def mc_claim_sweep(
    auto_release: bool, as_json: bool, db_path: str | None, config_path: str | None
) -> None:
    """List leases past their expiry (and release them with --auto-release)."""
    with _lease_store(db_path, config_path) as store:
        expired = _mc_call(store.expired_leases)
        results = []
        for lease in expired:
            released = bool(auto_release and _mc_call(partial(store.release_expired, lease)))
            results.append(lease.to_json(released))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    if not results:
        click.echo("no expired leases")
    for r in results:
        state = "released" if r["released"] else "expired"
        click.echo(
            f"{r['id']}\t{r['holder']}\t{r['lease_until']}\t{state} "
            f"{r['expired_for_s']:.0f}s ago\t{r['title']}"
        )


# config ------------------------------------------------------------------------------------

"""``fleet mc``: the Mission Control lease verbs of the seed's claim protocol (claim,
claim-extend, claim-release, claim-status, claim-sweep), ``show`` (what Mehanik reads) and
``migrate`` (the one verb that may change the schema of ``tasks``, and only when asked).

These run inside agents' pre-tool hooks: with ``--db PATH`` they import neither pydantic nor any
daemon, and they never change the schema of a shared table. ``--actor``/``--session`` default to
``$MC_ACTOR``/``$MC_SESSION`` so the runbook's bare ``claim-extend <id>`` works. Exit codes: 0 ok,
1 held by another (stderr ``Task <id> held by <actor>:<session> until <ISO>``), 2 no such task,
3 store error after retries (or a lease nobody can read), 64 usage. Every verb takes ``--json``
(the result, or ``{"error": ..., "code": N}`` on stdout). Nothing here prints a secret.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shared.cli import config_option, die, json_option, load_config_or_exit
from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from shared.mc_target import McTarget
    from shared.mission_control import LeaseStore

__all__ = ["mc"]

EX_OK, EX_FAIL, EX_NO_TASK, EX_STORE, EX_USAGE = (
    ExitCode.OK,
    ExitCode.FAILURE,
    ExitCode.NOT_FOUND,
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
        default=None,
        help="mission-control.db, or a postgresql://user@host/db URL (default: $ALAI_MC_URL,"
        " else [mission_control] url, else [mission_control] db)",
    )(fn)
    return _config_option(fn)


def _target(db_path: str | None, config_path: str | None) -> McTarget:
    """Where the store is. ``--db``, ``$ALAI_MC_URL`` or ``$FLEET_MISSION_CONTROL__DB`` (without
    ``--config``) skip loading the config: the hook path. A bad URL or password file: exit 78."""
    from shared.mc_target import URL_ENV, McTarget, McTargetError

    try:
        if db_path:
            return McTarget.from_value(db_path)
        if not config_path and os.environ.get(URL_ENV, "").strip():
            return McTarget.resolve()
        if not config_path and os.environ.get("FLEET_MISSION_CONTROL__DB"):
            return McTarget(path=Path(os.environ["FLEET_MISSION_CONTROL__DB"]).expanduser())
        section = _load_config(config_path).mission_control
        return McTarget.resolve(
            config_url=section.url, config_db=section.db, password_file=section.password_file
        )
    except McTargetError as exc:
        _die(ExitCode.CONFIG, f"error: {exc}")


def _db_file(db_path: str | None, config_path: str | None) -> Path:
    target = _target(db_path, config_path)
    if target.path is None:
        _die(EX_USAGE, "error: this verb works on a SQLite file; pass --db PATH")
    return target.path


def _lease_store(db_path: str | None, config_path: str | None) -> LeaseStore:
    from shared.mission_control import McTargetError, StoreError, open_store

    target = _target(db_path, config_path)
    try:
        # Hooks call these verbs before every tool use: an unusable store must fail in
        # seconds (SQLite: 1 s busy wait x 3 tries; Postgres: 3 s of reconnects), not stall
        # the session. No migration: mc.js owns the SQLite table; `fleet mc migrate` is the
        # explicit way.
        return open_store(target, create=False, migrate=False, hook=True)
    except McTargetError as exc:
        _die(ExitCode.CONFIG, f"error: {exc}")
    except StoreError as exc:
        _die(EX_STORE, f"error: mission control store unavailable: {exc}")


def _enforcing() -> bool:
    return os.environ.get("MC_LEASE_ENFORCE", "1").strip() not in ("0", "false", "no", "off")


def _mc_call(fn: Callable[[], Any]) -> Any:
    from shared.mission_control import (
        LeaseHeld,
        LeaseNotHeld,
        LeaseUnreadable,
        NoSuchTask,
        StoreError,
    )

    try:
        return fn()
    except (LeaseHeld, LeaseNotHeld) as exc:
        _die(EX_FAIL, str(exc))
    except LeaseUnreadable as exc:
        # Not exit 1: nobody can say the task is held by another, only that it is unreadable.
        _die(EX_STORE, f"error: {exc}")
    except NoSuchTask as exc:
        _die(EX_NO_TASK, f"error: {exc}")
    except StoreError as exc:
        _die(EX_STORE, f"error: mission control store unavailable: {exc}")


#: where mc.js-style callers put who they are when they run the bare runbook forms
ACTOR_ENV, SESSION_ENV = "MC_ACTOR", "MC_SESSION"

_actor = click.option(
    "--actor",
    envvar=ACTOR_ENV,
    default=None,
    help=f"who holds the lease (e.g. john, pi-orch); default ${ACTOR_ENV}",
)
_session = click.option(
    "--session",
    envvar=SESSION_ENV,
    default=None,
    help=f"the holder's session id; default ${SESSION_ENV}",
)
_ttl = click.option(
    "--ttl-minutes",
    type=click.IntRange(1, 24 * 60),
    default=10,
    show_default=True,
    help="lease length",
)


def _check_actor(actor: str | None, session: str | None) -> tuple[str, str]:
    for name, value, env in (("--actor", actor, ACTOR_ENV), ("--session", session, SESSION_ENV)):
        if value is None or not value.strip():
            raise click.UsageError(
                f"missing {name}: pass {name} or set ${env} (as mc.js callers do)"
            )
    assert actor is not None and session is not None
    if ":" in actor:
        raise click.BadParameter("must contain no ':'", param_hint="--actor")
    return actor, session


def _lease_result(task_id: int, verb: str, info: Any, as_json: bool) -> None:
    until = _iso(info.lease_until)
    if as_json:
        doc = {"id": task_id, verb: True, "holder": info.holder, "lease_until": until}
        click.echo(json.dumps(doc))
    else:
        click.echo(
            f"Task {task_id} {verb} {'by' if verb == 'claimed' else 'for'} {info.holder}"
            f" until {until}"
        )


@mc.command("claim")
@click.argument("task_id", type=int)
@_actor
@_session
@_ttl
@json_option()
@_db_option
def mc_claim(
    task_id: int,
    actor: str | None,
    session: str | None,
    ttl_minutes: int,
    as_json: bool,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Take the lease on TASK_ID (free, expired, or already ours)."""
    actor, session = _check_actor(actor, session)
    enforce = _enforcing()
    if not enforce:
        click.echo(
            "warning: MC_LEASE_ENFORCE=0: lease enforcement is off; taking the lease "
            "over unconditionally",
            err=True,
        )
    with _lease_store(db_path, config_path) as store:
        info = _mc_call(lambda: store.claim(task_id, actor, session, ttl_minutes, enforce=enforce))
    _lease_result(task_id, "claimed", info, as_json)


@mc.command("claim-extend")
@click.argument("task_id", type=int)
@_actor
@_session
@_ttl
@json_option()
@_db_option
def mc_claim_extend(
    task_id: int,
    actor: str | None,
    session: str | None,
    ttl_minutes: int,
    as_json: bool,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Holder only: lease_until = now + ttl."""
    actor, session = _check_actor(actor, session)
    enforce = _enforcing()
    with _lease_store(db_path, config_path) as store:
        if enforce:
            info = _mc_call(lambda: store.extend(task_id, actor, session, ttl_minutes))
        else:
            click.echo("warning: MC_LEASE_ENFORCE=0: extending without a holder check", err=True)
            info = _mc_call(
                lambda: store.claim(task_id, actor, session, ttl_minutes, enforce=False)
            )
    _lease_result(task_id, "extended", info, as_json)


@mc.command("claim-release")
@click.argument("task_id", type=int)
@_actor
@_session
@click.option("--force", is_flag=True, help="release whoever holds it")
@json_option()
@_db_option
def mc_claim_release(
    task_id: int,
    actor: str | None,
    session: str | None,
    force: bool,
    as_json: bool,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Clear the lease: the holder's, or any holder's with --force (the operator's command;
    needs no actor). Releasing a free lease succeeds."""
    force = force or not _enforcing()
    if force:
        actor, session = actor or "", session or ""
    else:
        actor, session = _check_actor(actor, session)
    with _lease_store(db_path, config_path) as store:
        cleared = _mc_call(lambda: store.release(task_id, actor, session, force=force))
    if as_json:
        click.echo(json.dumps({"id": task_id, "released": bool(cleared)}))
    else:
        click.echo(f"Task {task_id} released" if cleared else f"Task {task_id} was not claimed")


def _iso(dt: Any) -> str:
    from shared.mission_control import format_iso

    return format_iso(dt) if dt is not None else "-"


# On Postgres the console script answers the plain forms of this verb in fleet/mc_hook.py (no
# click, no psycopg: the hook budget); keep its output and errors in step with this one
# (tests/system/test_mc_hook_postgres.py compares them).
@mc.command("claim-status")
@click.argument("task_id", type=int)
@json_option()
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
    elif info.unreadable is not None:
        click.echo(
            f"held by {info.holder}, lease_until unreadable: {info.raw_lease_until!r} "
            f"({info.unreadable}); release with `fleet mc claim-release {task_id} --force` "
            "once the holder is gone"
        )
    else:
        suffix = " (expired)" if info.expired else ""
        click.echo(f"held by {info.holder} until {_iso(info.lease_until)}{suffix}")


@mc.command("claim-sweep")
@click.option("--auto-release", is_flag=True, help="release the expired leases (CAS)")
@json_option()
@_db_option
def mc_claim_sweep(
    auto_release: bool, as_json: bool, db_path: str | None, config_path: str | None
) -> None:
    """List leases past their expiry (and release them with --auto-release)."""
    with _lease_store(db_path, config_path) as store:
        expired = _mc_call(store.expired_leases)
        unreadable = _mc_call(store.unreadable_leases)
        results = []
        for lease in expired:
            released = bool(auto_release and _mc_call(partial(store.release_expired, lease)))
            results.append(lease.to_json(released))
    if as_json:
        doc = {"expired": results, "unreadable": [u.to_json() for u in unreadable]}
        click.echo(json.dumps(doc, indent=2))
        return
    if not results and not unreadable:
        click.echo("no expired leases")
    for r in results:
        state = "released" if r["released"] else "expired"
        click.echo(
            f"{r['id']}\t{r['holder']}\t{r['lease_until']}\t{state} "
            f"{r['expired_for_s']:.0f}s ago\t{r['title']}"
        )
    for u in unreadable:
        # Never released automatically: nobody can tell whether it is still live.
        click.echo(
            f"{u.id}\t{u.holder}\tunreadable lease_until {u.raw_lease_until!r} ({u.reason});"
            f" release with `fleet mc claim-release {u.id} --force`\t{u.title}"
        )


@mc.command("show")
@click.argument("task_id", type=int)
@json_option("the object Mehanik reads (errors as JSON too)")
@_db_option
def mc_show(task_id: int, as_json: bool, db_path: str | None, config_path: str | None) -> None:
    """Print TASK_ID's id, title, status, lease_holder and lease_until (ISO ...Z)."""
    with _lease_store(db_path, config_path) as store:
        view = _mc_call(lambda: store.show(task_id))
    doc = view.to_json()
    if as_json:
        click.echo(json.dumps(doc))
        return
    for key, value in doc.items():
        click.echo(f"{key}: {'-' if value is None else value}")


@mc.command("migrate")
@click.option("--apply", "apply_", is_flag=True, help="make the changes (default: only show)")
@click.option(
    "--from",
    "from_",
    default=None,
    metavar="sqlite:PATH",
    help="copy every task and lease from this SQLite file (opened read-only) ...",
)
@click.option(
    "--to",
    default=None,
    metavar="URL",
    help="... to this postgresql://user@host/db (password: [mission_control] password_file,"
    " $ALAI_MC_PASSWORD_FILE or the mc-postgres-password credential)",
)
@json_option()
@_db_option
def mc_migrate(
    apply_: bool,
    from_: str | None,
    to: str | None,
    as_json: bool,
    db_path: str | None,
    config_path: str | None,
) -> None:
    """Show (and with --apply make) the columns and indexes the fleet would add to `tasks`;
    or, with --from and --to, copy Mission Control from SQLite to Postgres and verify it.

    The only `fleet mc` verb that changes the schema of Mission Control's table. The copy is
    idempotent and resumable (a second run writes nothing) and never writes the source."""
    if from_ is not None or to is not None:
        if from_ is None or to is None:
            raise click.UsageError("--from and --to go together")
        _copy_to_postgres(from_, to, as_json, config_path)
        return
    from shared.mission_control import MissionControl, StoreError, pending_schema_changes
    from shared.sqlite import connect_sync

    target = _target(db_path, config_path)
    if target.url is not None:
        _postgres_schema(target, apply_, as_json)
        return
    path = _db_file(db_path, config_path)
    if not path.exists():
        _die(EX_STORE, f"error: mission control store unavailable: database not found: {path}")
    conn = connect_sync(path, create=False, readonly=True)
    try:
        changes = pending_schema_changes(conn)
    finally:
        conn.close()
    if not as_json and not changes:
        click.echo(f"{path}: tasks has every column and index the fleet uses; nothing to do")
        return
    if not as_json:
        click.echo(f"{path}: " + ("applying" if apply_ else "would apply (run with --apply)") + ":")
        for line in changes:
            click.echo(f"  {line}")
    if apply_ and changes:
        try:
            MissionControl(path, create=False, migrate=True).open().close()
        except StoreError as exc:
            _die(EX_STORE, f"error: mission control store unavailable: {exc}")
    if as_json:
        doc = {"db": str(path), "changes": list(changes), "applied": bool(apply_ and changes)}
        click.echo(json.dumps(doc))
    elif apply_:
        click.echo("done")


def _postgres_schema(target: McTarget, apply_: bool, as_json: bool) -> None:
    """`fleet mc migrate` on Postgres: the fleet's table exists, or (--apply) create it."""
    from shared.mc_postgres import PostgresMissionControl
    from shared.mission_control import McTargetError, MissingColumns, NoSuchTask, StoreError

    assert target.url is not None
    shown = target.shown()
    changes: list[str] = []
    try:
        with PostgresMissionControl(
            target.url, password_file=target.password_file, create=False
        ) as store:
            store.status(0)  # reads the lease columns: a missing table or column says so
    except NoSuchTask:
        pass
    except MissingColumns as exc:
        if exc.columns != ["*"]:
            _die(EX_STORE, f"error: mission control store unavailable: {exc}")
        changes = ["CREATE TABLE tasks (...the fleet's columns...) and its two indexes"]
    except McTargetError as exc:
        _die(ExitCode.CONFIG, f"error: {exc}")
    except StoreError as exc:
        _die(EX_STORE, f"error: mission control store unavailable: {exc}")
    if apply_ and changes:
        try:
            PostgresMissionControl(
                target.url, password_file=target.password_file, create=True
            ).open().close()
        except StoreError as exc:
            _die(EX_STORE, f"error: mission control store unavailable: {exc}")
    if as_json:
        doc = {"db": shown, "changes": changes, "applied": bool(apply_ and changes)}
        click.echo(json.dumps(doc))
    elif not changes:
        click.echo(f"{shown}: tasks has every column and index the fleet uses; nothing to do")
    else:
        verb = "applied" if apply_ else "would apply (run with --apply)"
        click.echo(f"{shown}: {verb}:\n  {changes[0]}")


def _copy_to_postgres(from_: str, to: str, as_json: bool, config_path: str | None) -> None:
    from shared.mc_migrate import migrate_sqlite_to_postgres, source_path
    from shared.mc_postgres import PostgresMissionControl
    from shared.mc_target import McTarget, McTargetError, is_postgres_url
    from shared.mission_control import StoreError

    if is_postgres_url(from_):
        raise click.BadParameter("the source must be sqlite:PATH", param_hint="--from")
    try:
        # The password as for every other verb: [mission_control] password_file, else
        # $ALAI_MC_PASSWORD_FILE or the service manager's credential.
        password_file = _load_config(config_path).mission_control.password_file
        target = McTarget.from_value(to, password_file)
        if target.url is None:
            raise McTargetError(f"{to}: not a postgresql:// URL")
        store = PostgresMissionControl(target.url, password_file=target.password_file, create=True)
        try:
            report = migrate_sqlite_to_postgres(source_path(from_), store)
        finally:
            store.close()
    except McTargetError as exc:
        _die(ExitCode.CONFIG, f"error: {exc}")
    except StoreError as exc:
        _die(EX_STORE, f"error: migration failed: {exc}")
    if as_json:
        click.echo(json.dumps({**report.to_json(), "noop": report.noop}))
    elif report.noop and report.matches:
        click.echo(
            f"{report.target} already holds all {report.tasks} tasks of {report.source} "
            f"exactly ({report.leases} leases); nothing to copy"
        )
    else:
        click.echo(
            f"copied {report.source} -> {report.target}: {report.tasks} tasks "
            f"({report.leases} leases): {report.inserted} inserted, {report.updated} updated, "
            f"{report.unchanged} already there"
        )
    if report.extra_columns and not as_json:
        click.echo(f"columns kept in extra (jsonb): {', '.join(report.extra_columns)}")
    if not report.matches:
        _die(
            EX_STORE,
            f"error: verification failed: tasks {report.tasks} -> {report.target_tasks}, "
            f"leases {report.leases} -> {report.target_leases}, checksum "
            f"{report.source_checksum[:16]} -> {report.target_checksum[:16]} (the target "
            "holds tasks the source does not, or changed during the copy); run it again, or "
            "compare with `fleet mc show`",
        )
    if not as_json:
        click.echo(
            f"verified: tasks {report.target_tasks}, leases {report.target_leases}, "
            f"checksum {report.target_checksum[:16]} on both sides"
        )


# config ------------------------------------------------------------------------------------

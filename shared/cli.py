"""The ``fleet`` command: run daemons, check config, show status, set role and silences, and
the Mission Control ``mc`` lease verbs.

Exit codes: 0 ok, 1 failure (or lease held by another), 2 no such task, 3 store error after
retries, 64 usage, 78 invalid config or a daemon refusing to run here. Heavy imports stay inside
the commands that need them: ``fleet mc ... --db PATH`` runs inside pre-tool hooks and must
start fast. Nothing here prints a secret.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.mission_control import MissionControl

__all__ = ["LAZY_COMMANDS", "cli", "config_option", "load_config_or_exit", "main"]

EX_OK, EX_FAIL, EX_NO_TASK, EX_STORE, EX_USAGE, EX_CONFIG = 0, 1, 2, 3, 64, 78


def _die(code: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


def load_config_or_exit(path: str | None) -> FleetConfig:
    """Load the config for a command; on error print every bad key and exit 78."""
    return _load_config(path)


def _load_config(path: str | None) -> FleetConfig:
    from shared.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _die(EX_CONFIG, exc.render())


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--config PATH`` option every command that reads the config takes."""
    return _config_option(fn)


def _config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="config file (default: $FLEET_CONFIG, ./fleet.toml, ~/.config/alai-fleet/fleet.toml,"
        " /etc/alai-fleet/fleet.toml, else embedded defaults)",
    )(fn)


class LazyGroup(click.Group):
    """A group whose subcommands named in ``LAZY_COMMANDS`` are imported only when used, so
    ``fleet mc ...`` does not pay for every daemon's CLI."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        import importlib

        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


# Subcommand groups that live beside the code they drive: "name" -> "module:attribute".
LAZY_COMMANDS: dict[str, str] = {
    "email": "daemons.email_reactor.cli:email",
    "ollama": "daemons.ollama_health.cli:ollama",
    "restore": "daemons.restore_loop.cli:restore",
    "litestream": "daemons.restore_loop.cli:litestream",
    "heartbeat": "daemons.heartbeat.cli:heartbeat",
    "blueprint": "daemons.blueprint_watchdog.cli:blueprint",
    "zakon": "daemons.blueprint_watchdog.cli:zakon",
    "units": "shared.units_cli:units",
    "observability": "shared.units_cli:observability",
}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alai-fleet", prog_name="fleet")
def cli() -> None:
    """alai-fleet: the ALAI hosts' operations daemons."""


# run ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("name", required=False)
@click.option("--all", "run_all", is_flag=True, help="run every enabled daemon in one process")
@click.option("--once", is_flag=True, help="run exactly one cycle; exit 0 (ok) or 1 (failed)")
@click.option("--dry-run", is_flag=True, help="decide but do not write or send anything")
@_config_option
def run(
    name: str | None, run_all: bool, once: bool, dry_run: bool, config_path: str | None
) -> None:
    """Run daemon NAME (or --all) until SIGTERM/SIGINT."""
    import asyncio
    import importlib

    from daemons import REGISTRY

    if bool(name) == run_all:
        raise click.UsageError("give a daemon NAME or --all (not both)")
    if name and name not in REGISTRY:
        raise click.UsageError(f"unknown daemon {name!r}; known: {', '.join(sorted(REGISTRY))}")
    config = _load_config(config_path)
    from shared.logging import configure_logging
    from shared.runtime import run_daemons

    configure_logging(host=config.fleet.host, level=config.fleet.log_level, daemon=name or "fleet")
    if name:
        specs = [REGISTRY[name]]
    else:
        specs = [s for s in REGISTRY.values() if config.daemon_section(s.section).enabled]
    classes = [getattr(importlib.import_module(s.module), s.class_name) for s in specs]
    code = asyncio.run(run_daemons(classes, config, once=once, dry_run=dry_run))
    raise SystemExit(code)


@cli.command("check-config")
@_config_option
def check_config(config_path: str | None) -> None:
    """Validate the config (exit 78 naming every bad key) without starting anything."""
    from shared.config import find_config_file

    config = _load_config(config_path)
    from daemons.restore_loop.conflicts import standby_dir_conflicts

    conflicts = standby_dir_conflicts(config)
    if conflicts:
        _die(
            EX_CONFIG,
            "invalid configuration: "
            + f"{len(conflicts)} error(s)\n"
            + "\n".join(f"  {path}: {msg}" for path, msg in conflicts),
        )
    source = find_config_file(config_path)
    click.echo(
        f"config ok ({source or 'embedded defaults'}); root {config.fleet.root}, "
        f"host {config.fleet.host}, role {config.fleet.role}"
    )


# status ------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_config_option
def status(as_json: bool, config_path: str | None) -> None:
    """One row per daemon from the heartbeat files; exit 1 if an enabled daemon is stale."""
    import importlib

    from daemons import REGISTRY
    from shared.heartbeats import read_status
    from shared.runtime import effective_role, fenced

    config = _load_config(config_path)
    now = time.time()
    rows = []
    all_ok = True
    role = effective_role(config)
    for spec in REGISTRY.values():
        section = config.daemon_section(spec.section)
        # A daemon fenced off this host's role (restore-loop on a primary) is not expected.
        cls = getattr(importlib.import_module(spec.module), spec.class_name)
        enabled = section.enabled and not fenced(cls, section, role)
        st = read_status(config.heartbeat_dir, spec.name, now)
        if enabled and not st.ok:
            all_ok = False
        rows.append(
            {
                "daemon": spec.name,
                "enabled": enabled,
                "ok": st.ok,
                "last_ok_at": st.last_ok_at,
                "age_s": round(st.age_s, 1) if st.age_s is not None else None,
                "expected_interval_s": st.expected_interval_s,
                "cycles": st.cycles,
                "reason": st.reason,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(f"{'DAEMON':<20} {'OK':<4} {'AGE':>8} {'INTERVAL':>9} {'CYCLES':>7}  REASON")
        for r in rows:
            age = f"{r['age_s']:.0f}s" if r["age_s"] is not None else "-"
            interval = f"{r['expected_interval_s']:.0f}s" if r["expected_interval_s"] else "-"
            ok = "yes" if r["ok"] else ("no" if r["enabled"] else "off")
            click.echo(
                f"{r['daemon']:<20} {ok:<4} {age:>8} {interval:>9} {r['cycles']:>7}  {r['reason']}"
            )
    raise SystemExit(EX_OK if all_ok else EX_FAIL)


# role --------------------------------------------------------------------------------------
@cli.group()
def role() -> None:
    """Show or set this host's role (primary / standby)."""


@role.command("show")
@_config_option
def role_show(config_path: str | None) -> None:
    from shared.runtime import effective_role

    config = _load_config(config_path)
    source = "role file" if config.role_file.exists() else "config"
    click.echo(f"{effective_role(config)} (from {source})")


@role.command("set")
@click.argument("value", type=click.Choice(["primary", "standby"]))
@_config_option
def role_set(value: str, config_path: str | None) -> None:
    """Write <root>/state/role; daemons read it at start (restart them to apply)."""
    from shared.files import atomic_write_text

    config = _load_config(config_path)
    atomic_write_text(config.role_file, value + "\n")
    click.echo(f"role set to {value} ({config.role_file}); restart the fleet's daemons")


# silence -----------------------------------------------------------------------------------
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s', '1d' -> seconds."""
    compact = text.strip().lower().replace(" ", "")
    if not compact or _DURATION_RE.sub("", compact):
        raise click.BadParameter(f"{text!r} is not a duration like 2h, 90m or 1h30m")
    total = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_RE.findall(compact))
    if total <= 0:
        raise click.BadParameter("duration must be positive")
    return total


@cli.group()
def silence() -> None:
    """Mute alert channels during drills and maintenance (#ceo pushes are never muted)."""


def _with_outbox(config_path: str | None, fn: Callable[[Any], Any]) -> Any:
    import asyncio

    from shared.notify import Outbox

    config = _load_config(config_path)

    async def _go() -> Any:
        outbox = await Outbox(config.notify.outbox_db).open()
        try:
            return await fn(outbox)
        finally:
            await outbox.close()

    return asyncio.run(_go())


def _fmt_ts(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@silence.command("set")
@click.option("--for", "duration", required=True, help="how long, e.g. 2h, 90m, 1h30m")
@click.option("--reason", default="", help="shown in status and the summary afterwards")
@_config_option
def silence_set(duration: str, reason: str, config_path: str | None) -> None:
    seconds = parse_duration(duration)
    s = _with_outbox(config_path, lambda ob: ob.set_silence(seconds, reason))
    click.echo(f"alerts silenced until {_fmt_ts(s.until)}" + (f" ({reason})" if reason else ""))


@silence.command("clear")
@_config_option
def silence_clear(config_path: str | None) -> None:
    cleared = _with_outbox(config_path, lambda ob: ob.clear_silence())
    click.echo(
        "silence cleared; held alerts go out as one summary per channel"
        if cleared
        else "no silence was set"
    )


@silence.command("show")
@click.option("--json", "as_json", is_flag=True)
@_config_option
def silence_show(as_json: bool, config_path: str | None) -> None:
    s = _with_outbox(config_path, lambda ob: ob.silence())
    active = s is not None and s.active(time.time())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "active": active,
                    "until": _fmt_ts(s.until) if s else None,
                    "reason": s.reason if s else None,
                }
            )
        )
    elif active and s is not None:
        click.echo(f"silenced until {_fmt_ts(s.until)}" + (f" ({s.reason})" if s.reason else ""))
    else:
        click.echo("not silenced")


# mc ----------------------------------------------------------------------------------------
@cli.group()
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
@cli.group("config")
def config_group() -> None:
    """Configuration helpers."""


@config_group.command("example")
def config_example() -> None:
    """Print config/fleet.example.toml as generated from the models."""
    from shared.example_config import render_example_toml

    click.echo(render_example_toml(), nl=False)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console entry point: click with our exit codes (usage errors exit 64, not 2)."""
    try:
        rv = cli.main(args=argv, prog_name="fleet", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        raise SystemExit(EX_USAGE) from None
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(EX_FAIL) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(EX_USAGE) from None
    raise SystemExit(rv if isinstance(rv, int) else EX_OK)


if __name__ == "__main__":
    main(sys.argv[1:])

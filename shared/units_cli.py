"""``fleet units ...`` (generate, install, uninstall the systemd units / LaunchAgents, and the
launchd entry point) and ``fleet observability ...`` (the Prometheus/Grafana pack).

Thin: decisions live in shared/units.py and shared/observability.py. ``install``/``uninstall``
print the service-manager commands and run them only with ``--now``; nothing here writes a
secret or touches a file it did not generate.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shared.cli import config_option, load_config_or_exit

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.units import GeneratedSet, InstallLayout, Mode, Target

__all__ = ["observability", "units"]

EX_OK, EX_FAIL, EX_CONFIG = 0, 1, 78
# A source checkout (editable install): `example` commands default to it, else to the cwd.
_CHECKOUT = Path(__file__).resolve().parents[1]
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "config" / "fleet.example.toml").is_file() else Path(".")


def _platform_target() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def _default_mode() -> str:
    return "system" if os.geteuid() == 0 and sys.platform != "darwin" else "user"


_target_option = click.option(
    "--target",
    type=click.Choice(["systemd", "launchd", "all"]),
    default=None,
    help="systemd units, launchd plists, or both (default: this platform's)",
)
_mode_option = click.option(
    "--mode",
    type=click.Choice(["system", "user"]),
    default=None,
    help="systemd system units (User= from config) or --user units; launchd is always "
    "per-user LaunchAgents (default: system when run as root on Linux, else user)",
)
_prefix_option = click.option(
    "--prefix",
    type=click.Path(file_okay=False),
    default=None,
    help="venv whose bin/fleet the services run (default: [fleet] install_prefix, else this one)",
)
_user_option = click.option(
    "--user",
    "service_user",
    default=None,
    help="account system units run as (default: [fleet] service_user, $SUDO_USER, else you)",
)


@click.group()
def units() -> None:
    """Generate and install systemd units / LaunchAgent plists."""


def _targets(target: str | None) -> list[Target]:
    chosen = target or _platform_target()
    if chosen == "all":
        return ["systemd", "launchd"]
    return [chosen]  # type: ignore[list-item]


def _layout(
    config: FleetConfig,
    config_path: str | None,
    mode: Mode,
    prefix: str | None,
    service_user: str | None,
) -> InstallLayout:
    from shared.config import find_config_file
    from shared.units import InstallLayout

    venv = prefix or config.fleet.install_prefix or sys.prefix
    config_file = find_config_file(config_path)
    user: str | None = None
    if mode == "system":
        # [fleet] service_user is read when the config has it (see docs/operations.md).
        user = (
            service_user
            or str(getattr(config.fleet, "service_user", "") or "")
            or os.environ.get("SUDO_USER")
            or getpass.getuser()
        )
    return InstallLayout(
        mode=mode,
        prefix=Path(os.path.abspath(Path(venv).expanduser())),
        config_file=Path(os.path.abspath(config_file)) if config_file else None,
        user=user,
        home=Path.home(),
    )


def _generate(
    config_path: str | None,
    target: str | None,
    mode: str | None,
    prefix: str | None,
    service_user: str | None,
) -> tuple[FleetConfig, InstallLayout, list[GeneratedSet]]:
    from shared.units import generate

    config = load_config_or_exit(config_path)
    layout = _layout(config, config_path, (mode or _default_mode()), prefix, service_user)  # type: ignore[arg-type]
    try:
        sets = [generate(config, t, layout) for t in _targets(target)]
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EX_CONFIG) from None
    if layout.mode == "system" and layout.user == "root" and "systemd" in _targets(target):
        click.echo(
            "warning: system units would run as root; pass --user or set the service account",
            err=True,
        )
    return config, layout, sets


def _write(path: Path, data: bytes) -> bool:
    """Write ``data`` atomically (0644: units hold no secrets); True when content changed."""
    from shared.files import atomic_write_text

    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_text(path, data.decode("utf-8"), mode=0o644)
    return True


def _report_skipped(sets: Sequence[GeneratedSet]) -> None:
    if sets:
        for name, why in sets[0].skipped:
            click.echo(f"no service for {name}: {why}")


@units.command("generate")
@_target_option
@_mode_option
@click.option(
    "--out", type=click.Path(file_okay=False), default=".", show_default=True, help="directory"
)
@_prefix_option
@_user_option
@config_option
def generate_cmd(
    target: str | None,
    mode: str | None,
    out: str,
    prefix: str | None,
    service_user: str | None,
    config_path: str | None,
) -> None:
    """Write alai-fleet-<daemon>.service / no.alai.fleet.<daemon>.plist for every enabled
    daemon (and companion service) into --out."""
    _config, _unused, sets = _generate(config_path, target, mode, prefix, service_user)
    out_dir = Path(out)
    for gen in sets:
        for name, data in sorted(gen.files.items()):
            changed = _write(out_dir / name, data)
            click.echo(f"{'wrote' if changed else 'unchanged'} {out_dir / name}")
    _report_skipped(sets)


@units.command("example")
@click.option("--check", is_flag=True, help="exit 1 if the committed files differ; write nothing")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, exists=True),
    default=str(REPO_ROOT),
    show_default=True,
    help="repository holding config/fleet.example.toml, units/ and launchagents/",
)
def example_cmd(check: bool, repo: str) -> None:
    """Regenerate units/ and launchagents/ from config/fleet.example.toml (the documented
    example host: user alai, venv /opt/alai-fleet/venv). Removes generated files that are no
    longer produced; README.md is kept."""
    from shared.config import ConfigError
    from shared.units import is_generated_file, render_examples

    repo_dir = Path(repo)
    try:
        wanted = render_examples(repo_dir / "config" / "fleet.example.toml")
    except ConfigError as exc:
        click.echo(exc.render(), err=True)
        raise SystemExit(EX_CONFIG) from None
    drift: list[str] = []
    for out_dir, files in wanted.items():
        directory = repo_dir / out_dir
        existing = {p.name for p in directory.glob("*") if is_generated_file(p)}
        for name, data in sorted(files.items()):
            path = directory / name
            current = path.read_bytes() if path.is_file() else None
            if current != data:
                drift.append(f"{out_dir}/{name}: {'differs' if current else 'missing'}")
                if not check:
                    _write(path, data)
        for name in sorted(existing - set(files)):
            drift.append(f"{out_dir}/{name}: no longer generated")
            if not check:
                (directory / name).unlink()
    for line in drift:
        click.echo(line)
    if check and drift:
        click.echo("regenerate with: fleet units example", err=True)
        raise SystemExit(EX_FAIL)
    if not drift:
        click.echo("example units and plists are up to date")


# install / uninstall -------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One thing install/uninstall does after writing files: a command, or removing a file.
    ``check``: a failure stops the plan (unchecked steps may fail harmlessly)."""

    argv: tuple[str, ...] = ()
    remove: Path | None = None
    check: bool = True

    def render(self) -> str:
        if self.remove is not None:
            return f"rm -f {_shell_quote(str(self.remove))}"
        text = " ".join(_shell_quote(a) for a in self.argv)
        return text if self.check else f"{text} || true"


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _dest_dir(target: Target, mode: Mode, dest: str | None) -> Path:
    if dest:
        return Path(dest).expanduser()
    if target == "launchd":
        return Path.home() / "Library" / "LaunchAgents"
    if mode == "system":
        return Path("/etc/systemd/system")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def _systemctl(mode: Mode) -> tuple[str, ...]:
    return ("systemctl",) if mode == "system" else ("systemctl", "--user")


def _launchd_domain() -> str:
    return f"gui/{os.getuid()}"


def install_plan(
    target: Target,
    mode: Mode,
    dest: Path,
    new: Sequence[str],
    changed: Sequence[str],
    unchanged: Sequence[str],
    stale: Sequence[str],
) -> list[Step]:
    """The commands that make the service manager run exactly the installed set: stop and
    remove stale generated files, reload, enable/start everything, restart what changed."""
    steps: list[Step] = []
    if target == "systemd":
        sc = _systemctl(mode)
        if stale:
            steps.append(Step(argv=(*sc, "disable", "--now", *stale), check=False))
            steps += [Step(remove=dest / name) for name in stale]
        steps.append(Step(argv=(*sc, "daemon-reload")))
        every = sorted([*new, *changed, *unchanged])
        if every:
            steps.append(Step(argv=(*sc, "enable", "--now", *every)))
        if changed:
            steps.append(Step(argv=(*sc, "try-restart", *sorted(changed))))
        return steps
    domain = _launchd_domain()
    for name in stale:
        steps.append(Step(argv=("launchctl", "bootout", f"{domain}/{name[:-6]}"), check=False))
        steps.append(Step(remove=dest / name))
    for name in sorted([*new, *changed, *unchanged]):
        label = name[: -len(".plist")]
        steps.append(Step(argv=("launchctl", "enable", f"{domain}/{label}")))
        if name in changed or name in new:
            steps.append(Step(argv=("launchctl", "bootout", f"{domain}/{label}"), check=False))
            steps.append(Step(argv=("launchctl", "bootstrap", domain, str(dest / name))))
        else:  # already loaded is fine; not loaded gets loaded
            steps.append(
                Step(argv=("launchctl", "bootstrap", domain, str(dest / name)), check=False)
            )
    return steps


def uninstall_plan(target: Target, mode: Mode, dest: Path, installed: Sequence[str]) -> list[Step]:
    steps: list[Step] = []
    if target == "systemd":
        sc = _systemctl(mode)
        if installed:
            steps.append(Step(argv=(*sc, "disable", "--now", *installed), check=False))
        steps += [Step(remove=dest / name) for name in installed]
        steps.append(Step(argv=(*sc, "daemon-reload")))
        if installed:
            steps.append(Step(argv=(*sc, "reset-failed", *installed), check=False))
        return steps
    domain = _launchd_domain()
    for name in installed:
        steps.append(Step(argv=("launchctl", "bootout", f"{domain}/{name[:-6]}"), check=False))
        steps.append(Step(remove=dest / name))
    return steps


def _execute(steps: Sequence[Step], now: bool, runner: Callable[..., Any] = subprocess.run) -> int:
    if not now:
        if steps:
            click.echo("run these (or pass --now):")
        for step in steps:
            click.echo(f"  {step.render()}")
        return EX_OK
    for step in steps:
        click.echo(f"$ {step.render()}")
        if step.remove is not None:
            step.remove.unlink(missing_ok=True)
            continue
        try:
            proc = runner(list(step.argv), capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            if step.check:
                click.echo(f"error: {step.argv[0]}: {exc}", err=True)
                return EX_FAIL
            continue
        if proc.stdout.strip():
            click.echo(proc.stdout.rstrip())
        if proc.returncode != 0 and step.check:
            click.echo(proc.stderr.rstrip(), err=True)
            click.echo(f"error: exit {proc.returncode}: {step.render()}", err=True)
            return EX_FAIL
    return EX_OK


def _make_write_dirs(dirs: Sequence[Path], owner: str | None) -> None:
    """Create the dirs a service writes (0700): under ProtectSystem=strict it cannot create
    them itself, and launchd needs the log dir to open StandardOutPath. Created as root for a
    system unit, they are handed to the service account."""
    import pwd

    ids: tuple[int, int] | None = None
    if owner and os.geteuid() == 0 and owner != "root":
        try:
            entry = pwd.getpwnam(owner)
            ids = (entry.pw_uid, entry.pw_gid)
        except KeyError:
            click.echo(f"warning: no account {owner!r}; create it before starting", err=True)
    for directory in dirs:
        missing = [p for p in (directory, *directory.parents) if not p.exists()]
        if not missing:
            continue
        try:
            directory.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            click.echo(f"warning: cannot create {directory}: {exc.strerror}", err=True)
            continue
        click.echo(f"created {directory}")
        if ids is not None:
            for path in missing:
                os.chown(path, *ids)


@units.command("install")
@_target_option
@_mode_option
@click.option("--now", is_flag=True, help="run the systemctl/launchctl commands, not just print")
@click.option(
    "--dest",
    type=click.Path(file_okay=False),
    default=None,
    help="install into DIR instead of the standard place (packaging, tests; one target only)",
)
@_prefix_option
@_user_option
@config_option
def install_cmd(
    target: str | None,
    mode: str | None,
    now: bool,
    dest: str | None,
    prefix: str | None,
    service_user: str | None,
    config_path: str | None,
) -> None:
    """Write the generated files where the service manager reads them (/etc/systemd/system,
    ~/.config/systemd/user, ~/Library/LaunchAgents) and print or run the commands that enable
    and start them. Stale generated files (daemon disabled since) are stopped and removed."""
    from shared.units import is_generated_file

    if dest and target == "all":
        raise click.UsageError("--dest works with one --target")
    _config, layout, sets = _generate(config_path, target, mode, prefix, service_user)
    code = EX_OK
    for gen in sets:
        directory = _dest_dir(gen.target, layout.mode, dest)
        new: list[str] = []
        changed: list[str] = []
        unchanged: list[str] = []
        for name, data in sorted(gen.files.items()):
            existed = (directory / name).exists()
            if _write(directory / name, data):
                (changed if existed else new).append(name)
                click.echo(f"{'updated' if existed else 'installed'} {directory / name}")
            else:
                unchanged.append(name)
        stale = sorted(
            p.name for p in directory.glob("*") if is_generated_file(p) and p.name not in gen.files
        )
        _make_write_dirs(gen.write_dirs, layout.user if layout.mode == "system" else None)
        steps = install_plan(gen.target, layout.mode, directory, new, changed, unchanged, stale)
        code = code or _execute(steps, now)
        if gen.target == "systemd" and layout.mode == "user":
            click.echo(
                "note: user units stop at logout unless lingering is on: "
                f"loginctl enable-linger {getpass.getuser()}"
            )
    _report_skipped(sets)
    raise SystemExit(code)


@units.command("uninstall")
@_target_option
@_mode_option
@click.option("--now", is_flag=True, help="run the systemctl/launchctl commands, not just print")
@click.option("--dest", type=click.Path(file_okay=False), default=None, help="as for install")
def uninstall_cmd(target: str | None, mode: str | None, now: bool, dest: str | None) -> None:
    """Stop, disable and remove every generated unit/plist (whatever the config says now).
    Without --now, print the commands (files are removed only when they run)."""
    from shared.units import is_generated_file

    if dest and target == "all":
        raise click.UsageError("--dest works with one --target")
    chosen_mode: Mode = mode or _default_mode()  # type: ignore[assignment]
    code = EX_OK
    for t in _targets(target):
        directory = _dest_dir(t, chosen_mode, dest)
        installed = sorted(p.name for p in directory.glob("*") if is_generated_file(p))
        if not installed:
            click.echo(f"no generated {t} files in {directory}")
            continue
        code = code or _execute(uninstall_plan(t, chosen_mode, directory, installed), now)
    raise SystemExit(code)


@units.command(
    "launchd-run", context_settings={"help_option_names": ["-h", "--help"]}, hidden=False
)
@click.argument("name")
@config_option
def launchd_run_cmd(name: str, config_path: str | None) -> None:
    """`fleet run NAME` for launchd: exit 78 (invalid config, refused role) becomes exit 0,
    so KeepAlive{SuccessfulExit=false} restarts crashes but never loops on a refusal."""
    from shared.cli import run as run_command

    callback = run_command.callback
    assert callback is not None
    code: Any = EX_OK
    try:
        callback(name=name, run_all=False, once=False, dry_run=False, config_path=config_path)
    except SystemExit as exc:
        code = exc.code
    if code == EX_CONFIG:
        click.echo(
            f"fleet: {name} refused to start (exit 78: invalid config or wrong role); launchd "
            f"will not restart it. Fix it, then: launchctl kickstart -k "
            f"{_launchd_domain()}/no.alai.fleet.{name}",
            err=True,
        )
        raise SystemExit(EX_OK)
    raise SystemExit(code)


# observability -------------------------------------------------------------------------------
@click.group()
def observability() -> None:
    """Generate the Prometheus/Grafana pack."""


def _hosts(value: str | None) -> list[tuple[str, str | None]]:
    if not value:
        return []
    hosts: list[tuple[str, str | None]] = []
    for item in value.split(","):
        name, _, role = item.strip().partition("=")
        if not name:
            raise click.BadParameter(f"empty host in {value!r}", param_hint="--hosts")
        if role and role not in ("primary", "standby"):
            raise click.BadParameter(
                f"{item!r}: role must be primary or standby", param_hint="--hosts"
            )
        hosts.append((name, role or None))
    return hosts


@observability.command("prometheus")
@click.option(
    "--hosts",
    default=None,
    help="comma-separated hosts to scrape, each NAME or NAME=ROLE (e.g. anvil=primary,"
    "forge=standby); default: this host on [fleet] bind",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="directory for prometheus.yml and rules/fleet.rules.yml",
)
@config_option
def prometheus_cmd(hosts: str | None, out: str, config_path: str | None) -> None:
    """Write prometheus.yml (one job per daemon, one target per host) and the alert rules."""
    from shared.observability import HostTarget, render_prometheus_config, render_rules

    config = load_config_or_exit(config_path)
    targets = [HostTarget(name=n, address=n, role=r) for n, r in _hosts(hosts)]
    if not targets:
        targets = [HostTarget(name=config.fleet.host, address=config.fleet.bind, role=None)]
    out_dir = Path(out)
    files = {
        out_dir / "prometheus.yml": render_prometheus_config(config, targets),
        out_dir / "rules" / "fleet.rules.yml": render_rules(config),
    }
    for path, text in files.items():
        changed = _write(path, text.encode())
        click.echo(f"{'wrote' if changed else 'unchanged'} {path}")


@observability.command("grafana")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="directory for provisioning/ and dashboards/",
)
def grafana_cmd(out: str) -> None:
    """Write the Grafana provisioning files and dashboards (generated from the metric list)."""
    from shared.observability import render_grafana

    out_dir = Path(out)
    for rel, text in sorted(render_grafana().items()):
        path = out_dir / rel
        changed = _write(path, text.encode())
        click.echo(f"{'wrote' if changed else 'unchanged'} {path}")


@observability.command("example")
@click.option("--check", is_flag=True, help="exit 1 if the committed files differ; write nothing")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, exists=True),
    default=str(REPO_ROOT),
    show_default=True,
    help="repository holding config/fleet.example.toml, config/prometheus/, config/grafana/",
)
def observability_example_cmd(check: bool, repo: str) -> None:
    """Regenerate config/prometheus/ and config/grafana/ from config/fleet.example.toml for
    the example hosts anvil (primary) and forge (standby)."""
    from shared.config import ConfigError
    from shared.observability import render_examples

    repo_dir = Path(repo)
    try:
        wanted = render_examples(repo_dir / "config" / "fleet.example.toml")
    except ConfigError as exc:
        click.echo(exc.render(), err=True)
        raise SystemExit(EX_CONFIG) from None
    drift = []
    for rel, text in sorted(wanted.items()):
        path = repo_dir / rel
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            drift.append(f"{rel}: {'differs' if current is not None else 'missing'}")
            if not check:
                _write(path, text.encode())
    for line in drift:
        click.echo(line)
    if check and drift:
        click.echo("regenerate with: fleet observability example", err=True)
        raise SystemExit(EX_FAIL)
    if not drift:
        click.echo("prometheus and grafana files are up to date")

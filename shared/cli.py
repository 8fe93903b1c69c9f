"""Click helpers every daemon's CLI group uses: the ``--config`` option and loading the config
with exit 78 naming every bad key.

The app (``fleet.cli``) puts its config loader (the root model with every daemon's section) on
the root click context; a daemon's command gets the whole config through
``load_config_or_exit`` without importing the app. Nothing here prints a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.manifest import DaemonManifest

__all__ = [
    "AppContext",
    "config_option",
    "die",
    "fleet_manifests",
    "invoke_app_command",
    "load_config_or_exit",
]


class AppContext:
    """What the app puts on the root click context (``ctx.obj``): its config loader and the
    registered daemons' manifests."""

    def __init__(
        self,
        load_config: Callable[[str | None], FleetConfig],
        manifests: Callable[[], Sequence[DaemonManifest]],
    ) -> None:
        self.load_config = load_config
        self.manifests = manifests


def _app() -> AppContext | None:
    ctx = click.get_current_context(silent=True)
    app = ctx.find_root().obj if ctx is not None else None
    return app if isinstance(app, AppContext) else None


def fleet_manifests() -> tuple[DaemonManifest, ...]:
    """Every registered daemon's manifest (empty outside the ``fleet`` command)."""
    app = _app()
    return tuple(app.manifests()) if app is not None else ()


def die(code: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


def load_config_or_exit(path: str | None) -> FleetConfig:
    """Load the config for a command; on error print every bad key and exit 78."""
    from shared.config import ConfigError
    from shared.config import load_config as load_shared

    app = _app()
    loader = app.load_config if app is not None else load_shared
    try:
        return loader(path)
    except ConfigError as exc:
        die(ExitCode.CONFIG, exc.render())


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--config PATH`` option every command that reads the config takes."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="config file (default: $FLEET_CONFIG, ./fleet.toml, ~/.config/alai-fleet/fleet.toml,"
        " /etc/alai-fleet/fleet.toml, else embedded defaults)",
    )(fn)


def invoke_app_command(ctx: click.Context, command_name: str, **params: Any) -> Any:
    """Run another top-level ``fleet`` command (an alias such as ``fleet email process``)."""
    root = ctx.find_root()
    group = root.command
    command = group.get_command(root, command_name) if isinstance(group, click.Group) else None
    if command is None:
        raise click.UsageError(f"no command {command_name!r}")
    return ctx.invoke(command, **params)

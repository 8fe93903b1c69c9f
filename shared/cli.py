"""Click helpers every daemon's CLI group uses: the ``--config`` and ``--json`` options, loading
the config with exit 78 naming every bad key, and ``die``, the one way a command fails.

The app (``fleet.cli``) puts its config loader (the root model with every daemon's section) on
the root click context; a daemon's command gets the whole config through
``load_config_or_exit`` without importing the app. Under ``--json`` an error is one JSON object
on stdout, ``{"error": message, "code": exit code}`` (plus details such as ``errors`` for a bad
config), and nothing is printed on stderr; otherwise the message goes to stderr. Nothing here
prints a secret.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NoReturn

import click

from shared.exitcodes import ExitCode

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.manifest import DaemonManifest

__all__ = [
    "AppContext",
    "config_errors",
    "config_option",
    "die",
    "error_document",
    "fleet_manifests",
    "invoke_app_command",
    "json_errors",
    "json_option",
    "load_config_or_exit",
    "wants_json",
]

# Set by ``fleet.cli.main`` from the command line, so usage errors follow ``--json`` too; the
# option itself marks its own invocation (``ctx.meta``), also when a command runs in-process.
_json_errors: ContextVar[bool] = ContextVar("fleet_json_errors", default=False)
_META_KEY = "fleet.json_errors"


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


@contextlib.contextmanager
def json_errors(enabled: bool) -> Iterator[None]:
    """Within: report errors as JSON (``--json`` is on the command line)."""
    token = _json_errors.set(enabled)
    try:
        yield
    finally:
        _json_errors.reset(token)


def wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_META_KEY)) or _json_errors.get()


def error_document(code: int, message: str, **details: Any) -> str:
    """``{"error": ..., "code": ...}``: the message without its ``error:`` prefix."""
    text = message.removeprefix("error: ").strip()
    return json.dumps({"error": text, "code": int(code), **details})


def config_errors(errors: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """A bad config's ``(dotted path, message)`` pairs as the ``errors`` of an error object."""
    return [{"path": path, "message": message} for path, message in errors]


def die(code: int, message: str, **details: Any) -> NoReturn:
    """Exit ``code`` saying why: on stderr, or under ``--json`` as an error object on stdout
    (``details`` are extra keys of that object)."""
    if wants_json():
        click.echo(error_document(code, message, **details))
    else:
        click.echo(message, err=True)
    raise SystemExit(code)


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[_META_KEY] = True
    return value


def json_option(help_text: str = "print JSON (errors too)") -> Callable[..., Any]:
    """The ``--json`` flag (parameter ``as_json``) of every read command."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=_remember_json,
        help=help_text,
    )


def load_config_or_exit(path: str | None) -> FleetConfig:
    """Load the config for a command; on error print every bad key and exit 78."""
    from shared.config import ConfigError
    from shared.config import load_config as load_shared

    app = _app()
    loader = app.load_config if app is not None else load_shared
    try:
        return loader(path)
    except ConfigError as exc:
        die(ExitCode.CONFIG, exc.render(), errors=config_errors(exc.errors))


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

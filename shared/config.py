"""Fleet configuration: one TOML file plus ``FLEET_<SECTION>__<KEY>`` env overrides.

``FleetConfig`` holds the sections every daemon shares (``[fleet]``, ``[slack]``, ``[notify]``,
``[mission_control]``); the app composes the root model by adding each registered daemon's
section (``fleet.config``), so this library names no daemon. Sources, highest first: init
values, the environment, the TOML file, the app's preset for the chosen ``[fleet] layout``,
the models' defaults. The pydantic models are the single source of every default
(config/fleet.example.toml is generated from them). Loading never echoes a secret: validation
errors are re-formatted as ``dotted.path: message`` without the raw input; an unreadable or
undecodable file or ``FLEET_*`` variable is a ConfigError naming it, never a traceback.

Files holding secrets must be private, like ssh's keys: a ``*_file`` secret, or the config file
itself when it sets a secret inline, that group/others can read is a ConfigError naming the file
and its mode (never the value). A process may read only some sections' ``*_file`` secrets
(``secret_sections``: ``fleet run NAME`` reads the shared sections' and its own), so no daemon
holds another's credentials. This module must never start anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Collection, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from shared.config_files import config_search_path, find_config_file
from shared.envfile import secret_mode_problem
from shared.exitcodes import EX_CONFIG
from shared.sections import (
    AlertingSection,
    DaemonSection,
    FleetSection,
    MissionControlSection,
    NotifySection,
    SlackSection,
    default_host,
    empty_table,
)

__all__ = [
    "EX_CONFIG",
    "ROOT_TOKEN",
    "SHARED_SECTIONS",
    "AlertingSection",
    "ConfigError",
    "DaemonSection",
    "FleetConfig",
    "FleetSection",
    "LayoutPresets",
    "MissionControlSection",
    "NotifySection",
    "SlackSection",
    "config_search_path",
    "cross_section_errors",
    "default_host",
    "find_config_file",
    "load_config",
    "resolve_root_path",
    "secret_modes_unchecked",
    "secret_sections_for",
]

ROOT_TOKEN = "<root>"
C = TypeVar("C", bound="FleetConfig")
S = TypeVar("S", bound=BaseModel)

# layout name -> section -> key -> value: what each [fleet] layout presets (the app's table).
LayoutPresets = Mapping[str, Mapping[str, Mapping[str, Any]]]

_toml_file: ContextVar[Path | None] = ContextVar("_toml_file", default=None)
_presets: ContextVar[LayoutPresets | None] = ContextVar("_presets", default=None)
_modes_unchecked: ContextVar[bool] = ContextVar("_modes_unchecked", default=False)


class ConfigError(Exception):
    """Invalid configuration. ``errors`` holds ``(dotted_path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "") -> None:
        self.errors = errors
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"invalid configuration ({self.source})" if self.source else "invalid configuration"
        lines = [f"{head}: {len(self.errors)} error(s)"]
        lines += [f"  {path}: {msg}" for path, msg in self.errors]
        return "\n".join(lines)


class FleetConfig(BaseSettings):
    """The shared part of the fleet configuration; sections mirror the TOML tables. The app's
    root model extends it with one field per registered daemon section."""

    model_config = SettingsConfigDict(
        env_prefix="FLEET_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
        # Built at the first load (RootConfig), never for this base alone: a daemon process
        # holds one compiled validator for the whole config, not one per model as well.
        defer_build=True,
    )

    # Defaults are empty tables validated by the root (validate_default): a section class is
    # never instantiated on its own, so its own validator is never built (defer_build).
    fleet: FleetSection = Field(default_factory=empty_table)
    slack: SlackSection = Field(default_factory=empty_table)
    notify: NotifySection = Field(default_factory=empty_table)
    mission_control: MissionControlSection = Field(default_factory=empty_table)
    alerting: AlertingSection = Field(default_factory=empty_table)

    # "<section>.<key>" of the *_file secrets this process was not given (secret_sections).
    _withheld: frozenset[str] = PrivateAttr(default=frozenset())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _toml_file.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        presets = _presets.get()
        if presets:
            sources.append(_LayoutPresetSource(settings_cls, presets))
        return tuple(sources)

    @model_validator(mode="after")
    def _resolve_root_paths(self) -> FleetConfig:
        root = self.fleet.root.expanduser()
        object.__setattr__(self.fleet, "root", root)  # resolved, not set: fields_set unchanged
        for _name, section in self.sections():
            for field_name in type(section).model_fields:
                value = getattr(section, field_name)
                resolved = _resolve_path_value(value, root)
                if resolved is not value:
                    object.__setattr__(section, field_name, resolved)
        return self

    def sections(self) -> Iterator[tuple[str, BaseModel]]:
        for name in type(self).model_fields:
            yield name, getattr(self, name)

    def daemon_section(self, section_name: str) -> DaemonSection:
        section = getattr(self, section_name, None)
        if not isinstance(section, DaemonSection):
            raise KeyError(section_name)
        return section

    def section(self, section_type: type[S]) -> S:
        """The one section of ``section_type`` (a daemon's own, typed): ``config.section(
        ClaimSweeperSection)``. KeyError when no registered daemon has that section."""
        for _name, section in self.sections():
            if type(section) is section_type:
                return section
        raise KeyError(section_type.__name__)

    def secrets_withheld(self, section_name: str) -> bool:
        """Did this process leave a ``*_file`` secret of ``section_name`` unread (it belongs to
        another daemon's process)? Then that section's secrets are empty here."""
        return any(key.partition(".")[0] == section_name for key in self._withheld)

    def daemon_sections(self) -> Iterator[tuple[str, DaemonSection]]:
        for name, section in self.sections():
            if isinstance(section, DaemonSection):
                yield name, section

    # Paths every daemon uses.
    @property
    def state_dir(self) -> Path:
        return self.fleet.root / "state"

    @property
    def heartbeat_dir(self) -> Path:
        return self.state_dir / "heartbeats"

    @property
    def role_file(self) -> Path:
        return self.state_dir / "role"


class _LayoutPresetSource(PydanticBaseSettingsSource):
    """The lowest-priority source: the values the chosen ``[fleet] layout`` presets. It reads
    the layout from what the sources above it (init, env, TOML) set, so a key set in any of
    them wins over the preset, and the preset wins over the models' defaults. An unknown layout
    presets nothing (the ``[fleet] layout`` field itself then reports it)."""

    def __init__(self, settings_cls: type[BaseSettings], presets: LayoutPresets) -> None:
        super().__init__(settings_cls)
        self._presets = presets

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole preset

    def __call__(self) -> dict[str, Any]:
        fleet = self.current_state.get("fleet")
        if isinstance(fleet, Mapping):
            layout = fleet.get("layout", "default")
        else:
            layout = getattr(fleet, "layout", "default")
        preset = self._presets.get(layout) if isinstance(layout, str) else None
        return {section: dict(keys) for section, keys in (preset or {}).items()}


def resolve_root_path(path: Path, root: Path) -> Path:
    """``path`` as the config resolves it: ``<root>/...`` under ``root``, ``~`` expanded."""
    text = str(path)
    if text == ROOT_TOKEN:
        return root
    if text.startswith(ROOT_TOKEN + "/"):
        return root / text[len(ROOT_TOKEN) + 1 :]
    return path.expanduser()


def _resolve_path_value(value: Any, root: Path) -> Any:
    if isinstance(value, Path):
        return resolve_root_path(value, root)
    if isinstance(value, list):
        items = [_resolve_path_value(v, root) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def _format_loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<top>"


#: the sections every daemon reads besides its own (their secrets reach every daemon)
SHARED_SECTIONS: tuple[str, ...] = tuple(FleetConfig.model_fields)


def secret_sections_for(section_name: str) -> tuple[str, ...]:
    """The sections whose ``*_file`` secrets the daemon of ``section_name`` reads."""
    return (*SHARED_SECTIONS, section_name)


@contextlib.contextmanager
def secret_modes_unchecked() -> Iterator[None]:
    """Load without refusing secrets files group/others can read: only for ``fleet cutover``,
    which reports such a file as a conflict and makes it private."""
    token = _modes_unchecked.set(True)
    try:
        yield
    finally:
        _modes_unchecked.reset(token)


def _secret_pairs(model: BaseModel) -> Iterator[tuple[str, str]]:
    """``(secret, secret_file)`` field names: a SecretStr field with a ``<name>_file`` sibling."""
    fields = type(model).model_fields
    for name in fields:
        if isinstance(getattr(model, name), SecretStr) and f"{name}_file" in fields:
            yield name, f"{name}_file"


def _nested_models(section: BaseModel) -> Iterator[tuple[str, BaseModel]]:
    """``("key[i]", model)`` for the tables of array-of-tables keys (``[[heartbeat.pings]]``)."""
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield f"{name}[{i}]", item


def _mode_problem(path: Path) -> str | None:
    """Why the secrets file ``path`` is not private (None: it is, or it cannot be looked at,
    which reading it reports). $CREDENTIALS_DIRECTORY is systemd's private copy (its ACL can
    show as group bits): trusted."""
    if _modes_unchecked.get():
        return None
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and Path(os.path.abspath(path)).is_relative_to(os.path.abspath(credentials)):
        return None
    try:
        return secret_mode_problem(path)
    except OSError:
        return None


def _read_secret_files(
    cfg: FleetConfig, secret_sections: Collection[str] | None
) -> list[tuple[str, str]]:
    """Fill every ``<name>_file`` secret of the sections in ``secret_sections`` (None: all) into
    its SecretStr sibling, refusing files group/others can read; files in nested tables
    (``heartbeat.pings[i].url_file``, read by their daemon) are checked only. Returns errors;
    records the secrets left unread."""
    errors: list[tuple[str, str]] = []
    withheld: set[str] = set()
    for section_name, section in cfg.sections():
        wanted = secret_sections is None or section_name in secret_sections
        for target, key in _secret_pairs(section):
            path = getattr(section, key)
            if path is None:
                continue
            if not wanted:
                withheld.add(f"{section_name}.{target}")
                continue
            path = Path(path).expanduser()
            problem = _mode_problem(path)
            if problem is not None:
                errors.append((f"{section_name}.{key}", problem))
                continue
            try:
                secret = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                errors.append((f"{section_name}.{key}", f"cannot read: {exc.strerror}"))
                continue
            except UnicodeDecodeError:
                errors.append((f"{section_name}.{key}", f"{path} is not UTF-8 text"))
                continue
            object.__setattr__(section, target, SecretStr(secret))
        if not wanted:
            continue
        for where, item in _nested_models(section):
            for _target, key in _secret_pairs(item):
                path = getattr(item, key)
                problem = _mode_problem(Path(path).expanduser()) if path is not None else None
                if problem is not None:
                    errors.append((f"{section_name}.{where}.{key}", problem))
    cfg._withheld = frozenset(withheld)
    return errors


def _inline_secrets(cfg: FleetConfig, data: Mapping[str, Any]) -> list[str]:
    """Dotted keys of the secrets the TOML document ``data`` sets inline (non-empty)."""

    def set_in(table: Any, model: BaseModel) -> list[str]:
        if not isinstance(table, Mapping):
            return []
        keys = {str(k).lower(): v for k, v in table.items()}
        found = [
            name
            for name in type(model).model_fields
            if isinstance(getattr(model, name), SecretStr) and keys.get(name) not in (None, "")
        ]
        for name in type(model).model_fields:
            items, value = keys.get(name), getattr(model, name)
            if isinstance(items, list) and isinstance(value, list):
                for i, (raw, item) in enumerate(zip(items, value, strict=False)):
                    if isinstance(item, BaseModel):
                        found += [f"{name}[{i}].{key}" for key in set_in(raw, item)]
        return found

    tables = {str(k).lower(): v for k, v in data.items()}
    return [
        f"{section_name}.{key}"
        for section_name, section in cfg.sections()
        for key in set_in(tables.get(section_name), section)
    ]


def _inline_secret_errors(
    cfg: FleetConfig, data: Mapping[str, Any], config_file: Path
) -> list[tuple[str, str]]:
    """A config file that sets a secret inline must be private like a token file."""
    inline = _inline_secrets(cfg, data)
    problem = _mode_problem(config_file) if inline else None
    if problem is None:
        return []
    return [(key, f"set inline, but {problem}, or move the value to {key}_file") for key in inline]


def _check_toml_file(config_file: Path, source: str) -> dict[str, Any]:
    """Read and parse the file once up front, so an unreadable one is a ConfigError naming it."""
    try:
        with config_file.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([("<file>", f"config file not found: {config_file}")], source) from None
    except OSError as exc:
        raise ConfigError(
            [("<file>", f"cannot read {config_file}: {exc.strerror}")], source
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [("<file>", f"{config_file} is not UTF-8 text (byte {exc.start}); TOML must be UTF-8")],
            source,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column, never the text there.
        raise ConfigError([("<file>", f"{config_file} is not valid TOML: {exc}")], source) from None


def _fleet_env() -> list[tuple[str, str]]:
    """The ``FLEET_*`` variables (any case, as pydantic-settings reads them), sorted."""
    prefix = str(FleetConfig.model_config.get("env_prefix", "FLEET_")).upper()
    return sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(prefix))


def _undecodable_env_values() -> list[tuple[str, str]]:
    # os.environ holds undecodable bytes as lone surrogates, which later fail wherever the
    # value is written (a log line, a file name); say so now, naming the variable.
    errors = []
    for name, value in _fleet_env():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            errors.append((ascii(name)[1:-1], f"is not valid UTF-8 (at character {exc.start})"))
    return errors


def _env_hint(loc: tuple[int | str, ...]) -> str:
    """`` (from $FLEET_X__Y)`` when the variable for ``loc`` (or a table holding it) is set."""
    names = {name.upper(): name for name, _ in _fleet_env()}
    keys = []
    for part in loc:
        if not isinstance(part, str):
            break
        keys.append(part)
    for k in range(len(keys), 0, -1):
        var = "FLEET_" + "__".join(keys[:k]).upper()
        if var in names:
            return f" (from ${names[var]})"
    return ""


def _env_decode_errors(model: type[FleetConfig], exc: SettingsError) -> list[tuple[str, str]]:
    """Which ``FLEET_*`` variables pydantic-settings cannot decode (a list or table value is
    JSON), found by reading each on its own with the same source; never their values."""
    errors: list[tuple[str, str]] = []
    source = EnvSettingsSource(model)
    for name, value in _fleet_env():
        source.env_vars = {name.lower(): value}
        try:
            source()
        except SettingsError as one:
            cause = one.__cause__
            if isinstance(cause, json.JSONDecodeError):
                # str(JSONDecodeError) is the message and position, never the document
                problem = (
                    f"not valid JSON ({cause}); a list or table value is JSON, "
                    'e.g. ["a", "b"] or {"key": "value"}'
                )
            else:
                problem = f"cannot be decoded ({type(cause).__name__})"
            errors.append((name, problem))
    return errors or [("<environment>", f"a FLEET_* variable cannot be decoded: {exc}")]


def load_config(
    path: str | os.PathLike[str] | None = None,
    model: type[C] = FleetConfig,  # type: ignore[assignment]
    presets: LayoutPresets | None = None,
    *,
    secret_sections: Collection[str] | None = None,
) -> C:
    """Load and validate the configuration into ``model`` (the app's root model; the shared
    sections alone by default), raising ConfigError naming every bad key. ``presets`` (the
    app's layout table) fills keys neither the file nor the environment set. Only the sections
    in ``secret_sections`` (None: every section) get their ``*_file`` secrets read."""
    config_file = find_config_file(path)
    source = str(config_file) if config_file else "embedded defaults"
    data: dict[str, Any] = {}
    if config_file is not None:
        data = _check_toml_file(config_file, source)
    env_errors = _undecodable_env_values()
    if env_errors:
        raise ConfigError(env_errors, source)
    token = _toml_file.set(config_file)
    presets_token = _presets.set(presets)
    try:
        cfg = model()
    except ValidationError as exc:
        errors = [
            (_format_loc(err["loc"]), err["msg"] + _env_hint(err["loc"]))
            for err in exc.errors(include_input=False)
        ]
        raise ConfigError(errors, source) from None
    except SettingsError as exc:
        raise ConfigError(_env_decode_errors(model, exc), source) from None
    finally:
        _presets.reset(presets_token)
        _toml_file.reset(token)
    errors = _read_secret_files(cfg, secret_sections)
    if config_file is not None:
        errors += _inline_secret_errors(cfg, data, config_file)
    errors += cross_section_errors(cfg)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def cross_section_errors(cfg: FleetConfig) -> list[tuple[str, str]]:
    """Rules that span keys or sections (pydantic validates each key on its own)."""
    errors: list[tuple[str, str]] = []
    # A row is claimed for send_lease_s and a send may take timeout_s (+5 s): a shorter lease
    # would let a second sender retry a send still in flight, i.e. a double post.
    if cfg.notify.send_lease_s <= cfg.slack.timeout_s + 5:
        errors.append(
            (
                "notify.send_lease_s",
                f"must exceed slack.timeout_s + 5 ({cfg.slack.timeout_s + 5:g}),"
                f" got {cfg.notify.send_lease_s:g}",
            )
        )
    # Metrics ports first (the old wording: "9802 is also ollama_health's"), then every other
    # port a daemon listens on (heartbeat's health_port), named against the metrics ports.
    enabled = [(name, section) for name, section in cfg.daemon_sections() if section.enabled]
    ports: dict[int, str] = {}
    for name, section in enabled:
        if section.metrics_port == 0:
            continue
        other = ports.get(section.metrics_port)
        if other is not None:
            errors.append((f"{name}.metrics_port", f"{section.metrics_port} is also {other}'s"))
        else:
            ports[section.metrics_port] = name
    extra: dict[int, str] = {}
    for name, section in enabled:
        for key, port in section.listening_ports().items():
            if key == "metrics_port" or port == 0:
                continue
            if port in ports:
                errors.append((f"{name}.{key}", f"{port} is also {ports[port]}'s metrics port"))
            elif port in extra:
                errors.append((f"{name}.{key}", f"{port} is also {extra[port]}"))
            else:
                extra[port] = f"{name}.{key}"
    return errors

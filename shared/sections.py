"""Config section models shared by every daemon: the ``[fleet]``, ``[slack]``, ``[notify]``,
``[mission_control]`` and ``[alerting]`` tables and the ``DaemonSection`` base each daemon's
section extends.

Plain pydantic data with every default documented once, in ``description``. Every config model
(the daemons' tables too) derives from ``SettingsModel``, whose checks and those of
``shared.config_values`` refuse at load time what would fail only at run time. No I/O beyond
reading the hostname for a default and zoneinfo's lookup of a time zone.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from shared.config_values import (
    check_bind_address,
    check_duration,
    check_http_url,
    check_no_nul,
    duration_unit_s,
)
from shared.schema_contract import valid_column_name
from shared.shared_tables import TASK_FILLED


def _postgres_url(value: str) -> str:
    """'' (not on Postgres) or a usable postgresql:// URL without a password in it."""
    from shared.mc_target import McTargetError, check_url

    if not value:
        return value
    try:
        return check_url(value)
    except McTargetError as exc:
        raise ValueError(str(exc)) from None


#: ``[notify] url`` and ``[mission_control] url``
PostgresUrl = Annotated[str, AfterValidator(_postgres_url)]

__all__ = [
    "AlertingSection",
    "DaemonSection",
    "FleetSection",
    "Layout",
    "MissionControlSection",
    "NotifySection",
    "SettingsModel",
    "SlackSection",
    "default_host",
    "empty_table",
]


# Host layouts: where the operator-visible files go. The app's table (fleet/layout.py) says
# which keys each one presets; keys set in the file or the environment win over it.
Layout = Literal["default", "alai"]


def empty_table() -> Any:
    """The default of a nested model field: an empty table the enclosing model validates
    (``validate_default``), so the nested model's own validator is never built."""
    return {}


def default_host() -> str:
    return socket.gethostname().split(".")[0].lower() or "localhost"


class SettingsModel(BaseModel):
    """Base of every config model: unknown keys are errors, floats must be finite, a key named
    as a duration (``*_ms``, ``*_s``, ``*_h``, ``*_days``; numbers or a table of them) holds at
    most ten years, and no path holds a NUL character. Validators are built at first use
    (``defer_build``): a daemon validates its config through the root model only, so a section's
    own validator is never built in it (about 0.4 MiB of every daemon's RSS)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, defer_build=True)

    @field_validator("*")
    @classmethod
    def _run_time_safe(cls, value: Any, info: ValidationInfo) -> Any:
        unit = duration_unit_s(info.field_name or "")
        if unit is not None:
            numbers = value.values() if isinstance(value, dict) else [value]
            for number in numbers:
                if isinstance(number, int | float) and not isinstance(number, bool):
                    check_duration(number, unit)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Path):
                check_no_nul(str(item))
        return value


class _Section(SettingsModel):
    model_config = ConfigDict(validate_default=True)


class FleetSection(_Section):
    root: Path = Field(
        Path("~/.local/share/alai-fleet"),
        description="state root holding databases/, state/, logs/, config/ (hosts use ~/system)",
    )
    layout: Layout = Field(
        "default",
        description="host preset for operator-visible paths: default, or alai (root ~/system and "
        "the seed runbook's file names; keys set here win; `fleet config paths` shows them)",
    )
    host: str = Field(default_factory=default_host, description="this host's short name")
    role: Literal["primary", "standby"] = Field(
        "primary", description="primary or standby; the file <root>/state/role overrides it"
    )
    bind: str = Field("127.0.0.1", description="address metrics and health endpoints bind")
    service_user: str = Field(
        "",
        description="account system-mode systemd units run as (User=); empty: $SUDO_USER "
        "or whoever runs fleet units",
    )
    install_prefix: str = Field(
        "", description="venv whose bin/fleet generated units run; empty: this one"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="minimum log level"
    )
    log_file: Path | None = Field(
        None,
        description="file the daemons append their JSON log lines to, reopened on SIGHUP or "
        "when rotated away; {daemon} becomes the daemon's name; unset: stdout (the journal "
        "under systemd); generated LaunchAgents pass this, else <root>/logs/<daemon>.log",
    )
    log_max_bytes: int = Field(10_000_000, gt=0, description="rotate fleet JSONL logs at this size")
    log_keep: int = Field(5, ge=1, le=100, description="rotated JSONL log files kept")
    stop_grace_s: float = Field(
        10.0, gt=0, le=300, description="time an in-flight cycle gets to finish on SIGTERM"
    )
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="metrics/health servers drop a client whose request head is not complete "
        "this long after it started (slowloris)",
    )
    http_idle_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="metrics/health servers drop a keep-alive idle this long"
    )
    http_max_connections: int = Field(
        64,
        ge=1,
        le=10_000,
        description="connections per metrics/health server; all of a process's servers "
        "together hold at most a quarter of ulimit -n",
    )

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        return check_bind_address(value)

    @field_validator("log_file", mode="before")
    @classmethod
    def _log_file(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        text = str(value)
        if not text.startswith(("/", "~", "<root>")):
            raise ValueError("must be an absolute path, ~/... or <root>/...")
        rest = text.replace("{daemon}", "")
        if "{" in rest or "}" in rest:
            raise ValueError("only {daemon} may stand in a log file's name")
        return value


class SlackSection(_Section):
    token: SecretStr = Field(
        SecretStr(""), description="bot token; empty: Slack messages wait in the outbox"
    )
    token_file: Path | None = Field(None, description="file holding the token (wins over token)")
    base_url: str = Field("https://slack.com/api/", description="Slack Web API base URL")
    ceo_channel: str = Field("#ceo", description="channel for CEO pushes (never silenced)")
    ops_channel: str = Field("#ops", description="channel for operational alerts")
    timeout_s: float = Field(10.0, gt=0, le=120, description="per-request timeout")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return check_http_url(value)


class NotifySection(_Section):
    outbox_db: Path = Field(
        Path("<root>/state/outbox.db"), description="durable outbox shared by this host's daemons"
    )
    stale_alert_s: float = Field(
        3600.0, gt=0, description="alerts older than this are collapsed into one summary"
    )
    burst: int = Field(
        5, ge=1, description="more ready alerts than this for one channel go out as a summary"
    )
    rate_per_minute: int = Field(20, ge=1, description="messages per channel per minute")
    max_backoff_s: float = Field(600.0, gt=0, description="cap on a failing message's retry delay")
    prune_after_s: float = Field(
        7 * 86400.0, gt=0, description="sent, collapsed and dead rows are deleted after this"
    )
    send_lease_s: float = Field(
        60.0, gt=0, description="a claimed row whose sender died is retried after this"
    )
    url: PostgresUrl = Field(
        "",
        description=(
            "postgresql://user@host:port/db: one outbox every host shares instead of "
            "outbox_db (dedup fleet-wide); never with a password in it (password_file)"
        ),
    )
    password: SecretStr = Field(SecretStr(""), description="set from password_file")
    password_file: Path | None = Field(
        None, description="file (mode 0600) holding the Postgres password for url"
    )


class MissionControlSection(_Section):
    db: Path = Field(
        Path("<root>/databases/mission-control.db"), description="Mission Control task store"
    )
    url: PostgresUrl = Field(
        "",
        description=(
            "postgresql://user@host:port/db: Mission Control on Postgres instead of db "
            "($ALAI_MC_URL wins); never with a password in it (password_file)"
        ),
    )
    password: SecretStr = Field(SecretStr(""), description="set from password_file")
    password_file: Path | None = Field(
        None, description="file (mode 0600) holding the Postgres password for url"
    )

    task_defaults: dict[str, str | int | float | bool] = Field(
        {},
        description=(
            "values for tasks columns the fleet does not fill (e.g. created_by = "
            '"email-reactor"), needed when mc.js made them NOT NULL without a default'
        ),
    )

    @field_validator("task_defaults")
    @classmethod
    def _plain_columns(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        bad = sorted(k for k in value if not valid_column_name(k) or k == "id")
        if bad:
            raise ValueError(f"not a column the fleet may fill: {', '.join(map(repr, bad))}")
        ours = sorted(k for k in value if k in TASK_FILLED)
        if ours:
            raise ValueError(
                f"{', '.join(ours)}: the fleet fills these itself (task_defaults is for the "
                "columns it does not)"
            )
        return value


class DaemonSection(_Section):
    """Keys every daemon section has (each daemon's section subclasses it)."""

    enabled: bool = Field(True, description="run this daemon on this host")
    interval_s: float = Field(60.0, gt=0, description="seconds between cycles")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(
        120.0, gt=0, description="a cycle running longer is cancelled and counted failed"
    )
    backoff_max_s: float = Field(
        600.0, gt=0, description="cap on the retry delay after consecutive failed cycles"
    )

    def listening_ports(self) -> dict[str, int]:
        """Every TCP port this daemon listens on, by key (0: none); check-config refuses two
        enabled daemons sharing one."""
        return {"metrics_port": self.metrics_port}


_CHANNEL = re.compile(r"[#@]?[A-Za-z0-9._-]+")


class AlertingSection(_Section):
    """Where Prometheus sends its alerts and how Alertmanager delivers them (``fleet
    observability prometheus`` / ``alertmanager`` read it; the daemons do not). The Slack
    webhook URL and bot token are secrets: only the paths of the files holding them are here,
    and Alertmanager reads those files itself (docs/alerts.md, "Delivery")."""

    runbook_base_url: str = Field(
        "https://git.example.com/alai/alai-fleet/blob/main/",
        description="absolute URL the repository's docs/ are browsable under; runbook_url "
        "and doc_url in the alerts are this plus docs/...",
    )
    alertmanagers: list[str] = Field(
        ["127.0.0.1:9093"],
        description="host:port of each Alertmanager Prometheus sends to (empty: no alerting block)",
    )
    escalation_channel: str = Field(
        "",
        description="Slack channel for critical alerts (the page); empty: [slack] ops_channel",
    )
    slack_api_url_file: Path = Field(
        Path("/etc/prometheus/alai-fleet/slack-webhook.url"),
        description="file Alertmanager reads the Slack incoming-webhook URL from (or "
        "https://slack.com/api/chat.postMessage with slack_bot_token_file)",
    )
    escalation_slack_api_url_file: Path | None = Field(
        None,
        description="a second webhook URL file for the escalation channel (a webhook posts to "
        "one channel only); unset: slack_api_url_file",
    )
    slack_bot_token_file: Path | None = Field(
        None,
        description="file holding a Slack bot token Alertmanager sends as Bearer (with "
        "chat.postMessage, so each receiver posts to its own channel); unset: plain webhooks",
    )
    group_wait_s: float = Field(
        30.0, gt=0, description="Alertmanager waits this long to group a new alert's first message"
    )
    group_interval_s: float = Field(
        300.0, gt=0, description="delay before a group's next message (new alerts, resolved)"
    )
    repeat_interval_s: float = Field(
        14400.0, gt=0, description="a still-firing group is posted again after this"
    )

    @field_validator("runbook_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return check_http_url(value)

    @field_validator("alertmanagers")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                check_http_url(f"http://{item}")
            except ValueError:
                raise ValueError(f"{item!r} is not host:port") from None
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or "/" in item or "@" in item:
                raise ValueError(f"{item!r} is not host:port")
        return value

    @field_validator("escalation_channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if value and not _CHANNEL.fullmatch(value):
            raise ValueError("must be a Slack channel (#name) or an ID, without spaces")
        return value

"""Config section models shared by every daemon: the ``[fleet]``, ``[slack]``, ``[notify]``
and ``[mission_control]`` tables and the ``DaemonSection`` base each daemon's section extends.

Plain pydantic data with every default documented once, in ``description``. No I/O beyond
reading the hostname for a default.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from shared.schema_contract import valid_column_name
from shared.shared_tables import TASK_FILLED

__all__ = [
    "DaemonSection",
    "FleetSection",
    "Layout",
    "MissionControlSection",
    "NotifySection",
    "SlackSection",
    "default_host",
]


# Host layouts: where the operator-visible files go. The app's table (fleet/layout.py) says
# which keys each one presets; keys set in the file or the environment win over it.
Layout = Literal["default", "alai"]


def default_host() -> str:
    return socket.gethostname().split(".")[0].lower() or "localhost"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


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


class SlackSection(_Section):
    token: SecretStr = Field(
        SecretStr(""), description="bot token; empty: Slack messages wait in the outbox"
    )
    token_file: Path | None = Field(None, description="file holding the token (wins over token)")
    base_url: str = Field("https://slack.com/api/", description="Slack Web API base URL")
    ceo_channel: str = Field("#ceo", description="channel for CEO pushes (never silenced)")
    ops_channel: str = Field("#ops", description="channel for operational alerts")
    timeout_s: float = Field(10.0, gt=0, le=120, description="per-request timeout")


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


class MissionControlSection(_Section):
    db: Path = Field(
        Path("<root>/databases/mission-control.db"), description="Mission Control task store"
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

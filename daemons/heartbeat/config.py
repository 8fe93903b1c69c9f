"""The ``[heartbeat]`` config section with its ``[[heartbeat.peers]]`` and ``[[heartbeat.pings]]``
tables. Pure data; defaults documented once, here. Ping URLs are secrets (a healthchecks.io
check UUID is the credential): they are ``SecretStr`` and must never be rendered or logged raw.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from shared.config_values import check_bind_address, check_http_url
from shared.sections import DaemonSection, SettingsModel

__all__ = ["HeartbeatSection", "PeerConfig", "PingConfig"]

PEER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_peer_url(url: str, *, allow_credentials: bool = False) -> str:
    """An absolute http(s) URL (``shared.config_values``) without quotes or GitHub expression
    markers (a peer URL can end up in a generated workflow)."""
    if "${{" in url or '"' in url or "'" in url:
        raise ValueError("must not contain quotes or '${{'")
    return check_http_url(url, allow_credentials=allow_credentials)


class PeerConfig(SettingsModel):
    """Another host whose /health this one watches (FORGE watches ANVIL and the reverse)."""

    name: str = Field(description="the peer's short name, used in alerts and metric labels")
    url: str = Field(description="the peer's health URL, e.g. http://forge.example.org:8099/health")
    interval_s: float = Field(60.0, ge=0.05, description="seconds between probes of this peer")
    timeout_s: float = Field(10.0, gt=0, le=120, description="a probe slower than this failed")
    alert_after: int = Field(2, ge=1, description="consecutive failed probes before #ops alert")
    escalate_after: int = Field(
        5, ge=1, description="consecutive failed probes before the escalation target is told"
    )
    recovery_after: int = Field(
        2, ge=1, description="consecutive good probes before an incident counts as recovered"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not PEER_NAME_RE.match(value):
            raise ValueError("must be 1-32 chars of a-z, 0-9, '-' or '_', starting alphanumeric")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_peer_url(value)

    @model_validator(mode="after")
    def _check_levels(self) -> Self:
        if self.escalate_after < self.alert_after:
            raise ValueError(
                f"escalate_after ({self.escalate_after}) must be >= alert_after"
                f" ({self.alert_after})"
            )
        return self


class PingConfig(SettingsModel):
    """A dead-man's switch (healthchecks.io-compatible): ``url`` while this host's fleet is ok,
    ``<url>/fail`` while it is degraded. Silence from us is what raises the alarm there."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="label for logs (the URL itself is never logged)")
    url: SecretStr = Field(
        SecretStr(""), description="ping URL (secret: it embeds the check's token)"
    )
    url_file: Path | None = Field(
        None, description="file holding the ping URL (wins over url); absolute or ~ path"
    )
    interval_s: float = Field(60.0, ge=0.05, description="seconds between pings")
    timeout_s: float = Field(10.0, gt=0, le=120, description="per-attempt timeout")
    retries: int = Field(2, ge=0, le=10, description="extra attempts after a failed ping")

    @field_validator("url_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _check_source(self) -> Self:
        raw = self.url.get_secret_value()
        if self.url_file is None and not raw:
            raise ValueError("give url or url_file")
        if raw:
            # Never echo the URL: it is the secret.
            try:
                # The whole URL is the secret (never logged), so credentials in it may stay.
                check_peer_url(raw, allow_credentials=True)
            except ValueError as exc:
                raise ValueError(f"url {exc}") from None
        return self


class HeartbeatSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="run this daemon on this host")
    interval_s: float = Field(
        5.0, gt=0, description="seconds between cycles; each peer/ping keeps its own interval_s"
    )
    metrics_port: int = Field(9804, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(
        30.0, gt=0, description="a cycle running longer is cancelled and counted failed"
    )
    backoff_max_s: float = Field(
        30.0, gt=0, description="cap on the retry delay after failed cycles (keep probing)"
    )
    health_bind: str = Field(
        "127.0.0.1", description="address /health binds (the hosts use their Tailscale address)"
    )
    health_port: int = Field(8099, ge=0, le=65535, description="port of /health, /health/fleet")
    health_cache_s: float = Field(
        1.0, ge=0, le=60, description="seconds one /health answer is reused (0: every request)"
    )
    escalation_channel: str = Field(
        "", description="Slack channel or user ID (DM) for escalations; empty: ops_channel"
    )
    state_file: Path = Field(
        Path("<root>/state/heartbeat-peers.json"),
        description="peer incident state, kept across restarts",
    )
    peers: list[PeerConfig] = Field(
        [],
        description="[[heartbeat.peers]] name, url, interval_s, timeout_s, alert_after,"
        " escalate_after, recovery_after",
    )
    pings: list[PingConfig] = Field(
        [], description="[[heartbeat.pings]] name, url or url_file, interval_s, timeout_s, retries"
    )

    @field_validator("health_bind")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        return check_bind_address(value)

    def listening_ports(self) -> dict[str, int]:
        return {**super().listening_ports(), "health_port": self.health_port}

    @model_validator(mode="after")
    def _check_unique(self) -> Self:
        names = [p.name for p in self.peers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"peers: duplicate name(s) {', '.join(dupes)}")
        if self.health_port and self.health_port == self.metrics_port:
            raise ValueError(f"health_port {self.health_port} is also metrics_port")
        return self

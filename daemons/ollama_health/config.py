"""The ``[ollama_health]`` config section. Pure data; defaults documented once, here.

Hosts and failover rules use the key names of the seed's tier-routing.json (``url``,
``tailscale_url``, ``health_path``, ``health_timeout_ms``, ``role``; ``redirect_<host>_tiers``,
``to_<host>_models``, ``to_claude``), inline here or read from ``tier_routing_file``. Rules
are checked by the same parser the daemon applies to that file (``daemons.ollama_health.table``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.config_values import check_http_url
from shared.sections import DaemonSection, SettingsModel

__all__ = ["DEFAULT_HEALTH_PATHS", "OllamaHealthSection", "OllamaHostSection", "default_hosts"]

DEFAULT_HEALTH_PATHS = {"ollama": "/api/tags", "openai": "/v1/models"}


def _check_base_url(value: str) -> str:
    # The key is in the error's path; the value is not echoed (it may carry credentials).
    return check_http_url(value.strip()).rstrip("/")


class OllamaHostSection(SettingsModel):
    """One watched LLM server (a value of ``ollamaHosts`` in tier-routing.json)."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="base URL probed first, e.g. http://127.0.0.1:11434")
    tailscale_url: str | None = Field(
        None, description="second base URL probed at the same time; empty: none"
    )
    health_path: str | None = Field(
        None, description="probe path; default /api/tags (ollama) or /v1/models (openai)"
    )
    health_timeout_ms: int = Field(
        3000, gt=0, le=60_000, description="one probe's whole time budget (both URLs at once)"
    )
    role: str = Field("", description="free text from tier-routing.json, shown in status")
    kind: Literal["ollama", "openai"] = Field(
        "ollama",
        description="ollama: 200 with a models list; openai (MLX server): 200 with a data list",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_base_url(value)

    @field_validator("tailscale_url")
    @classmethod
    def _tailscale_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _check_base_url(value)

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith("/"):
            raise ValueError(f"health_path must start with '/', got {value!r}")
        return value

    @property
    def probe_path(self) -> str:
        return self.health_path or DEFAULT_HEALTH_PATHS[self.kind]


def default_hosts() -> dict[str, Any]:
    """A fresh machine watches one local Ollama; a dead one is reported, never fatal. A plain
    table the section validates (validate_default), like a configured one."""
    return {"anvil": {"url": "http://127.0.0.1:11434", "role": "primary-infra"}}


class OllamaHealthSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(True, description="run this daemon on this host")
    interval_s: float = Field(15.0, gt=0, description="seconds between probe cycles")
    metrics_port: int = Field(9802, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(
        30.0, gt=0, description="a cycle running longer is cancelled (a probe takes one timeout)"
    )
    backoff_max_s: float = Field(
        60.0, gt=0, description="cap on the retry delay while cycles fail (keep probing often)"
    )
    status_file: Path = Field(
        Path("<root>/state/ollama-health.json"),
        description="routing/status JSON the daemon writes; its directory must be private "
        "(routers on the hosts read it through status_link)",
    )
    override_file: Path = Field(
        Path("<root>/state/ollama-health-override.json"),
        description="manual failover file; its host entries win over probes (a regular file "
        "of this user or root, not group/world-writable, at most 64 KiB)",
    )
    tier_routing_file: Path | None = Field(
        None,
        description="tier-routing.json whose ollamaHosts/failoverRules replace hosts/rules",
    )
    failure_threshold: int = Field(
        2, ge=1, le=100, description="consecutive failed probes before a host is unhealthy"
    )
    recovery_threshold: int = Field(
        2, ge=1, le=100, description="consecutive good probes before a host is healthy again"
    )
    hosts: dict[str, OllamaHostSection] = Field(
        default_factory=default_hosts,
        description="watched servers by name (ignored when tier_routing_file is set)",
    )
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="failoverRules by name, seed keys (ignored when tier_routing_file is set)",
    )

    @field_validator("tier_routing_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_inline_table(self) -> OllamaHealthSection:
        from daemons.ollama_health.table import TableError, table_from_section

        longest = max((h.health_timeout_ms for h in self.hosts.values()), default=0) / 1000
        if longest + 1 >= self.cycle_timeout_s:
            raise ValueError(
                f"cycle_timeout_s ({self.cycle_timeout_s:g}) must exceed the longest "
                f"health_timeout_ms ({longest:g} s) by more than 1 s"
            )
        if self.tier_routing_file is None:
            try:
                table_from_section(self)
            except TableError as exc:
                raise ValueError(str(exc)) from None
        return self

    # issue 13: the real status file stays private; the legacy /tmp path gets a symlink to it
    status_link: Path | None = Field(
        None,
        description="legacy path (layout alai: /tmp/ollama-health.json) where the daemon "
        "publishes a symlink to status_file; empty: none",
    )

    @field_validator("status_link", mode="before")
    @classmethod
    def _no_link(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

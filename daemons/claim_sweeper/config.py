"""The ``[claim_sweeper]`` config section. Pure data; defaults documented once, here."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from shared.sections import DaemonSection

__all__ = ["ClaimSweeperSection"]


class ClaimSweeperSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    interval_s: float = Field(60.0, gt=0, description="seconds between sweeps")
    metrics_port: int = Field(9806, ge=0, le=65535, description="Prometheus /metrics port")
    cycle_timeout_s: float = Field(30.0, gt=0, description="a sweep running longer is cancelled")
    auto_release: bool = Field(
        False, description="release expired leases (writes mission-control.db: primary only)"
    )
    alert_after_s: float = Field(
        900.0, ge=0, description="alert #ops once per lease expired longer than this"
    )

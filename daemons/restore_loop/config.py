"""The ``[restore_loop]`` config section. Pure data; defaults documented once, here."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from shared.sections import DaemonSection

__all__ = ["RestoreLoopSection"]


class RestoreLoopSection(DaemonSection):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    enabled: bool = Field(False, description="run this daemon on this host (not built yet)")
    interval_s: float = Field(10.0, gt=0, description="seconds between cycles")
    metrics_port: int = Field(9803, ge=0, le=65535, description="Prometheus /metrics port")

"""``Host``: the facts one cutover works from: the loaded config and manifests, the home
directory holding the legacy jobs (``--home``), the platform (launchd on macOS, systemd on
Linux; ``--platform`` overrides), the unit mode (on macOS: LaunchAgents in the operator's
``gui/<uid>``, or with ``system`` LaunchDaemons in the ``system`` domain), this host's role,
and where the fleet's own service files go. Everything else in ``fleet.cutover`` takes a Host.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fleet.install import LAUNCH_DAEMONS, account_group
from shared.config import FleetConfig
from shared.manifest import DaemonManifest
from shared.roles import Role, effective_role
from shared.units import (
    InstallLayout,
    Mode,
    ServiceSpec,
    Target,
    label_name,
    service_specs,
    unit_name,
)

__all__ = ["DISABLED_DIR", "Host", "Platform", "build_host"]

Platform = Literal["darwin", "linux"]
DISABLED_DIR = "disabled-by-fleet"


@dataclass(frozen=True)
class Host:
    config: FleetConfig
    config_file: Path | None
    manifests: tuple[DaemonManifest, ...]
    home: Path
    platform: Platform
    mode: Mode
    role: Role
    prefix: Path
    system_unit_dir: Path
    service_user: str | None
    uid: int  # whose gui domain the legacy LaunchAgents are in
    launchd_system_dir: Path = LAUNCH_DAEMONS

    @property
    def target(self) -> Target:
        return "launchd" if self.platform == "darwin" else "systemd"

    @property
    def launch_agents(self) -> Path:
        return self.home / "Library" / "LaunchAgents"

    @property
    def user_unit_dir(self) -> Path:
        return self.home / ".config" / "systemd" / "user"

    @property
    def legacy_config_dir(self) -> Path:
        """The seed hosts' ``~/system/config`` (old litestream.yml, ops-watchdog.json)."""
        return self.home / "system" / "config"

    @property
    def fleet_unit_dir(self) -> Path:
        """Where the fleet's own units / plists are installed on this host."""
        if self.target == "launchd":
            return self.launchd_system_dir if self.mode == "system" else self.launch_agents
        return self.user_unit_dir if self.mode == "user" else self.system_unit_dir

    @property
    def audit_file(self) -> Path:
        return self.config.state_dir / "cutover" / "audit.jsonl"

    @property
    def domain(self) -> str:
        """The legacy LaunchAgents' domain."""
        return f"gui/{self.uid}"

    @property
    def fleet_domain(self) -> str:
        """The launchd domain the fleet's own jobs are bootstrapped into."""
        return "system" if self.mode == "system" else self.domain

    def layout(self) -> InstallLayout:
        """As ``fleet units install`` computes it (its user units name $HOME's fleet.env)."""
        return InstallLayout(
            mode=self.mode,
            prefix=self.prefix,
            config_file=self.config_file,
            user=self.service_user,
            home=Path.home(),
            group=account_group(self.service_user) if self.service_user else None,
        )

    def services(self) -> list[ServiceSpec]:
        """The services the fleet runs on this host (ValueError: two share a name)."""
        return service_specs(self.config, self.manifests, self.layout())

    def fleet_names(self, services: Sequence[str]) -> list[str]:
        """The fleet's launchd labels or systemd unit names for ``services``."""
        if self.target == "launchd":
            return [label_name(s) for s in services]
        return [unit_name(s) for s in services]


def build_host(
    config: FleetConfig,
    config_file: Path | None,
    manifests: Sequence[DaemonManifest],
    *,
    home: Path,
    platform: Platform | None,
    mode: Mode | None,
    system_unit_dir: Path,
    launchd_system_dir: Path = LAUNCH_DAEMONS,
) -> Host:
    chosen: Platform = platform or ("darwin" if sys.platform == "darwin" else "linux")
    if chosen == "darwin":
        unit_mode: Mode = mode or "user"  # the legacy agents' gui domain, unless asked
    else:
        unit_mode = mode or ("system" if os.geteuid() == 0 else "user")
    home = Path(os.path.abspath(home.expanduser()))
    uid = os.getuid()
    if chosen == "darwin" and unit_mode == "system" and uid == 0 and home.is_dir():
        uid = home.stat().st_uid  # run with sudo: the legacy agents are the home owner's
    user = None
    if unit_mode == "system":
        user = config.fleet.service_user or os.environ.get("SUDO_USER") or getpass.getuser() or None
    prefix = config.fleet.install_prefix or sys.prefix
    return Host(
        config=config,
        config_file=Path(os.path.abspath(config_file)) if config_file else None,
        manifests=tuple(manifests),
        home=home,
        platform=chosen,
        mode=unit_mode,
        role=effective_role(config.fleet.role, config.role_file),
        prefix=Path(os.path.abspath(Path(prefix).expanduser())),
        system_unit_dir=system_unit_dir,
        service_user=user,
        uid=uid,
        launchd_system_dir=launchd_system_dir,
    )

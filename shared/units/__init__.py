"""systemd units and launchd plists (LaunchAgents or LaunchDaemons) rendered from the config
and the daemons' manifests: one service per enabled daemon that accepts the host's role, plus
the companion processes a manifest asks for (e.g. ``litestream replicate`` on the primary).

``services`` decides what runs and with which needs, ``systemd`` and ``launchd`` render one
service each, ``generated`` renders a whole set and recognises our files. The renderers take
manifests as arguments and never import a daemon or the app; they never start, stop or signal
a service, and never write a secret into a unit or plist.
"""

from __future__ import annotations

from shared.units.generated import GeneratedSet, file_name, generate, is_generated_file
from shared.units.launchd import (
    KeepAliveConditions,
    LaunchAgentPlist,
    LaunchDaemonPlist,
    launchd_job,
    render_launchd,
)
from shared.units.services import (
    DEFAULT_TIMINGS,
    GENERATED_MARKER,
    LABEL_PREFIX,
    MALLOC_ARENA_MAX,
    PYTHON_OPTIMIZE,
    UNIT_PREFIX,
    Credential,
    InstallLayout,
    Mode,
    ServiceSpec,
    ServiceTimings,
    Target,
    label_name,
    service_specs,
    skipped_daemons,
    stop_timeout_s,
    unit_name,
)
from shared.units.systemd import render_systemd

__all__ = [
    "DEFAULT_TIMINGS",
    "GENERATED_MARKER",
    "LABEL_PREFIX",
    "MALLOC_ARENA_MAX",
    "PYTHON_OPTIMIZE",
    "UNIT_PREFIX",
    "Credential",
    "GeneratedSet",
    "InstallLayout",
    "KeepAliveConditions",
    "LaunchAgentPlist",
    "LaunchDaemonPlist",
    "Mode",
    "ServiceSpec",
    "ServiceTimings",
    "Target",
    "file_name",
    "generate",
    "is_generated_file",
    "label_name",
    "launchd_job",
    "render_launchd",
    "render_systemd",
    "service_specs",
    "skipped_daemons",
    "stop_timeout_s",
    "unit_name",
]

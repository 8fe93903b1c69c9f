"""Who writes a launchd job's log: for a fleet daemon, the daemon itself.

launchd opens StandardOutPath once per spawn and never again, so a file it holds cannot be
rotated (newsyslog renames it; launchd goes on writing the renamed file until the job is
restarted). So a fleet daemon is handed its log file (``[fleet] log_file`` through
``LOG_FILE_ENV``) and appends to it itself, reopening it on SIGHUP and when its path names a
new file (``shared.logfile``). launchd's StandardOutPath and StandardErrorPath both name the
``.err.log``: what is written before logging starts (a config error, launchd-run's refusal)
and a crash's traceback. A companion (litestream) keeps launchd's files. Pure.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.config import FleetConfig
from shared.logfile import log_file_path
from shared.units.services import ServiceSpec

__all__ = ["LOG_FILE_ENV", "daemon_log_file", "launchd_log_paths"]

#: the environment override a launchd job's ``fleet run`` reads ``[fleet] log_file`` from
LOG_FILE_ENV = "FLEET_FLEET__LOG_FILE"


def daemon_log_file(spec: ServiceSpec, config: FleetConfig) -> Path | None:
    """The file ``spec``'s daemon writes its JSON log lines to under launchd: its own
    section's service log file when one is set (restore-loop's ``log_file``), else ``[fleet]
    log_file`` for it, else ``<root>/logs/<name>.log``. None for a companion."""
    if not spec.fleet_daemon:
        return None
    template = config.fleet.log_file
    if spec.log_file is not None or template is None:
        return spec.stdout_path
    return Path(os.path.abspath(log_file_path(template, spec.name)))


def launchd_log_paths(spec: ServiceSpec, config: FleetConfig) -> tuple[Path, Path, dict[str, str]]:
    """StandardOutPath, StandardErrorPath and the environment to add for ``spec``."""
    own = daemon_log_file(spec, config)
    if own is None:
        return spec.stdout_path, spec.stderr_path, {}
    return spec.stderr_path, spec.stderr_path, {LOG_FILE_ENV: str(own)}

"""The secrets files a daemon's process depends on outside the config: ``fleet.env`` (every
fleet daemon's unit loads it), the daemon's own ``fleet-<daemon>.env`` and the env file its
manifest declares (restore-loop's ``litestream.env``), in the system (/etc/alai-fleet) and the
user (~/.config/alai-fleet) place. ``fleet run`` and ``fleet check-config`` refuse (exit 78) a
file of these that group/others can read, naming it and its mode; ``check-config`` also names
a daemon's own secret put in the shared ``fleet.env``, which every daemon would get.

Reads file modes and, for ``fleet.env``, variable names; never prints or keeps a value. A file
that is missing, or that this account cannot look at, is not reported (the units load them
optionally; systemd reads the root-only ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import SecretStr

from shared.config import FleetConfig
from shared.envfile import (
    SYSTEM_ENV_DIR,
    EnvFileError,
    fleet_env_file,
    read_env_file,
    secret_mode_problem,
    user_env_dir,
)
from shared.manifest import DaemonManifest

__all__ = ["env_file_errors", "env_files", "misplaced_shared_secrets"]


def _dirs(home: Path) -> tuple[Path, ...]:
    return (SYSTEM_ENV_DIR, user_env_dir(home))


def env_files(config: FleetConfig, daemons: Iterable[DaemonManifest], home: Path) -> list[Path]:
    """The env files the services of ``daemons`` load: fleet.env, fleet-<daemon>.env and the
    manifest's declared secrets file, first occurrence kept."""
    paths = [fleet_env_file(d) for d in _dirs(home)]
    for manifest in daemons:
        paths += [fleet_env_file(d, manifest.name) for d in _dirs(home)]
        declared = manifest.secrets_env(config, config.daemon_section(manifest.section_name))
        if declared is not None:
            paths.append(declared.path.expanduser())
    return list(dict.fromkeys(paths))


def env_file_errors(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """``(file, why)`` for each existing env file group/others can access."""
    errors: list[tuple[str, str]] = []
    for path in paths:
        try:
            problem = secret_mode_problem(path)
        except OSError:
            continue
        if problem is not None:
            errors.append((str(path), problem))
    return errors


def misplaced_shared_secrets(
    daemons: Sequence[DaemonManifest], home: Path
) -> list[tuple[str, str]]:
    """``(file, why)`` for each ``FLEET_<DAEMON_SECTION>__<SECRET>`` variable in a readable
    ``fleet.env``: every daemon's unit loads that file, so the secret would reach them all."""
    secrets: dict[str, tuple[str, str]] = {}  # variable -> (section, daemon name)
    for manifest in daemons:
        section = manifest.section
        for key, field in section.model_fields.items():
            if field.annotation is SecretStr:
                var = f"FLEET_{manifest.section_name}__{key}".upper()
                secrets[var] = (manifest.section_name, manifest.name)
    errors: list[tuple[str, str]] = []
    for directory in _dirs(home):
        path = fleet_env_file(directory)
        try:
            names = read_env_file(path, require_private=False)
        except EnvFileError:
            continue  # missing or not ours to read; its mode is env_file_errors' business
        for var in sorted(names):
            if var.upper() in secrets:
                section_name, daemon = secrets[var.upper()]
                errors.append(
                    (
                        str(path),
                        f"{var} is a secret of [{section_name}] only, but every daemon loads "
                        f"{path.name}: move it to {fleet_env_file(directory, daemon)}",
                    )
                )
    return errors

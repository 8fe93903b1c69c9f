"""The launchd plist for one ``ServiceSpec``: a LaunchAgent (``user`` mode: the operator's
``gui/<uid>`` domain, started at login) or a LaunchDaemon (``system`` mode: /Library/LaunchDaemons,
started at boot, run as the service account). Built through ``LaunchAgentPlist`` /
``LaunchDaemonPlist``, typed models of the launchd keys we use (launchd ignores unknown keys
silently and no validator exists off macOS), used both to render plists and to check parsed
ones. Pure; a plist names a secret's file (loaded by ``fleet units launchd-run/launchd-exec
--env-file``), never its contents.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.config import FleetConfig
from shared.manifest import ProcessType
from shared.units.logs import launchd_log_paths
from shared.units.services import (
    DEFAULT_TIMINGS,
    PYTHON_OPTIMIZE,
    InstallLayout,
    ServiceSpec,
    ServiceTimings,
    label_name,
    stop_timeout_s,
)

__all__ = [
    "CalendarInterval",
    "KeepAliveConditions",
    "LaunchAgentPlist",
    "LaunchDaemonPlist",
    "launchd_job",
    "render_launchd",
]

_LABEL_RE = re.compile(r"^no\.alai\.fleet\.[a-z0-9][a-z0-9-]*$")
# macOS short names: letters, digits, "_", "-", "." (system accounts start with "_")
_ACCOUNT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SECRETISH = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|PRIVATE", re.I)


class KeepAliveConditions(BaseModel):
    """The KeepAlive dictionary form. SuccessfulExit=false: restart after a non-zero exit or a
    crash, never after exit 0 (a clean stop, or a refusal mapped to 0 by ``launchd-run``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    SuccessfulExit: bool


class CalendarInterval(BaseModel):
    """StartCalendarInterval for a scheduled job: monthly on ``Day`` at ``Hour``:``Minute``
    (launchd runs a job missed while asleep at wake)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    Day: int = Field(ge=1, le=28)
    Hour: int = Field(ge=0, le=23)
    Minute: int = Field(ge=0, le=59)


class LaunchAgentPlist(BaseModel):
    """The launchd keys our LaunchAgents use, typed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    Label: str
    ProgramArguments: list[str] = Field(min_length=1)
    RunAtLoad: bool
    #: a service's; a scheduled job has StartCalendarInterval instead (exactly one of the two)
    KeepAlive: KeepAliveConditions | None = None
    StartCalendarInterval: CalendarInterval | None = None
    ThrottleInterval: int = Field(ge=1)
    ExitTimeOut: int = Field(ge=1)
    EnvironmentVariables: dict[str, str]
    StandardOutPath: str
    StandardErrorPath: str
    WorkingDirectory: str
    Umask: int = Field(ge=0, le=0o777)
    ProcessType: ProcessType

    @field_validator("Label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL_RE.match(value):
            raise ValueError("must be no.alai.fleet.<name>")
        return value

    @field_validator("ProgramArguments")
    @classmethod
    def _absolute_program(cls, value: list[str]) -> list[str]:
        if not value[0].startswith("/"):
            raise ValueError("the program must be an absolute path (launchd has no PATH search)")
        return value

    @field_validator("StandardOutPath", "StandardErrorPath", "WorkingDirectory")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("EnvironmentVariables")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if _SECRETISH.search(k))
        if bad:
            raise ValueError(
                f"looks like a secret: {', '.join(bad)}; plists are readable, use a *_file key"
            )
        return value

    @model_validator(mode="after")
    def _logs_beside_each_other(self) -> LaunchAgentPlist:
        if Path(self.StandardOutPath).parent != Path(self.StandardErrorPath).parent:
            raise ValueError("StandardOutPath and StandardErrorPath must share the log dir")
        return self

    @model_validator(mode="after")
    def _service_or_job(self) -> LaunchAgentPlist:
        if (self.KeepAlive is None) == (self.StartCalendarInterval is None):
            raise ValueError("exactly one of KeepAlive and StartCalendarInterval")
        return self

    def dumps(self) -> bytes:
        return plistlib.dumps(self.model_dump(exclude_none=True), sort_keys=True)


class LaunchDaemonPlist(LaunchAgentPlist):
    """A LaunchDaemon: the agent's keys plus the account launchd runs it as. UserName and
    GroupName apply only in the system domain; without them a daemon would run as root."""

    UserName: str
    GroupName: str

    @field_validator("UserName", "GroupName")
    @classmethod
    def _account(cls, value: str) -> str:
        if not _ACCOUNT_RE.match(value):
            raise ValueError(f"{value!r} is not an account name")
        return value


def launchd_job(
    spec: ServiceSpec,
    config: FleetConfig,
    layout: InstallLayout,
    timings: ServiceTimings = DEFAULT_TIMINGS,
) -> LaunchAgentPlist:
    """The plist for ``spec``: a ``LaunchDaemonPlist`` in system mode, else a LaunchAgent.
    Raises ValueError when a LaunchDaemon's account or group is not known."""
    system = layout.mode == "system"
    env_args = [] if spec.environment_file is None else ["--env-file", str(spec.environment_file)]
    # launchd-run/-exec name the domain in a refusal's `launchctl kickstart` hint
    domain_args = ["--domain", "system"] if system else []
    if spec.fleet_daemon:
        # `launchd-run` is `fleet run` whose exit 78 (bad config, refused role, a secrets file
        # that is not private) becomes 0, so KeepAlive{SuccessfulExit=false} restarts crashes
        # but not a refusal. It loads fleet.env and this daemon's own fleet-<name>.env when
        # they exist (as the systemd units do), then the declared --env-file.
        optional = (layout.env_file, layout.daemon_env_file(spec.name))
        args = [str(layout.fleet_bin), "units", "launchd-run", *spec.argv[2:]]
        args += [a for path in optional for a in ("--optional-env-file", str(path))]
        args += env_args + domain_args
    elif env_args:
        # A companion (litestream): `launchd-exec` checks and loads the secrets file the same
        # way, then execs the program, which stays the job's process. The plist names the
        # file, never its contents.
        args = [str(layout.fleet_bin), "units", "launchd-exec", "--name", spec.name, *env_args]
        args += [*domain_args, "--", *spec.argv]
    else:
        args = list(spec.argv)
    # A fleet daemon writes its own log file (shared.units.logs); launchd gets the .err.log.
    stdout_path, stderr_path, log_env = launchd_log_paths(spec, config)
    schedule: dict[str, object] = {"RunAtLoad": True, "KeepAlive": {"SuccessfulExit": False}}
    if spec.calendar is not None:
        day, hour, minute = spec.calendar
        schedule = {
            "RunAtLoad": False,
            "StartCalendarInterval": {"Day": day, "Hour": hour, "Minute": minute},
        }
    keys: dict[str, object] = {
        "Label": label_name(spec.name),
        "ProgramArguments": args,
        **schedule,
        "ThrottleInterval": timings.throttle_s,
        "ExitTimeOut": stop_timeout_s(config),
        "EnvironmentVariables": {
            "PATH": f"{layout.prefix / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin",
            "PYTHONUNBUFFERED": "1",
            **({"PYTHONOPTIMIZE": PYTHON_OPTIMIZE} if spec.fleet_daemon else {}),
            **log_env,
        },
        "StandardOutPath": str(stdout_path),
        "StandardErrorPath": str(stderr_path),
        "WorkingDirectory": str(spec.working_dir),
        "Umask": 0o077,
        "ProcessType": spec.process_type,
    }
    if not system:
        return LaunchAgentPlist.model_validate(keys)
    if not layout.user:
        raise ValueError("a LaunchDaemon needs the account it runs as (UserName)")
    if not layout.group:
        raise ValueError(
            f"a LaunchDaemon needs a group (GroupName): account {layout.user!r} is not known "
            "on this machine; name its group with --group"
        )
    keys |= {"UserName": layout.user, "GroupName": layout.group}
    return LaunchDaemonPlist.model_validate(keys)


def render_launchd(
    spec: ServiceSpec,
    config: FleetConfig,
    layout: InstallLayout,
    timings: ServiceTimings = DEFAULT_TIMINGS,
) -> bytes:
    """The ``no.alai.fleet.<name>.plist`` bytes for ``spec`` (XML plist, keys sorted)."""
    return launchd_job(spec, config, layout, timings).dumps()

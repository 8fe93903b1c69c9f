"""The systemd unit for one ``ServiceSpec``: Type=notify with a watchdog for fleet daemons,
Type=exec for companions, restart policy (never after exit 78), and the sandbox a daemon that
writes only its own directories can live in. Pure text rendering; every value is quoted or
escaped the way systemd's parser reads it back, and a value that cannot be written safely is
refused, never mangled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from shared.clock import BOOT_ID_ENV
from shared.config import FleetConfig
from shared.exitcodes import EX_CONFIG
from shared.units.services import (
    DEFAULT_TIMINGS,
    GENERATED_MARKER,
    MALLOC_ARENA_MAX,
    PYTHON_OPTIMIZE,
    UNIT_PREFIX,
    InstallLayout,
    ServiceSpec,
    ServiceTimings,
    stop_timeout_s,
    unit_name,
)

__all__ = ["render_systemd", "render_timer", "timer_name"]

_SAFE_ARG = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def _sd_escape(text: str) -> str:
    """Escape specifier and variable expansion: a literal % or $ in a path stays literal."""
    return text.replace("%", "%%").replace("$", "$$")


def _sd_word(text: str) -> str:
    """One word of ExecStart=/a path list, quoted the way systemd's parser unquotes it."""
    if "\n" in text or "\x00" in text:
        raise ValueError(f"cannot put {text!r} in a unit file")
    escaped = _sd_escape(text)
    if _SAFE_ARG.match(text):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sd_single_path(path: Path) -> str:
    """A path that is the rest of its line (EnvironmentFile=, LoadCredential=): no quoting,
    only specifiers escaped; whitespace at the ends would be stripped, so refuse it."""
    text = str(path)
    if text != text.strip() or "\n" in text:
        raise ValueError(f"cannot put {text!r} in a unit file")
    return text.replace("%", "%%")


def _sd_path_list(paths: Iterable[Path], prefix: str = "") -> str:
    """A space-separated path list; systemd unquotes each word before reading the prefix."""
    return " ".join(_sd_word(prefix + str(p)) for p in paths)


def _sandbox(spec: ServiceSpec, layout: InstallLayout) -> list[tuple[str, str]]:
    """The hardening for a daemon that writes only its own dirs and talks to the network.
    User managers cannot apply some of these (no privileges; and ProtectProc/ProcSubset/
    ProtectKernelTunables/ProtectControlGroups/PrivateMounts break the notify socket under the
    test harness), so user mode keeps the subset that works unprivileged.

    Every service gets a private runtime directory (/run/alai-fleet-<name>, $RUNTIME_DIRECTORY)
    and, unless a configured path lives in the shared /tmp (``spec.shared_tmp``: the alai
    layout's ollama-health status file today), a private /tmp. ProcSubset=pid leaves a fleet
    daemon only /proc/<pid> entries: Python needs /proc/self, which stays; the one host-wide
    file the fleet reads, the boot id, is handed over as ALAI_FLEET_BOOT_ID=%b."""
    system = layout.mode == "system"
    lines: list[tuple[str, str]] = [
        ("UMask", "0077"),
        ("RuntimeDirectory", f"{UNIT_PREFIX}{spec.name}"),
        ("RuntimeDirectoryMode", "0700"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("ReadWritePaths", _sd_path_list(spec.write_paths, prefix="-")),
    ]
    if not spec.shared_tmp:
        lines.append(("PrivateTmp", "yes"))
    lines += [
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
    ]
    if system:
        lines += [
            ("CapabilityBoundingSet", ""),
            ("AmbientCapabilities", ""),
            ("PrivateUsers", "yes"),
            ("PrivateMounts", "yes"),
            ("ProtectProc", "invisible"),
        ]
        if spec.fleet_daemon:
            lines.append(("ProcSubset", "pid"))
        lines += [
            ("ProtectKernelTunables", "yes"),
            ("ProtectControlGroups", "yes"),
        ]
    lines += [
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RemoveIPC", "yes"),
        ("KeyringMode", "private"),
        ("DevicePolicy", "closed"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged @resources"),
        ("SystemCallErrorNumber", "EPERM"),
    ]
    if system and not spec.needs_network:
        lines += [("IPAddressAllow", "localhost"), ("IPAddressDeny", "any")]
    lines += [
        ("MemoryMax", f"{spec.memory_max_mb}M"),
        ("TasksMax", str(spec.tasks_max)),
    ]
    return lines


def render_systemd(
    spec: ServiceSpec,
    config: FleetConfig,
    layout: InstallLayout,
    timings: ServiceTimings = DEFAULT_TIMINGS,
) -> str:
    """The ``alai-fleet-<name>.service`` text for ``spec``."""
    unit: list[tuple[str, str]] = [
        ("Description", spec.description),
        ("After", "network-online.target"),
        ("Wants", "network-online.target"),
        ("StartLimitIntervalSec", f"{timings.start_limit_interval_s}s"),
        ("StartLimitBurst", str(timings.start_limit_burst)),
    ]
    service: list[tuple[str, str]] = []
    if spec.calendar is not None:
        return _render_oneshot(spec, layout, unit)
    if spec.notify:
        service += [
            ("Type", "notify"),
            ("NotifyAccess", "main"),
            ("WatchdogSec", f"{timings.watchdog_s}s"),
        ]
    else:
        service += [("Type", "exec")]
    service.append(("ExecStart", " ".join(_sd_word(a) for a in spec.argv)))
    if spec.notify:
        # `systemctl reload`: SIGHUP, which a fleet daemon answers by reloading its config in
        # process (RELOADING=1 ... READY=1); shared.signals.
        service.append(("ExecReload", "/bin/kill -HUP $MAINPID"))
    if layout.mode == "system" and layout.user:
        service.append(("User", layout.user))
    service += [
        ("Restart", "on-failure"),
        ("RestartSec", f"{timings.restart_s}s"),
        ("RestartPreventExitStatus", str(int(EX_CONFIG))),
        ("TimeoutStartSec", f"{timings.start_timeout_s}s"),
        ("TimeoutStopSec", f"{stop_timeout_s(config)}s"),
        # SIGTERM to the daemon only: it stops its own children within its grace; whatever
        # is left when TimeoutStopSec runs out gets SIGKILL.
        ("KillMode", "mixed"),
        ("SyslogIdentifier", f"{UNIT_PREFIX}{spec.name}"),
        ("Environment", "PYTHONUNBUFFERED=1"),
    ]
    if spec.fleet_daemon:
        # EnvironmentFile= settings win over Environment=: PYTHONOPTIMIZE=0 in one undoes it.
        service.append(("Environment", f"PYTHONOPTIMIZE={PYTHON_OPTIMIZE}"))
        service.append(("Environment", f"MALLOC_ARENA_MAX={MALLOC_ARENA_MAX}"))
    # Files the config names (the alai layout's litestream logs); else the journal.
    if spec.log_file is not None:
        service.append(("StandardOutput", "append:" + _sd_single_path(spec.stdout_path)))
    if spec.error_log_file is not None:
        service.append(("StandardError", "append:" + _sd_single_path(spec.stderr_path)))
    if spec.fleet_daemon:
        # FLEET_* overrides and the shared sections' secrets for every daemon, then the ones
        # only this daemon gets; both optional.
        service.append(("EnvironmentFile", "-" + _sd_single_path(layout.env_file)))
        service.append(
            ("EnvironmentFile", "-" + _sd_single_path(layout.daemon_env_file(spec.name)))
        )
        if layout.mode == "system":
            service.append(("Environment", f"{BOOT_ID_ENV}=%b"))
    if spec.environment_file is not None:
        # The secrets file the manifest declares (litestream.env): required, so a missing one
        # fails the start with systemd's own message instead of running without credentials.
        service.append(("EnvironmentFile", _sd_single_path(spec.environment_file)))
    if layout.mode == "system":
        for cred in spec.credentials:
            service.append(("LoadCredential", f"{cred.name}:{_sd_single_path(cred.path)}"))
            service.append(("Environment", f"{cred.env}=%d/{cred.name}"))
    service += _sandbox(spec, layout)
    wanted_by = "multi-user.target" if layout.mode == "system" else "default.target"
    out = [
        f"# {GENERATED_MARKER} ({layout.mode} mode); edits are overwritten.",
        "# Change the config and regenerate, or add a drop-in: systemctl edit "
        + ("" if layout.mode == "system" else "--user ")
        + unit_name(spec.name),
        "",
        "[Unit]",
        *(f"{k}={v}" for k, v in unit),
        "",
        "[Service]",
        *(f"{k}={v}" for k, v in service),
        "",
        "[Install]",
        f"WantedBy={wanted_by}",
        "",
    ]
    return "\n".join(out)


def _header(layout: InstallLayout, name: str) -> list[str]:
    return [
        f"# {GENERATED_MARKER} ({layout.mode} mode); edits are overwritten.",
        "# Change the config and regenerate, or add a drop-in: systemctl edit "
        + ("" if layout.mode == "system" else "--user ")
        + name,
        "",
    ]


def _render_oneshot(spec: ServiceSpec, layout: InstallLayout, unit: list[tuple[str, str]]) -> str:
    """A scheduled job's service: one run per timer tick, no restart, no [Install] (its timer
    is what is enabled)."""
    service: list[tuple[str, str]] = [
        ("Type", "oneshot"),
        ("ExecStart", " ".join(_sd_word(a) for a in spec.argv)),
    ]
    if layout.mode == "system" and layout.user:
        service.append(("User", layout.user))
    service += [
        ("SyslogIdentifier", f"{UNIT_PREFIX}{spec.name}"),
        ("Environment", "PYTHONUNBUFFERED=1"),
        ("EnvironmentFile", "-" + _sd_single_path(layout.env_file)),
    ]
    if spec.environment_file is not None:
        service.append(("EnvironmentFile", _sd_single_path(spec.environment_file)))
    service += _sandbox(spec, layout)
    kept = [(k, v) for k, v in unit if not k.startswith("StartLimit")]
    out = [
        *_header(layout, unit_name(spec.name)),
        "[Unit]",
        *(f"{k}={v}" for k, v in kept),
        "",
        "[Service]",
        *(f"{k}={v}" for k, v in service),
        "",
    ]
    return "\n".join(out)


def timer_name(service: str) -> str:
    return f"{UNIT_PREFIX}{service}.timer"


def render_timer(spec: ServiceSpec, layout: InstallLayout) -> str:
    """The ``.timer`` of a scheduled job: monthly on its day at its time, Persistent (a run
    missed while the host was off happens at the next start), with a few minutes' jitter."""
    assert spec.calendar is not None
    day, hour, minute = spec.calendar
    out = [
        *_header(layout, timer_name(spec.name)),
        "[Unit]",
        f"Description={spec.description} (timer)",
        "",
        "[Timer]",
        f"OnCalendar=*-*-{day:02d} {hour:02d}:{minute:02d}:00",
        "Persistent=true",
        "RandomizedDelaySec=10min",
        f"Unit={unit_name(spec.name)}",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ]
    return "\n".join(out)

"""What the service manager says about the fleet's installed units, for ``fleet status``.

A daemon counts as installed when its unit file is where ``fleet units install`` puts it
(``alai-fleet-<name>.service`` for systemd, user or system; ``no.alai.fleet.<name>.plist`` in
~/Library/LaunchAgents or /Library/LaunchDaemons for launchd). Only installed units are asked
about: one ``systemctl show`` for all units of a manager, one ``launchctl print`` per label,
started together; every call shares one deadline. A manager that does not answer in time (no
user bus under sudo, a hung launchd) reads as ``unknown``, never as a verdict. Standard library
only; nothing here starts, stops or changes a unit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ServiceState",
    "installed_units",
    "parse_launchctl_print",
    "parse_systemctl_show",
    "query_services",
]

#: what a unit's state means for the daemon: it is down
DOWN_STATES = frozenset({"inactive", "failed", "not-loaded"})
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
LAUNCH_DAEMONS_DIR = Path("/Library/LaunchDaemons")


@dataclass(frozen=True)
class ServiceState:
    manager: str  # "systemd-user", "systemd-system", "launchd-gui", "launchd-system"
    unit: str  # the unit file name or the launchd label
    state: str  # active, activating, deactivating, reloading, inactive, failed, not-loaded, unknown
    pid: int | None = None  # the main process, when the manager knows one
    detail: str = ""  # systemd's Result (exit-code, watchdog...) or launchd's last exit code

    @property
    def down(self) -> bool:
        return self.state in DOWN_STATES

    def to_json(self) -> dict[str, object]:
        return {
            "manager": self.manager,
            "unit": self.unit,
            "state": self.state,
            "pid": self.pid,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class InstalledUnit:
    daemon: str
    manager: str
    unit: str


def _user_unit_dir(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "systemd" / "user"


def installed_units(
    names: Sequence[str],
    *,
    platform: str = sys.platform,
    home: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[InstalledUnit]:
    """The units of ``names`` whose files are installed for this platform's service manager."""
    home = home if home is not None else Path.home()
    env = os.environ if env is None else env
    found: list[InstalledUnit] = []
    for name in names:
        if platform == "darwin":
            label = f"no.alai.fleet.{name}"
            places = [
                ("launchd-gui", home / "Library" / "LaunchAgents"),
                ("launchd-system", LAUNCH_DAEMONS_DIR),
            ]
            found += [
                InstalledUnit(name, manager, label)
                for manager, directory in places
                if (directory / f"{label}.plist").is_file()
            ]
            continue
        unit = f"alai-fleet-{name}.service"
        places = [("systemd-user", _user_unit_dir(env, home)), ("systemd-system", SYSTEM_UNIT_DIR)]
        found += [
            InstalledUnit(name, manager, unit)
            for manager, directory in places
            if (directory / unit).is_file()
        ]
    return found


def parse_systemctl_show(text: str) -> dict[str, dict[str, str]]:
    """``systemctl show -p Id,...`` output (one block per unit, blank-line separated) ->
    unit -> property -> value."""
    units: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            units[props["Id"]] = props
    return units


def _systemd_state(manager: str, unit: str, props: Mapping[str, str] | None) -> ServiceState:
    if props is None:
        return ServiceState(manager, unit, "unknown")
    if props.get("LoadState") == "not-found":
        return ServiceState(manager, unit, "not-loaded")
    state = props.get("ActiveState") or "unknown"
    pid_text = props.get("MainPID", "0")
    pid = int(pid_text) if pid_text.isdigit() and int(pid_text) > 0 else None
    result = props.get("Result", "")
    return ServiceState(manager, unit, state, pid, "" if result == "success" else result)


_LAUNCHD_FIELD = re.compile(r"^\s*(state|pid|last exit code) = (.+?)\s*$", re.MULTILINE)


def parse_launchctl_print(label: str, manager: str, code: int, text: str) -> ServiceState:
    """``launchctl print <domain>/<label>`` -> its state: ``state = running`` is active, any
    other state inactive; exit 113 (no such service in the domain) not-loaded."""
    if code == 113:
        return ServiceState(manager, label, "not-loaded")
    if code != 0:
        return ServiceState(manager, label, "unknown")
    fields: dict[str, str] = {}
    for key, value in _LAUNCHD_FIELD.findall(text):
        fields.setdefault(key, value)  # the service's own lines come before nested ones
    running = fields.get("state") == "running"
    pid_text = fields.get("pid", "")
    pid = int(pid_text) if running and pid_text.isdigit() else None
    last = fields.get("last exit code", "")
    detail = "" if last in ("", "0", "(never exited)") else f"last exit code {last}"
    return ServiceState(manager, label, "active" if running else "inactive", pid, detail)


def _argv(manager: str, units: Sequence[str]) -> list[str]:
    if manager.startswith("systemd"):
        scope = ["--user"] if manager == "systemd-user" else []
        props = "--property=Id,LoadState,ActiveState,SubState,MainPID,Result"
        return ["systemctl", *scope, "show", props, "--", *units]
    domain = f"gui/{os.getuid()}" if manager == "launchd-gui" else "system"
    return ["launchctl", "print", f"{domain}/{units[0]}"]


def query_services(
    units: Sequence[InstalledUnit], timeout_s: float = 1.0
) -> dict[str, list[ServiceState]]:
    """daemon -> what its manager(s) say about its installed unit(s); at most ``timeout_s``
    for all calls together."""
    calls: list[tuple[str, list[InstalledUnit]]] = []
    systemd: dict[str, list[InstalledUnit]] = {}
    for unit in units:
        if unit.manager.startswith("systemd"):
            systemd.setdefault(unit.manager, []).append(unit)
        else:
            calls.append((unit.manager, [unit]))
    calls += list(systemd.items())
    started: list[tuple[str, list[InstalledUnit], subprocess.Popen[str] | None]] = []
    for manager, group in calls:
        try:
            proc: subprocess.Popen[str] | None = subprocess.Popen(
                _argv(manager, [u.unit for u in group]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:  # no systemctl/launchctl on this machine
            proc = None
        started.append((manager, group, proc))
    deadline = time.monotonic() + timeout_s
    out: dict[str, list[ServiceState]] = {}
    for manager, group, proc in started:
        text, code = "", -1
        if proc is not None:
            try:
                text, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
                code = proc.returncode
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        if manager.startswith("systemd"):
            shown = parse_systemctl_show(text) if code == 0 else {}
            states = [_systemd_state(manager, u.unit, shown.get(u.unit)) for u in group]
        else:
            states = [parse_launchctl_print(group[0].unit, manager, code, text)]
        for unit, state in zip(group, states, strict=True):
            out.setdefault(unit.daemon, []).append(state)
    return out

"""What `plutil -lint` and launchd would make of a plist, off macOS: the bytes must parse as an
XML property list whose top level is a dictionary, and every key must be one launchd.plist(5)
documents, with the type it documents. Kept apart from ``shared.units`` on purpose: the typed
models there say what the fleet writes; this table says what Apple accepts, so a model that
drifts from launchd (a misspelt key, an integer written as a string) fails here.

Keys launchd does not know are ignored by it without a word; keys it knows with the wrong type
are ignored too (or the job is refused at bootstrap). Both are errors here.
"""

from __future__ import annotations

import plistlib
from collections.abc import Callable
from typing import Any, Literal
from xml.parsers.expat import ExpatError

__all__ = ["LAUNCHD_KEYS", "SYSTEM_ONLY_KEYS", "launchd_plist_problems"]

Check = Callable[[Any], str | None]


def _is(kind: type, name: str) -> Check:
    def check(value: Any) -> str | None:
        # plistlib gives bool for <true/>, which Python also counts as an int
        if kind is int and isinstance(value, bool):
            return f"must be an {name}, not a boolean"
        return None if isinstance(value, kind) else f"must be {name}, not {type(value).__name__}"

    return check


_STRING = _is(str, "a string")
_INTEGER = _is(int, "an integer")
_BOOLEAN = _is(bool, "a boolean")
_DICT = _is(dict, "a dictionary")


def _array_of(item: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be an array, not {type(value).__name__}"
        for index, element in enumerate(value):
            problem = item(element)
            if problem:
                return f"[{index}] {problem}"
        return None

    return check


def _dict_of(item: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be a dictionary, not {type(value).__name__}"
        for key, element in value.items():
            problem = item(element)
            if problem:
                return f"[{key}] {problem}"
        return None

    return check


def _keys(table: dict[str, Check]) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be a dictionary, not {type(value).__name__}"
        for key, element in value.items():
            if key not in table:
                return f"unknown key {key!r} (launchd ignores it)"
            problem = table[key](element)
            if problem:
                return f"{key} {problem}"
        return None

    return check


def _one_of(*checks: Check) -> Check:
    def check(value: Any) -> str | None:
        problems = [c(value) for c in checks]
        return None if None in problems else " or ".join(p for p in problems if p)

    return check


def _choice(*allowed: str) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or value not in allowed:
            return f"must be one of {', '.join(allowed)}, not {value!r}"
        return None

    return check


_KEEP_ALIVE = _one_of(
    _BOOLEAN,
    _keys(
        {
            "SuccessfulExit": _BOOLEAN,
            "NetworkState": _BOOLEAN,
            "PathState": _dict_of(_BOOLEAN),
            "OtherJobEnabled": _dict_of(_BOOLEAN),
            "Crashed": _BOOLEAN,
        }
    ),
)
_CALENDAR = _keys({k: _INTEGER for k in ("Minute", "Hour", "Day", "Weekday", "Month")})
_LIMITS = _keys(
    {
        k: _INTEGER
        for k in (
            "Core",
            "CPU",
            "Data",
            "FileSize",
            "MemoryLock",
            "NumberOfFiles",
            "NumberOfProcesses",
            "ResidentSetSize",
            "Stack",
        )
    }
)
_STRINGS = _array_of(_STRING)

#: launchd.plist(5): every documented top-level key and the type it takes
LAUNCHD_KEYS: dict[str, Check] = {
    "Label": _STRING,
    "Disabled": _BOOLEAN,
    "UserName": _STRING,
    "GroupName": _STRING,
    "inetdCompatibility": _keys({"Wait": _BOOLEAN}),
    "LimitLoadToHosts": _STRINGS,
    "LimitLoadFromHosts": _STRINGS,
    "LimitLoadToSessionType": _one_of(_STRING, _STRINGS),
    "LimitLoadToHardware": _dict_of(_STRINGS),
    "LimitLoadFromHardware": _dict_of(_STRINGS),
    "Program": _STRING,
    "ProgramArguments": _STRINGS,
    "EnableGlobbing": _BOOLEAN,
    "EnableTransactions": _BOOLEAN,
    "EnablePressuredExit": _BOOLEAN,
    "OnDemand": _BOOLEAN,
    "ServiceIPC": _BOOLEAN,
    "KeepAlive": _KEEP_ALIVE,
    "RunAtLoad": _BOOLEAN,
    "RootDirectory": _STRING,
    "WorkingDirectory": _STRING,
    "EnvironmentVariables": _dict_of(_STRING),
    "Umask": _one_of(_INTEGER, _STRING),
    "TimeOut": _INTEGER,
    "ExitTimeOut": _INTEGER,
    "ThrottleInterval": _INTEGER,
    "InitGroups": _BOOLEAN,
    "WatchPaths": _STRINGS,
    "QueueDirectories": _STRINGS,
    "StartOnMount": _BOOLEAN,
    "StartInterval": _INTEGER,
    "StartCalendarInterval": _one_of(_CALENDAR, _array_of(_CALENDAR)),
    "StandardInPath": _STRING,
    "StandardOutPath": _STRING,
    "StandardErrorPath": _STRING,
    "Debug": _BOOLEAN,
    "WaitForDebugger": _BOOLEAN,
    "SoftResourceLimits": _LIMITS,
    "HardResourceLimits": _LIMITS,
    "Nice": _INTEGER,
    "ProcessType": _choice("Background", "Standard", "Adaptive", "Interactive"),
    "AbandonProcessGroup": _BOOLEAN,
    "LowPriorityIO": _BOOLEAN,
    "LowPriorityBackgroundIO": _BOOLEAN,
    "MaterializeDatalessFiles": _BOOLEAN,
    "LaunchOnlyOnce": _BOOLEAN,
    "MachServices": _DICT,
    "Sockets": _DICT,
    "LaunchEvents": _DICT,
    "SessionCreate": _BOOLEAN,
    "LegacyTimers": _BOOLEAN,
    "AssociatedBundleIdentifiers": _one_of(_STRING, _STRINGS),
}

#: "only applicable for services that are loaded into the privileged system domain"
SYSTEM_ONLY_KEYS = frozenset({"UserName", "GroupName", "InitGroups"})


def launchd_plist_problems(data: bytes, domain: Literal["system", "user"]) -> list[str]:
    """Everything `plutil -lint` and launchd would object to in ``data`` (empty: none), for a
    job loaded into the ``system`` domain (a LaunchDaemon) or a ``user`` one (a LaunchAgent)."""
    try:
        raw = plistlib.loads(data, fmt=plistlib.FMT_XML)
    except (plistlib.InvalidFileException, ValueError, ExpatError) as exc:
        return [f"not an XML property list: {exc}"]
    if not isinstance(raw, dict):
        return [f"top level must be a dictionary, not {type(raw).__name__}"]
    problems: list[str] = []
    for key, value in raw.items():
        check = LAUNCHD_KEYS.get(key)
        if check is None:
            problems.append(f"{key}: not a launchd.plist(5) key (launchd ignores it)")
            continue
        problem = check(value)
        if problem:
            problems.append(f"{key}: {problem}")
        if domain == "user" and key in SYSTEM_ONLY_KEYS:
            problems.append(f"{key}: only applies to the system domain (ignored in a user one)")
    if "Label" not in raw:
        problems.append("Label: missing (required)")
    if "Program" not in raw and "ProgramArguments" not in raw:
        problems.append("Program/ProgramArguments: one is required")
    return problems

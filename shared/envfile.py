"""Secrets files: the KEY=VALUE environment files services load (``fleet.env``, the per-daemon
``fleet-<daemon>.env``, ``litestream.env``), where the fleet's own env files live, and the
checks that a file holding a secret is private (a regular file with no group/other permission
bits, like ssh's check of a private key; ``private_file_problem`` also wants it ours).

The format is the subset systemd's ``EnvironmentFile=`` and a shell both read the same way: one
``KEY=VALUE`` per line, blank lines and ``#`` comments ignored, an optional ``export`` prefix,
one pair of matching quotes around the value stripped, nothing expanded. Errors name the file
and line number, never a value. Standard library only; nothing here writes or logs a value.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

__all__ = [
    "SYSTEM_ENV_DIR",
    "EnvFileError",
    "env_references",
    "fleet_env_file",
    "parse_env_text",
    "private_file_problem",
    "read_env_file",
    "render_env_text",
    "secret_mode_problem",
    "user_env_dir",
]

#: where system-mode units read the fleet's env files (root-owned, 0600)
SYSTEM_ENV_DIR = Path("/etc/alai-fleet")

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class EnvFileError(Exception):
    """An environment file that must not be used: missing, unreadable, not private, or not
    KEY=VALUE lines. ``path`` is the file; the message says why and what to do."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def user_env_dir(home: Path) -> Path:
    """Where user-mode units and LaunchAgents read the fleet's env files."""
    return home / ".config" / "alai-fleet"


def fleet_env_file(directory: Path, service: str | None = None) -> Path:
    """``fleet.env`` (every fleet daemon loads it) or, for ``service``, ``fleet-<service>.env``
    (only that daemon's unit or plist loads it: the place for a secret one daemon uses)."""
    return directory / ("fleet.env" if service is None else f"fleet-{service}.env")


def secret_mode_problem(path: Path) -> str | None:
    """Why the existing file ``path`` must not hold a secret (None when it may): not a regular
    file, or group/others have any permission on it. Names the file and its mode, never its
    content; raises OSError when it cannot be looked at (missing, unreadable directory)."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return (
            f"{path} has mode {mode:04o}: group/others can "
            f"{'read' if mode & 0o044 else 'access'} it; chmod 600 {path}"
        )
    return None


def private_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a private secrets file (None when it is): missing, not a regular
    file, readable or writable by group/others (mode must be 0600 or tighter), or owned by
    another user than the one asking."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot stat it: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"mode {mode:04o} lets group/others read it (chmod 600 {path})"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    return None


def parse_env_text(text: str) -> tuple[dict[str, str], list[str]]:
    """The variables of an environment file and the problems found (``line N: why``)."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            problems.append(f"line {number}: not KEY=VALUE")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values, problems


def read_env_file(path: Path, *, require_private: bool = True) -> dict[str, str]:
    """The variables of the environment file at ``path``; EnvFileError when it is missing,
    unreadable, not private (``require_private``) or has a line that is not KEY=VALUE."""
    if require_private:
        problem = private_file_problem(path)
        if problem is not None:
            raise EnvFileError(path, problem)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvFileError(path, f"cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EnvFileError(path, "is not UTF-8 text") from None
    values, problems = parse_env_text(text)
    if problems:
        raise EnvFileError(path, "; ".join(problems))
    return values


def render_env_text(existing: str, additions: dict[str, str]) -> str:
    """``existing`` with ``additions`` appended as KEY=VALUE lines (single-quoted when the
    value has spaces or quotes of the other kind would be needed)."""
    lines = existing if not existing or existing.endswith("\n") else existing + "\n"
    for key, value in additions.items():
        if not _KEY.match(key) or "\n" in value or "'" in value:
            raise ValueError(f"cannot write {key} as one KEY=VALUE line")
        quoted = f"'{value}'" if re.search(r"[\s\"#;$`\\]", value) else value
        lines += f"{key}={quoted}\n"
    return lines


def env_references(text: str) -> list[str]:
    """The ``${VAR}`` names ``text`` references (first occurrence order, no duplicates)."""
    return list(dict.fromkeys(_REFERENCE.findall(text)))

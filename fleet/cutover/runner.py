"""``CommandRunner``: the one way ``fleet cutover`` runs a command (``launchctl``,
``systemctl``, and the fleet's own ``fleet units ...`` / ``fleet litestream lint``). Programs
are found on ``PATH`` (tests put fake ``launchctl``/``systemctl`` executables first on it),
each run has a timeout, and output is captured, never passed through a shell. ``fleet`` runs
as this interpreter's ``python -m fleet``, so a step uses the same installation as the caller.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CommandError", "CommandResult", "CommandRunner", "shown"]


def shown(argv: Sequence[str]) -> str:
    """A command as an operator would type it."""
    return " ".join(shlex.quote(a) for a in argv)


class CommandError(Exception):
    """The command could not be run at all (not found, not executable, timed out)."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """The failure as one line: the exit code and the last line of output."""
        tail = (self.stderr.strip() or self.stdout.strip()).splitlines()[-1:] or [""]
        return f"`{shown(self.argv)}` exited {self.returncode}" + (
            f": {tail[0][:300]}" if tail[0] else ""
        )


class CommandRunner:
    """Runs one command at a time with a timeout; ``env`` overrides the inherited
    environment (``HOME`` for the fleet's own commands)."""

    def __init__(self, *, timeout_s: float = 120.0, env: Mapping[str, str] | None = None) -> None:
        self.timeout_s = timeout_s
        self.env = {**os.environ, **(env or {})}

    def _program(self, argv: Sequence[str]) -> list[str]:
        if argv[0] == "fleet":
            return [sys.executable, "-m", "fleet", *argv[1:]]
        if "/" in argv[0]:
            return list(argv)
        found = shutil.which(argv[0], path=self.env.get("PATH"))
        if found is None:
            raise CommandError(f"{argv[0]}: not found on PATH")
        return [found, *argv[1:]]

    def run(self, argv: Sequence[str]) -> CommandResult:
        try:
            proc = subprocess.run(
                self._program(argv),
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=self.env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandError(
                f"`{shown(argv)}` gave no answer within {self.timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise CommandError(f"cannot run {argv[0]}: {exc.strerror}") from None
        return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

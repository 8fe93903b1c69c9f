"""The restore plan as its files say now: the tier table and the litestream restore config,
read in a worker thread and only when one of them changed (mtime); a file that turns invalid
keeps the previous plan, so a bad edit never stops the copies.

An adapter: reading the two files is its only I/O (``plan.build_plan`` decides). It must never
write a file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from daemons.restore_loop.catalog import CatalogError, TierTable, load_tier_table
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.litestream_yaml import (
    ConfiguredDB,
    LitestreamConfigError,
    read_restore_config,
)
from daemons.restore_loop.plan import Plan, build_plan

__all__ = ["PlanFiles", "SetupError"]


class SetupError(Exception):
    """The restore plan cannot be built (missing binary, config or tier table)."""


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class PlanFiles:
    def __init__(self, section: RestoreLoopSection, log: Any) -> None:
        self.section = section
        self.log = log
        self.plan: Plan | None = None
        #: why the files are invalid while the previous plan is kept; "" when they are fine
        self.error = ""
        self._key: tuple[float | None, float | None] | None = None
        self._reported: set[tuple[str, str]] = set()

    def _read(self) -> tuple[TierTable, list[ConfiguredDB]]:
        table = load_tier_table(self.section.databases_file)
        return table, read_restore_config(self.section.config_path)

    async def load(self) -> tuple[Plan, bool]:
        """The current plan, and whether it is new since the last call. SetupError when the
        files are invalid and there is no previous plan."""
        key = (_mtime(self.section.config_path), _mtime(self.section.databases_file))
        if self.plan is not None and key == self._key:
            return self.plan, False
        try:
            table, configured = await asyncio.to_thread(self._read)
        except (CatalogError, LitestreamConfigError) as exc:
            if self.plan is None:
                raise SetupError(str(exc)) from None
            if str(exc) != self.error:
                self.log.error(
                    "restore plan files invalid; keeping the previous plan", error=str(exc)
                )
            self.error = str(exc)
            return self.plan, False
        if self.error:
            self.log.info("restore plan files valid again")
            self.error = ""
        plan = build_plan(self.section, table, configured)
        for problem in plan.problems:
            if problem not in self._reported:
                self._reported.add(problem)
                self.log.warning("restore plan problem", db=problem[0], problem=problem[1])
        self.plan, self._key = plan, key
        return plan, True

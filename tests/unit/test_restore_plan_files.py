"""The restore plan as its files say: read again only when they change, kept when they turn
invalid; the tier table's durations are the ones litestream (Go) accepts; the plan's cost."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from daemons.restore_loop.catalog import CatalogError, load_tier_table, parse_tier_table
from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.cost import LISTS_PER_IDLE_POLL
from daemons.restore_loop.litestream_yaml import render_standby
from daemons.restore_loop.plan import list_requests_per_day
from daemons.restore_loop.plan_files import PlanFiles, SetupError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "databases.example.toml"


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def _add(self, level: str, event: str, **_kw: Any) -> None:
        self.events.append((level, event))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)


def section(tmp_path: Path) -> RestoreLoopSection:
    standby = tmp_path / "databases"
    table = tmp_path / "databases.toml"
    table.write_bytes(EXAMPLE.read_bytes())
    config = tmp_path / "litestream-restore.yml"
    config.write_text(render_standby(load_tier_table(table), ["P0"], standby).text)
    return RestoreLoopSection(
        standby_dir=standby, databases_file=table, config_path=config, tiers=["P0"]
    )


async def test_the_plan_is_built_once_and_again_when_a_file_changes(tmp_path: Path) -> None:
    s = section(tmp_path)
    files = PlanFiles(s, Log())
    plan, new = await files.load()
    assert new and len(plan.targets) == 17 and {t.tier for t in plan.targets} == {"P0"}
    again, new = await files.load()
    assert again is plan and not new
    text = s.config_path.read_text()
    s.config_path.write_text(
        text.split("  - path:", 2)[0] + "  - path:" + text.split("  - path:")[1]
    )
    os.utime(s.config_path, (1, 1))
    smaller, new = await files.load()
    assert new and len(smaller.targets) == 1
    # The 16 P0 DBs the config no longer names are reported as plan problems.
    assert sum("not in the litestream restore config" in p for _, p in smaller.problems) == 16


async def test_a_broken_file_keeps_the_previous_plan_and_logs_once(tmp_path: Path) -> None:
    s = section(tmp_path)
    log = Log()
    files = PlanFiles(s, log)
    plan, _ = await files.load()
    s.databases_file.write_text("[[databases]\nbroken")
    os.utime(s.databases_file, (1, 1))
    for _ in range(3):
        kept, new = await files.load()
        assert kept is plan and not new
    assert "not valid TOML" in files.error
    assert log.events.count(("error", "restore plan files invalid; keeping the previous plan")) == 1
    s.databases_file.write_bytes(EXAMPLE.read_bytes())
    os.utime(s.databases_file, (2, 2))
    fresh, new = await files.load()
    assert new and files.error == "" and fresh == plan
    assert ("info", "restore plan files valid again") in log.events


async def test_without_a_previous_plan_a_broken_file_is_a_setup_error(tmp_path: Path) -> None:
    s = section(tmp_path)
    s.config_path.unlink()
    with pytest.raises(SetupError):
        await PlanFiles(s, Log()).load()


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1s", True),
        ("500ms", True),
        ("1h30m", True),
        (" 168h ", True),
        ("1d", False),  # days: Go's time.ParseDuration (litestream) refuses them
        ("1H", False),
        ("1 s", False),
        ("soon", False),
        ("0s", False),  # must be > 0
    ],
)
def test_tier_table_durations_are_the_ones_litestream_accepts(text: str, ok: bool) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    data["databases"][0]["sync_interval"] = text
    if ok:
        parse_tier_table(data, "t.toml")
        return
    with pytest.raises(CatalogError) as info:
        parse_tier_table(data, "t.toml")
    assert [p for p, _ in info.value.errors] == ["databases[0].sync_interval"]


async def test_the_cost_of_a_plan(tmp_path: Path) -> None:
    s = section(tmp_path)
    plan, _ = await PlanFiles(s, Log()).load()
    per_day = list_requests_per_day(s, plan)
    polls = sum(86400 / t.follow_interval_s * LISTS_PER_IDLE_POLL for t in plan.targets)
    assert per_day == pytest.approx(polls + len(plan.targets) * 86400 / s.verify_interval_s)

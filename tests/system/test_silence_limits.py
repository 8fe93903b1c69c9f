"""`fleet silence set --for` takes at most 30 days: a longer one (100000000d) is a usage error
(exit 64) naming the value, never a silence that outlives everyone; 30d itself is fine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.system


@pytest.mark.parametrize("value", ["100000000d", "31d", "720h1s"])
def test_a_silence_beyond_30_days_is_refused_naming_the_value(
    fleet_env: dict[str, str], tmp_path: Path, value: str
) -> None:
    res = run_fleet(["silence", "set", "--for", value], fleet_env, tmp_path)
    assert res.returncode == 64, res.stdout + res.stderr
    assert value in res.stderr and "30d" in res.stderr and "Traceback" not in res.stderr
    shown = json.loads(run_fleet(["silence", "show", "--json"], fleet_env, tmp_path).stdout)
    assert shown["active"] is False, "nothing was silenced"


def test_a_30_day_silence_is_accepted(fleet_env: dict[str, str], tmp_path: Path) -> None:
    res = run_fleet(["silence", "set", "--for", "30d", "--reason", "move"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stderr
    shown = json.loads(run_fleet(["silence", "show", "--json"], fleet_env, tmp_path).stdout)
    assert shown["active"] is True and shown["reason"] == "move"

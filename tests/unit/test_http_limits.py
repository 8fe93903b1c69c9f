"""The pure parts of ``shared.http_site``: how many connections a process's HTTP servers may
hold (derived from the soft open-files limit), the once-a-minute log throttle, and the
``[fleet] http_*`` keys they come from. The servers themselves are exercised with real
sockets and processes in tests/system/test_http_starvation.py and test_http_accept_errors.py.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import pytest

from fleet.config import load_config
from shared.config import ConfigError
from shared.http_site import (
    MIN_SITE_CONNECTIONS,
    ConnectionBudget,
    HttpLimits,
    LogThrottle,
    process_connection_limit,
)
from shared.sections import FleetSection


@pytest.mark.parametrize(
    ("soft", "limit"),
    [(256, 64), (1024, 256), (20_000, 5000), (40, 10), (resource.RLIM_INFINITY, sys.maxsize)],
)
def test_the_process_limit_is_a_quarter_of_the_soft_open_files_limit(soft: int, limit: int) -> None:
    assert process_connection_limit(soft) == limit


@pytest.mark.parametrize(
    ("limit", "sites", "share"),
    [
        (64, 0, 64),  # the first server to start
        (64, 1, 64),
        (64, 2, 32),  # heartbeat: /metrics and /health at macOS's ulimit -n 256
        (256, 7, 36),  # `fleet run --all` at Linux's 1024
        (64, 7, MIN_SITE_CONNECTIONS),  # --all at 256: never below the floor
    ],
)
def test_servers_share_the_process_limit_equally(limit: int, sites: int, share: int) -> None:
    budget = ConnectionBudget(limit)
    budget.sites.update(object() for _ in range(sites))  # type: ignore[misc]
    assert budget.share() == share


def test_a_fixed_budget_ignores_the_rlimit() -> None:
    budget = ConnectionBudget(40)
    budget.refresh_limit()
    assert budget.limit == 40


def test_an_unfixed_budget_reads_the_soft_limit() -> None:
    budget = ConnectionBudget()
    budget.refresh_limit()
    assert budget.limit == process_connection_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_logs_the_first_event_then_one_count_per_interval() -> None:
    clock = FakeClock()
    throttle = LogThrottle(60.0, clock)
    assert throttle.due_in() is None
    assert throttle.add("EMFILE") == {"EMFILE": 1}
    assert throttle.due_in() is None  # nothing pending after a line
    for _ in range(400):
        clock.now += 0.125
        assert throttle.add("EMFILE") == {}
    assert throttle.add("ENFILE") == {}
    assert throttle.due_in() == pytest.approx(60.0 - 50.0)
    clock.now += 9.0
    assert throttle.take() == {}
    clock.now += 1.0
    assert throttle.take() == {"EMFILE": 400, "ENFILE": 1}
    assert throttle.take() == {}
    clock.now += 5.0
    assert throttle.add("EMFILE") == {}  # the next line is a minute after the last one
    assert throttle.due_in() == pytest.approx(55.0)


def test_drain_gives_the_pending_counts_whatever_the_interval() -> None:
    clock = FakeClock()
    throttle = LogThrottle(60.0, clock)
    throttle.add("evicted")
    throttle.add("evicted")
    throttle.add("header_timeout")
    assert throttle.drain() == {"evicted": 1, "header_timeout": 1}
    assert throttle.drain() == {}
    assert throttle.due_in() is None


def test_limits_come_from_the_fleet_section() -> None:
    assert HttpLimits.of(FleetSection()) == HttpLimits(10.0, 30.0, 64)
    section = FleetSection(http_header_timeout_s=2.5, http_idle_timeout_s=5, http_max_connections=8)
    assert HttpLimits.of(section) == HttpLimits(2.5, 5.0, 8)


def test_bad_http_limits_name_their_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FLEET_FLEET__HTTP_MAX_CONNECTIONS", "0")
    path = tmp_path / "fleet.toml"
    path.write_text(
        f'[fleet]\nroot = "{tmp_path / "root"}"\n'
        "http_header_timeout_s = 0\nhttp_idle_timeout_s = -1\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert {p for p, _ in exc.value.errors} == {
        "fleet.http_header_timeout_s",
        "fleet.http_idle_timeout_s",
        "fleet.http_max_connections",
    }

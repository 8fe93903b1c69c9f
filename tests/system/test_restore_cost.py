"""Decoupling freshness from RPO, against real `litestream replicate` primaries (file replicas)
and `fleet run restore-loop` as a real process:

- while the primary's /health answers, followers poll at the slow interval (metric); when it
  stops, every P0 follower switches to fast follow (metric, and the new child's own
  `-follow-interval`), P1 keeps its interval;
- promote after the primary dies, with a follower that polls slowly (30 s), loses no more rows
  than a fast raw follower (0.2 s) beside it or a fresh restore of the replica (the best any
  standby can do), rows compared; the copy is an exact prefix of the primary;
- promote's reported RPO is within its stated resolution of the true one (rows' commit times).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes.http import FakeHTTPServer
from tests.fakes.litestream_primary import (
    Primary,
    Standby,
    count_rows,
    litestream_bin,
    metric_value,
    read_rows,
)

pytestmark = pytest.mark.system

SLOW_S = 30.0  # the slow interval: far longer than any wait below


def metric(port: int, name: str, **labels: str) -> float | None:
    return metric_value(http_get(f"http://127.0.0.1:{port}/metrics")[1], name, **labels)


def child_interval(pid: int) -> str:
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return args[args.index(b"-follow-interval") + 1].decode()


@pytest.fixture
def primary(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Replicating; each test starts the writer once its standby follows: a DB already busy
    when the standby starts would be followed at its upload rate from the start (its first
    listing shows the rate), and these tests need a slow follower."""
    p = Primary(tmp_path / "anvil", ["alpha", "beta"], tiers={"beta": "P1"}).create()
    p.start_replicate()
    yield p
    p.close()


def test_fast_follow_when_the_primary_stops_answering(
    primary: Primary,
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
) -> None:
    health = FakeHTTPServer(lambda m, p, h, b: (200, {}, {"ok": True})).start()
    standby = Standby(
        fleet_env,
        fleet_root,
        tmp_path,
        primary,
        follow_interval=json.dumps({"P0": SLOW_S, "P1": SLOW_S}),
        fast_follow_interval_s="0.25",
        # A written DB polled every 30 s gets floored to its upload rate (bounded at 0.5 s).
        primary_health_url=f"{health.base_url}/health",
    )
    port = free_port()
    standby.start(notify_socket.path, port)
    try:
        assert notify_socket.wait_for("READY=1", timeout=20)
        assert wait_until(lambda: standby.row("alpha").get("state") == "following", timeout=20)
        primary.start_writer(rate_per_s=10)
        assert wait_until(lambda: metric(port, "fleet_restore_primary_up") == 1, timeout=10)
        # Healthy primary: slow intervals in effect, in the metric and in the child itself.
        assert metric(port, "fleet_restore_fast_follow") == 0
        assert metric(port, "fleet_restore_follow_interval_seconds", tier="P0") == SLOW_S
        slow_pid = int(standby.row("alpha")["follower_pid"])
        assert child_interval(slow_pid) == f"{int(SLOW_S * 1000)}ms"

        health.stop()  # the primary's heartbeat is gone
        assert wait_until(lambda: metric(port, "fleet_restore_fast_follow") == 1, timeout=10)
        assert metric(port, "fleet_restore_primary_up") == 0
        assert metric(port, "fleet_restore_follow_interval_seconds", tier="P0") == 0.25
        assert metric(port, "fleet_restore_follow_interval_seconds", tier="P1") != 0.25

        def fast_child() -> bool:
            row = standby.row("alpha")
            pid = row.get("follower_pid")
            return row.get("state") == "following" and pid not in (None, slow_pid)

        assert wait_until(fast_child, timeout=20), standby.row("alpha")
        assert child_interval(int(standby.row("alpha")["follower_pid"])) == "250ms"
        # P1 does not fast follow (its child keeps the budget's or its busy floor's interval);
        # the switches are no fault (no flapping count).
        beta = standby.row("beta")
        assert beta["poll_interval_s"] in (SLOW_S, 0.5), beta
        assert child_interval(int(beta["follower_pid"])) != "250ms"
        assert standby.row("alpha")["restarts_1h"] == 0
        # Fast follow keeps the copy current while the writer goes on.
        grown = count_rows(standby.copy("alpha"))
        assert wait_until(lambda: count_rows(standby.copy("alpha")) >= grown + 20, timeout=15)
    finally:
        code, out = standby.stop()
        health.stop()
    assert code == 0, out[-3000:]
    assert "P0 followers switch to fast follow" in out


def test_promote_with_a_slow_follower_loses_no_more_than_a_fresh_restore(
    primary: Primary,
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    notify_socket: NotifySocket,
) -> None:
    standby = Standby(
        fleet_env,
        fleet_root,
        tmp_path,
        primary,
        follow_interval=json.dumps({"P0": SLOW_S, "P1": SLOW_S}),
    )
    standby.start(notify_socket.path, free_port())
    config = fleet_root / "config" / "litestream-restore.yml"
    if not wait_until(lambda: standby.row("alpha").get("state") == "following", timeout=20):
        standby.stop()
        pytest.fail("restore-loop did not start following")
    primary.start_writer(rate_per_s=10)
    # A fast follower beside it (raw `litestream restore -f`, 0.2 s): the comparison.
    fast = tmp_path / "fast.db"
    fast_follower = subprocess.Popen(
        [
            *(str(litestream_bin()), "restore", "-config", str(config), "-f"),
            *("-follow-interval", "200ms", "-o", str(fast), str(standby.copy("alpha"))),
        ],
        env=standby.env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "fast.log").open("ab"),
    )
    try:
        at_start = count_rows(standby.copy("alpha"))
        # The slow follower falls behind the primary (it polls every 30 s).
        assert wait_until(lambda: len(primary.rows("alpha")) >= at_start + 30, timeout=20)
        behind = count_rows(standby.copy("alpha"))
    finally:
        code, out = standby.stop()
        if code != 0:
            fast_follower.kill()
    assert code == 0, out[-3000:]
    primary.die()  # writer and replicate SIGKILLed at once
    rows = primary.rows("alpha")
    assert behind < len(rows)

    # The best any standby can do: a fresh restore of what the replica holds now.
    best = tmp_path / "best.db"
    done = subprocess.run(
        [
            *(str(litestream_bin()), "restore", "-config", str(config)),
            *("-o", str(best), str(standby.copy("alpha"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=standby.env,
    )
    assert done.returncode == 0, done.stderr
    best_rows = read_rows(best)
    # The fast follower gets the same chance: until it holds what the replica holds (litestream
    # applies one file a poll, and may stall: then what it has after the bound).
    try:
        wait_until(lambda: count_rows(fast) >= len(best_rows), timeout=30)
        assert fast.exists(), (tmp_path / "fast.log").read_text()[-2000:]
    finally:
        fast_follower.terminate()
        fast_follower.wait(timeout=10)
    fast_rows = read_rows(fast)

    result = run_fleet(
        ["restore", "promote", "alpha", "--no-role", "--json"], standby.env, tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    promoted = read_rows(standby.copy("alpha"))
    # No more rows lost than the fresh restore, far more than the slow copy held, and an
    # exact prefix of the primary.
    assert len(promoted) == len(best_rows) > behind
    assert len(promoted) >= len(fast_rows) and fast_rows == rows[: len(fast_rows)]
    assert promoted == rows[: len(promoted)]
    (db,) = report["dbs"]
    assert db["catch_up"].startswith("applied")

    # Reported RPO against the true one (rows' commit times), within the stated resolution.
    true_rpo = rows[-1][1] - promoted[-1][1]
    assert db["rpo_basis"] == "replica"
    resolution = db["rpo_resolution_s"]
    # litestream's WAL monitor interval (1 s) + the primary's sync interval (tier table)
    assert resolution == pytest.approx(1.2)
    assert abs(true_rpo - db["rpo_s"]) <= resolution, (true_rpo, db)
    # RTO counts the command's own start.
    assert report["command_started_at"] is not None
    assert report["command_started_at"] <= report["started_at"]

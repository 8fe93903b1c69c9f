"""End to end on a real blob API: the primary replicates to Azurite (`abs`), restore-loop follows
it; the blob endpoint goes down (bounded, reported: timeouts counted, stale alert to #ops) and
comes back (the copy catches up, recovery message).

Every step waits for the state it asserts (one status snapshot per check); the deadlines only
bound a failure, so a loaded machine makes the test slower, never red."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes.azurite import Azurite
from tests.fakes.litestream_primary import Primary, Standby, count_rows, metric_value, read_rows

pytestmark = pytest.mark.system

# Bounds on a failure only: a passing run returns as soon as the state is there.
DEADLINE_S = 120.0


def db_row(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((dict(r) for r in status.get("databases") or [] if r.get("db") == name), {})


def test_follow_through_a_blob_outage(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    azurite = Azurite(tmp_path / "azurite").start()
    primary: Primary | None = None
    standby: Standby | None = None
    try:
        azurite.create_container("backups")
        primary = Primary(tmp_path / "anvil", ["alpha"], abs_endpoint=azurite.endpoint).create()
        primary.start_replicate()
        primary.start_writer(rate_per_s=10)
        standby = Standby(
            fleet_env,
            fleet_root,
            tmp_path,
            primary,
            stale_after_s="5",
            call_timeout_s="2",
            follow_interval='{"P0": 0.5, "P1": 0.5}',
        )
        port = free_port()
        standby.start(notify_socket.path, port)
        copy = standby.copy("alpha")
        assert wait_until(lambda: count_rows(copy) >= 20, timeout=DEADLINE_S)

        def following_fresh_and_quiet() -> bool:
            # One snapshot: following, caught up, and no incident open, so the one the
            # outage raises is the outage's.
            status = standby.status()
            row = db_row(status, "alpha")
            lag = row.get("lag_s")
            return (
                row.get("state") == "following"
                and lag is not None
                and float(lag) < 3
                and status.get("incidents") == []
            )

        assert wait_until(following_fresh_and_quiet, timeout=DEADLINE_S), standby.status()
        azurite.stop()
        down_at_rows = count_rows(copy)

        def timeouts() -> float:
            text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            return (
                metric_value(text, "fleet_restore_failures_total", db="alpha", reason="timeout")
                or 0
            )

        assert wait_until(lambda: timeouts() >= 2, timeout=DEADLINE_S)
        # The status file is written once per cycle, after the metric moved: wait for it.
        assert wait_until(
            lambda: "timed out" in str(standby.row("alpha").get("last_error")), timeout=DEADLINE_S
        ), standby.row("alpha")

        def outage_alerts() -> list[tuple[str, str, str]]:
            return [
                r
                for r in standby.outbox()
                if r[1].startswith("restore-stale:testhost:alpha:") and "unreachable" in r[2]
            ]

        assert wait_until(lambda: len(outage_alerts()) >= 1, timeout=DEADLINE_S)
        stale_key = outage_alerts()[0][1]
        status = run_fleet(["restore", "status", "--json"], standby.env, tmp_path)
        assert status.returncode == 1  # stale and failing: exit 1
        assert json.loads(status.stdout)["databases"][0]["ok"] is False
        assert standby.proc is not None and standby.proc.poll() is None

        azurite.start()
        assert wait_until(lambda: count_rows(copy) > down_at_rows + 20, timeout=DEADLINE_S)
        assert wait_until(
            lambda: any(r[1] == stale_key + ":recovered" for r in standby.outbox()),
            timeout=DEADLINE_S,
        )
        assert wait_until(lambda: standby.row("alpha").get("last_error") == "", timeout=DEADLINE_S)
        # One outage, one alert (and its recovery).
        assert [r[1] for r in outage_alerts()] == [stale_key]
        rows = read_rows(copy)
        assert rows == primary.rows("alpha")[: len(rows)]
    finally:
        # Every process is stopped whatever fails first (a leftover `litestream replicate` or
        # Azurite would load the machine for the tests after this one).
        try:
            if standby is not None and standby.proc is not None:
                code, out = standby.stop()
                assert code == 0, out[-2000:]
        finally:
            if primary is not None:
                primary.close()
            azurite.stop()

"""The printed cost against the blob API's own count: the primary replicates three DBs to
Azurite (one written at 10 tx/s, two idle), restore-loop follows them through a counting
forwarder, and the LIST requests it made over a measured window, extrapolated to a day, are
within 10 % of what `fleet restore status --json` prints for the same plan (with the write rates
it measured: a poll that finds data is 1 LIST, an idle one 9)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import NotifySocket, free_port, run_fleet, wait_until
from tests.fakes.azurite import Azurite, CountingProxy
from tests.fakes.litestream_primary import AZURITE_ACCOUNT, Primary, Standby

pytestmark = pytest.mark.system

DEADLINE_S = 120.0
WINDOW_S = 15.0  # ~100 polls per DB: the count is the behaviour, the window only its sample


def test_printed_cost_matches_the_blob_request_count(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    azurite = Azurite(tmp_path / "azurite").start()
    proxy = CountingProxy(azurite.port)
    primary: Primary | None = None
    standby: Standby | None = None
    try:
        azurite.create_container("backups")
        names = ["busy", "quiet1", "quiet2"]
        # One upload a second against polls every 0.5 s: the follower keeps up, half its polls
        # find a file (1 LIST) and half do not (9).
        primary = Primary(
            tmp_path / "anvil", names, sync_interval="1s", abs_endpoint=azurite.endpoint
        ).create()
        primary.start_replicate()
        primary.start_writer(rate_per_s=10, only=["busy"])
        standby = Standby(
            fleet_env,
            fleet_root,
            tmp_path,
            primary,
            follow_interval='{"P0": 0.5, "P1": 0.5}',
            verify_interval_s="600",
            check_interval_s="2",
            stall_after_s="60",
        )
        config = fleet_root / "config" / "litestream-restore.yml"
        config.write_text(
            config.read_text().replace(azurite.endpoint, proxy.endpoint(AZURITE_ACCOUNT))
        )
        standby.start(notify_socket.path, free_port())

        def settled() -> bool:
            rows = standby.status().get("databases") or []
            return len(rows) == 3 and all(
                r.get("state") == "following" and r.get("listed_at") for r in rows
            )

        assert wait_until(settled, timeout=DEADLINE_S), standby.status()

        # Upload rates measured (from the followers' progress): busy > 0, the quiet ones 0.
        def measured() -> bool:
            rates = {r["db"]: r.get("writes_per_s") for r in standby.status()["databases"]}
            return bool(rates["busy"]) and rates["quiet1"] == 0 and rates["quiet2"] == 0

        assert wait_until(measured, timeout=DEADLINE_S), standby.status()
        before, t0 = proxy.snapshot(), time.monotonic()
        time.sleep(WINDOW_S)
        counted = proxy.snapshot()["LIST"] - before["LIST"]
        window = time.monotonic() - t0
        result = run_fleet(["restore", "status", "--json"], standby.env, tmp_path)
        printed = json.loads(result.stdout)["bill"]["standby_list_per_day"]
        measured = counted * 86400 / window
        assert counted > 0
        assert abs(measured / printed - 1) <= 0.10, (measured, printed, counted)
    finally:
        if standby is not None:
            standby.stop()
        if primary is not None:
            primary.close()
        proxy.close()
        azurite.stop()

"""New history, new path: `fleet litestream config` puts the replica paths of a promoted primary
under its epoch, a standby follows the newest epoch it has seen, epoch 0 keeps the plain path;
and a real litestream replicating under the new path leaves the old history untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemons.restore_loop.catalog import parse_tier_table
from daemons.restore_loop.epoch_paths import with_epoch
from shared.epochs import Epoch, PeerEpoch, record_peer_epoch, replication_epoch, write_epoch
from shared.roles import Role
from tests.conftest import run_fleet
from tests.fakes.litestream_primary import Primary

pytestmark = pytest.mark.system


def test_replication_epoch_by_role(tmp_path: Path) -> None:
    role_file = tmp_path / "state/role"
    assert replication_epoch(role_file, Role.PRIMARY) == 0
    write_epoch(role_file, Epoch(2, "forge", 1.0))
    assert replication_epoch(role_file, Role.PRIMARY) == 2
    record_peer_epoch(role_file, PeerEpoch("anvil", Role.PRIMARY, Epoch(3, "anvil", 2.0), 3.0))
    assert replication_epoch(role_file, Role.STANDBY) == 3
    assert replication_epoch(role_file, Role.PRIMARY) == 2


def test_litestream_config_uses_the_epoch_path(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    primary = Primary(tmp_path / "anvil", ["alpha"])
    tables = fleet_root / "config/databases.toml"
    primary.write_tier_table(tables)
    env = {**fleet_env, "FLEET_RESTORE_LOOP__DATABASES_FILE": str(tables)}
    plain = run_fleet(["litestream", "config", "--role", "primary"], env, tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert f"{primary.replica_dir}/alpha" in plain.stdout and "epoch-" not in plain.stdout
    write_epoch(fleet_root / "state/role", Epoch(2, "forge", 1.0))
    res = run_fleet(["litestream", "config", "--role", "primary"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{primary.replica_dir}/epoch-2/alpha" in res.stdout
    standby = run_fleet(
        ["litestream", "config", "--role", "standby", "--epoch", "5"], env, tmp_path
    )
    assert f"{primary.replica_dir}/epoch-5/alpha" in standby.stdout

    # A real replicate under epoch 2 writes there and nowhere else.
    primary.create()
    primary.table = with_epoch(parse_tier_table(primary.tier_table()), 2)
    primary.start_replicate()
    try:
        from tests.conftest import wait_until

        new = primary.replica_dir / "epoch-2" / "alpha"
        assert wait_until(lambda: any(new.rglob("*.ltx")), timeout=60)
        assert not (primary.replica_dir / "alpha").exists()
    finally:
        primary.close()

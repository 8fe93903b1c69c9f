"""The promotion lock in one process: a second holder is refused at once with the first's pid,
the lock is free again after the block (and after an error in it), the lock file is 0600, and a
promote that finds the role file already primary touches nothing. Two real processes racing
are in tests/system/test_restore_promote_lock.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemons.restore_loop.config import RestoreLoopSection
from daemons.restore_loop.promote import AlreadyPromoted, Promoter
from daemons.restore_loop.state import PromotionLocked, RestoreTarget, StatePaths
from shared.logging import get_logger


def test_a_second_holder_is_refused_with_the_first_holders_pid(tmp_path: Path) -> None:
    paths = StatePaths.under(tmp_path / "state")
    with paths.promotion_lock():
        assert paths.promote_lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(PromotionLocked) as caught, paths.promotion_lock():
            pytest.fail("a second holder got the lock")
        assert caught.value.holder == os.getpid()
        assert f"held by pid {os.getpid()}" in str(caught.value)
    assert paths.promote_lock.stat().st_mode & 0o777 == 0o600
    assert paths.promote_lock.read_text() == "", "no stale pid once released"
    with pytest.raises(RuntimeError), paths.promotion_lock():
        raise RuntimeError("promotion failed")
    with paths.promotion_lock():  # released after an error too
        pass


async def test_a_promote_after_a_finished_one_touches_nothing(tmp_path: Path) -> None:
    standby_dir = tmp_path / "databases"
    standby_dir.mkdir()
    role_file = tmp_path / "state" / "role"
    role_file.parent.mkdir()
    role_file.write_text("primary\n")
    paths = StatePaths.under(tmp_path / "state")
    section = RestoreLoopSection(standby_dir=standby_dir, config_path=tmp_path / "restore.yml")
    promoter = Promoter(section, paths, role_file, "forge", None, log=get_logger())
    target = RestoreTarget("alpha", "P0", standby_dir / "alpha.db", "follow", 1.0, 60, 60)
    with pytest.raises(AlreadyPromoted, match="already primary"):
        await promoter.promote([target], catch_up_timeout_s=5)
    assert not paths.promotions.exists() and not paths.fence.exists()
    with paths.promotion_lock(), pytest.raises(PromotionLocked):
        await promoter.promote([target], catch_up_timeout_s=5, set_role=False)
    assert not paths.promotions.exists()

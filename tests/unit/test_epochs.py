"""shared.epochs: the stand-down decision (pure), epoch numbering and hostile epoch files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from shared.epochs import (
    Epoch,
    PeerEpoch,
    begin_epoch,
    must_stand_down,
    read_epoch,
    read_peer_epochs,
    record_peer_epoch,
    stand_down_reason,
)
from shared.roles import Role


def _peer(name: str, role: Role | None, number: int | None) -> PeerEpoch:
    epoch = Epoch(number, name, 100.0) if number is not None else None
    return PeerEpoch(name, role, epoch, 1.0)


@pytest.mark.parametrize(
    ("role", "local", "peer_role", "peer_number", "fenced"),
    [
        (Role.PRIMARY, 1, Role.PRIMARY, 2, True),
        (Role.PRIMARY, None, Role.PRIMARY, 1, True),  # never promoted: epoch 0
        (Role.PRIMARY, 2, Role.PRIMARY, 2, False),  # equal: the epochs decide nothing
        (Role.PRIMARY, 3, Role.PRIMARY, 2, False),
        (Role.PRIMARY, 1, Role.STANDBY, 2, False),  # a demoted peer fences nobody
        (Role.PRIMARY, 1, None, 2, False),
        (Role.PRIMARY, 1, Role.PRIMARY, None, False),
        (Role.STANDBY, 1, Role.PRIMARY, 2, False),  # a standby has nothing to stand down
    ],
)
def test_must_stand_down(
    role: Role, local: int | None, peer_role: Role | None, peer_number: int | None, fenced: bool
) -> None:
    mine = Epoch(local, "anvil", 50.0) if local is not None else None
    peers = {"forge": _peer("forge", peer_role, peer_number)}
    reason = must_stand_down(role, mine, peers, "anvil")
    assert (reason is not None) is fenced
    if reason:
        assert "forge" in reason and "anvil must stand down" in reason


def test_begin_epoch_passes_every_epoch_seen(tmp_path: Path) -> None:
    role_file = tmp_path / "state" / "role"
    assert begin_epoch(role_file, "forge", 10.0).number == 1
    assert record_peer_epoch(role_file, _peer("anvil", Role.PRIMARY, 7))
    assert not record_peer_epoch(role_file, _peer("anvil", Role.PRIMARY, 7))  # unchanged
    epoch = begin_epoch(role_file, "forge", 20.0)
    assert epoch == Epoch(8, "forge", 20.0) and read_epoch(role_file) == epoch
    assert stat.S_IMODE((tmp_path / "state/epoch").stat().st_mode) == 0o600
    assert stand_down_reason(role_file, Role.PRIMARY, "forge") is None


@pytest.mark.parametrize(
    "content",
    [b"", b"3", b"[]", b'{"number": true, "host": "a", "at": 1}', b'{"number": 2}', b"\xff"],
)
def test_a_garbled_epoch_is_no_epoch(tmp_path: Path, content: bytes) -> None:
    role_file = tmp_path / "role"
    (tmp_path / "epoch").write_bytes(content)
    (tmp_path / "peer-epochs.json").write_bytes(content)
    assert read_epoch(role_file) is None
    assert read_peer_epochs(role_file) == {}


def test_a_directory_or_fifo_is_no_epoch(tmp_path: Path) -> None:
    import os

    (tmp_path / "epoch").mkdir()
    os.mkfifo(tmp_path / "peer-epochs.json")
    assert read_epoch(tmp_path / "role") is None
    assert read_peer_epochs(tmp_path / "role") == {}

"""Promotion epochs: which host's history is the newest, and whether this host must stand down.

Every promotion writes ``<state>/epoch`` beside the role file: a monotonic number, the host that
was promoted and when (JSON, atomic, 0600). The heartbeat daemon records the epochs its peers
report on /health in ``<state>/peer-epochs.json``. A host whose role is primary but which knows a
peer that reports primary under a NEWER epoch is *fenced*: its writer daemons refuse to start
(exit 78 with ``stand_down_reason``), its /health says ``fenced``, and the two-primaries alert
names it as the host that must stand down. This module is the one reader and writer of both
files; it must never change the role file, and a garbled epoch file is never read as newer.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.roles import Role

__all__ = [
    "EPOCH_FILE",
    "PEER_EPOCHS_FILE",
    "Epoch",
    "PeerEpoch",
    "begin_epoch",
    "epoch_path",
    "must_stand_down",
    "newer_peer",
    "peer_epochs_path",
    "read_epoch",
    "read_peer_epochs",
    "record_peer_epoch",
    "replication_epoch",
    "stand_down_reason",
    "write_epoch",
]

EPOCH_FILE = "epoch"
PEER_EPOCHS_FILE = "peer-epochs.json"
#: an epoch file is one small JSON object; anything larger was not written by the fleet
_MAX_BYTES = 4096


@dataclass(frozen=True)
class Epoch:
    """One promotion: ``number`` grows by one at each promotion anywhere in the pair."""

    number: int
    host: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "host": self.host, "at": self.at}

    @classmethod
    def from_json(cls, raw: Any) -> Epoch | None:
        """The epoch ``raw`` describes, or None when it is not one (wrong types, negative)."""
        if not isinstance(raw, dict):
            return None
        number, host, at = raw.get("number"), raw.get("host"), raw.get("at")
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            return None
        if not isinstance(host, str) or not host or len(host) > 200:
            return None
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            return None
        return cls(number, host, float(at))


@dataclass(frozen=True)
class PeerEpoch:
    """What a watched peer last reported: its role and epoch (None: it has none)."""

    peer: str
    role: Role | None
    epoch: Epoch | None
    seen_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value if self.role is not None else None,
            "epoch": self.epoch.to_json() if self.epoch is not None else None,
            "seen_at": self.seen_at,
        }


def epoch_path(role_file: Path) -> Path:
    """Where the epoch lives: beside the role file."""
    return role_file.parent / EPOCH_FILE


def peer_epochs_path(role_file: Path) -> Path:
    return role_file.parent / PEER_EPOCHS_FILE


def _read_small(path: Path) -> bytes | None:
    """A regular file's bytes (at most ``_MAX_BYTES``); None when absent or not a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _MAX_BYTES * 16)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_epoch(role_file: Path) -> Epoch | None:
    """This host's epoch; None when it was never promoted or the file is not an epoch (a
    garbled file counts as epoch 0: it can never make this host look newer than a peer)."""
    data = _read_small(epoch_path(role_file))
    if data is None or len(data) > _MAX_BYTES:
        return None
    try:
        return Epoch.from_json(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def write_epoch(role_file: Path, epoch: Epoch) -> None:
    from shared.files import atomic_write_json  # not at import: /health reads epochs

    atomic_write_json(epoch_path(role_file), epoch.to_json())


def read_peer_epochs(role_file: Path) -> dict[str, PeerEpoch]:
    """Peer name -> what it last reported; {} when there is no record or it is garbled."""
    data = _read_small(peer_epochs_path(role_file))
    if data is None:
        return {}
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    out: dict[str, PeerEpoch] = {}
    if not isinstance(raw, dict):
        return out
    for name, body in raw.items():
        if not isinstance(name, str) or not isinstance(body, dict):
            continue
        role_raw, seen = body.get("role"), body.get("seen_at")
        role = Role(role_raw) if role_raw in tuple(Role) else None
        if isinstance(seen, bool) or not isinstance(seen, int | float):
            continue
        out[name] = PeerEpoch(name, role, Epoch.from_json(body.get("epoch")), float(seen))
    return out


def record_peer_epoch(role_file: Path, seen: PeerEpoch) -> bool:
    """Store what ``seen.peer`` reported (blocking); True when the record changed (the file
    is rewritten only then, not on every probe)."""
    from shared.files import atomic_write_json

    peers = read_peer_epochs(role_file)
    old = peers.get(seen.peer)
    if old is not None and (old.role, old.epoch) == (seen.role, seen.epoch):
        return False
    peers[seen.peer] = seen
    atomic_write_json(peer_epochs_path(role_file), {n: p.to_json() for n, p in peers.items()})
    return True


def newer_peer(local: Epoch | None, peers: dict[str, PeerEpoch]) -> PeerEpoch | None:
    """The peer reporting primary under the newest epoch newer than ``local`` (None: none)."""
    mine = local.number if local is not None else 0
    best: PeerEpoch | None = None
    for peer in peers.values():
        if peer.role is not Role.PRIMARY or peer.epoch is None or peer.epoch.number <= mine:
            continue
        if best is None or best.epoch is None or peer.epoch.number > best.epoch.number:
            best = peer
    return best


def must_stand_down(
    role: Role, local: Epoch | None, peers: dict[str, PeerEpoch], host: str
) -> str | None:
    """Why a host of ``role`` with epoch ``local`` must not act as primary, or None. Pure."""
    if role is not Role.PRIMARY:
        return None
    peer = newer_peer(local, peers)
    if peer is None or peer.epoch is None:
        return None
    mine = f"epoch {local.number}" if local is not None else "no epoch (never promoted)"
    return (
        f"fenced: peer {peer.peer} is primary under epoch {peer.epoch.number} (host "
        f"{peer.epoch.host}, promoted {_iso(peer.epoch.at)}) and {host} has {mine}; {host} must "
        "stand down: run `fleet dr failback` here (or `fleet role set standby`)"
    )


def stand_down_reason(role_file: Path, role: Role, host: str) -> str | None:
    """``must_stand_down`` over this host's files (blocking; two small reads)."""
    if role is not Role.PRIMARY:
        return None
    return must_stand_down(role, read_epoch(role_file), read_peer_epochs(role_file), host)


def replication_epoch(role_file: Path, role: Role) -> int:
    """The epoch whose replica path litestream uses on a host of ``role``: a primary writes
    under its own epoch; a standby follows the newest epoch it knows (its own, or any peer's),
    which is the current primary's. 0: nobody was ever promoted (the plain path)."""
    local = read_epoch(role_file)
    mine = local.number if local is not None else 0
    if role is Role.PRIMARY:
        return mine
    peers = [p.epoch.number for p in read_peer_epochs(role_file).values() if p.epoch]
    return max([mine, *peers])


def begin_epoch(role_file: Path, host: str, now: float) -> Epoch:
    """A new epoch for this host, newer than its own and every peer's it has seen; written
    beside the role file. Called by a promotion right after it sets the role."""
    numbers = [0]
    local = read_epoch(role_file)
    if local is not None:
        numbers.append(local.number)
    numbers += [p.epoch.number for p in read_peer_epochs(role_file).values() if p.epoch]
    epoch = Epoch(max(numbers) + 1, host, now)
    write_epoch(role_file, epoch)
    return epoch


def _iso(ts: float) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, ValueError, OSError):
        return "at an unknown time"

"""The heartbeat daemon's state file: each peer's incident state and the alerts not yet handed
to the outbox, so a restart in the middle of an outage neither re-alerts nor forgets one.

Written atomically (0600) by ``save``; ``load`` treats the file as untrusted and never raises
on a corrupt one (it reports the problem and starts fresh). It must never hold a ping URL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemons.heartbeat.policy import PeerState
from shared.files import atomic_write_json
from shared.notify import Message

__all__ = ["STATE_VERSION", "LoadedState", "PeerStateFile"]

STATE_VERSION = 1


@dataclass
class LoadedState:
    peers: dict[str, PeerState] = field(default_factory=dict)
    pending: list[Message] = field(default_factory=list)
    problem: str | None = None


def _message(raw: Any) -> Message | None:
    if not isinstance(raw, dict):
        return None
    fields = ("channel", "text", "dedup_key")
    if not all(isinstance(raw.get(k), str) and raw.get(k) for k in fields):
        return None
    return Message(raw["channel"], raw["text"], raw["dedup_key"], daemon="heartbeat")


class PeerStateFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, peer_names: Iterable[str]) -> LoadedState:
        """States for the configured peers (peers no longer configured are dropped)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return LoadedState()
        except (OSError, ValueError) as exc:
            return LoadedState(problem=f"unreadable: {type(exc).__name__}")
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            return LoadedState(problem="unknown format or version")
        peers_raw = raw.get("peers")
        peers: dict[str, PeerState] = {}
        if isinstance(peers_raw, Mapping):
            for name in peer_names:
                entry = peers_raw.get(name)
                if isinstance(entry, Mapping):
                    peers[name] = PeerState.from_json(name, entry)
        pending_raw = raw.get("pending")
        pending: list[Message] = []
        if isinstance(pending_raw, list):
            pending = [m for m in map(_message, pending_raw) if m is not None]
        return LoadedState(peers, pending)

    def save(self, peers: Mapping[str, PeerState], pending: Iterable[Message]) -> None:
        atomic_write_json(
            self.path,
            {
                "version": STATE_VERSION,
                "peers": {name: state.to_json() for name, state in peers.items()},
                "pending": [
                    {"channel": m.channel, "text": m.text, "dedup_key": m.dedup_key}
                    for m in pending
                ],
            },
        )

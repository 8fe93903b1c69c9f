"""The cross-daemon checks of a DR drill, read-only: would tier routing fail over to this host
with the primary down (ollama-health's own ``resolve``), and is the peer-watch alert path live
(heartbeat's last probes, its heartbeat file, the outbox it enqueues into). Each returns a
``Check``: a verdict, the measured values and the evidence it used. Nothing here probes a host,
sends a message or writes a file.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.config import FleetConfig
from shared.heartbeats import read_status

__all__ = ["Check", "check_peer_watch", "check_routing", "primary_position"]

#: the seed's acceptance bound for "Slack alert latency"
ALERT_TARGET_S = 150.0


@dataclass
class Check:
    name: str
    ok: bool
    summary: str
    measured: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _routing_table(config: FleetConfig) -> Any:
    from daemons.ollama_health.config import OllamaHealthSection
    from daemons.ollama_health.daemon import MAX_TIER_ROUTING_BYTES
    from daemons.ollama_health.table import parse_tier_routing, table_from_section

    section = config.section(OllamaHealthSection)
    if section.tier_routing_file is None:
        return table_from_section(section), "[ollama_health] hosts/rules"
    with section.tier_routing_file.open("rb") as fh:
        raw = fh.read(MAX_TIER_ROUTING_BYTES + 1)
    return parse_tier_routing(json.loads(raw)), str(section.tier_routing_file)


def check_routing(config: FleetConfig, primary_host: str | None, now: float) -> Check:
    """Every tier the primary serves must route somewhere with the primary marked down, and at
    least one of them to this host. The other hosts keep the health ollama-health last wrote
    (assumed up when it is missing or stale: then it is a check of the rules only)."""
    from daemons.ollama_health.config import OllamaHealthSection
    from daemons.ollama_health.routing import Unavailable, resolve, status_age
    from daemons.ollama_health.status_file import StatusFileError
    from daemons.ollama_health.status_file import read_status as read_ollama_status
    from daemons.ollama_health.table import TableError

    check = Check("routing", False, "")
    try:
        table, source = _routing_table(config)
    except (OSError, ValueError, TableError) as exc:
        check.summary = f"no usable tier routing table: {exc}"
        return check
    check.evidence.append(f"routing table from {source}")
    here = config.fleet.host
    others = [h for h in table.hosts if h != here]
    primary = primary_host or (others[0] if len(others) == 1 else None)
    if primary is None or primary not in table.hosts:
        known = ", ".join(table.hosts) or "none"
        check.summary = (
            f"cannot tell which routing host is the primary (hosts: {known}); pass --primary-host"
        )
        return check
    healthy = {h: True for h in table.hosts}
    try:
        status = read_ollama_status(config.section(OllamaHealthSection).status_file)
    except StatusFileError:
        status = None
    age = status_age(status, now) if status is not None else None
    if status is not None and age is not None and 0 <= age < 300:
        for host in table.hosts:
            entry = status.get(host)
            if isinstance(entry, dict) and isinstance(entry.get("healthy"), bool):
                healthy[host] = entry["healthy"]
        check.evidence.append(f"other hosts' health from ollama-health's status ({age:.0f}s old)")
    else:
        check.evidence.append("no fresh ollama-health status: other hosts assumed up")
    healthy[primary] = False
    routes: dict[str, str] = {}
    unavailable: list[str] = []
    for rule in table.rules.values():
        if rule.source != primary:
            continue
        for tier in rule.tiers:
            try:
                routes[tier] = resolve(table, healthy, tier, None).host
            except Unavailable:
                unavailable.append(tier)
    check.measured = {
        "primary": primary,
        "routes": routes,
        "unavailable": unavailable,
        "this_host_healthy": healthy.get(here),
    }
    check.evidence.append(f"`fleet ollama route TIER` logic with {primary} marked down")
    to_here = sorted(t for t, h in routes.items() if h == here)
    if unavailable:
        check.summary = f"tier(s) {', '.join(sorted(unavailable))} unavailable with {primary} down"
    elif not routes:
        check.summary = f"no failover rule fires when {primary} is down"
    elif here in table.hosts and not to_here:
        check.summary = f"no tier would move to {here} ({routes})"
    else:
        check.ok = True
        moved = ", ".join(f"{t}->{h}" for t, h in sorted(routes.items()))
        check.summary = f"with {primary} down: {moved}"
    return check


def check_peer_watch(config: FleetConfig, now: float) -> Check:
    """The alert path that tells #ops the primary is gone: heartbeat running here (fresh
    heartbeat file), a recent probe of every watched peer, the outbox openable; and the alert
    latency its thresholds give (alert_after x interval + timeout) against the seed's bound."""
    from daemons.heartbeat.config import HeartbeatSection
    from daemons.heartbeat.store import PeerStateFile

    check = Check("peer_watch", False, "")
    section = config.section(HeartbeatSection)
    problems: list[str] = []
    if not section.enabled or not section.peers:
        check.summary = "heartbeat disabled or no [[heartbeat.peers]]: nobody watches the primary"
        return check
    beat = read_status(config.heartbeat_dir, "heartbeat", now)
    if not beat.ok:
        problems.append(f"heartbeat daemon not healthy here ({beat.reason})")
    loaded = PeerStateFile(section.state_file).load([p.name for p in section.peers])
    peers: dict[str, Any] = {}
    latency = 0.0
    for peer in section.peers:
        st = loaded.peers.get(peer.name)
        last = st.last_probe_at if st is not None else None
        bound = max(3 * peer.interval_s, 120.0)
        age = max(0.0, now - last) if last is not None else None
        est = peer.alert_after * peer.interval_s + peer.timeout_s
        latency = max(latency, est)
        peers[peer.name] = {
            "last_probe_age_s": round(age, 1) if age is not None else None,
            "last_ok": st.last_ok if st is not None else None,
            "role": st.peer_role if st is not None else None,
            "alert_latency_bound_s": est,
        }
        if age is None or age > bound:
            problems.append(f"peer {peer.name} not probed in the last {bound:.0f}s")
    try:
        conn = sqlite3.connect(f"file:{config.notify.outbox_db}?mode=ro", uri=True, timeout=5)
        try:
            conn.execute("SELECT count(*) FROM outbox").fetchone()
        finally:
            conn.close()
        outbox = "ok"
    except sqlite3.Error as exc:
        outbox = f"{type(exc).__name__}: {exc}"
        problems.append(f"outbox not readable ({outbox})")
    if latency > ALERT_TARGET_S:
        problems.append(
            f"alert latency bound {latency:.0f}s exceeds {ALERT_TARGET_S:.0f}s "
            "(lower alert_after or interval_s)"
        )
    check.measured = {"peers": peers, "outbox": outbox, "alert_latency_bound_s": latency}
    check.evidence += [
        f"heartbeat file {config.heartbeat_dir / 'heartbeat.json'}",
        f"peer state {section.state_file}",
        f"outbox {config.notify.outbox_db}",
    ]
    check.ok = not problems
    check.summary = "; ".join(problems) if problems else "peer watch live, outbox reachable"
    return check


def primary_position(config: FleetConfig) -> dict[str, Any]:
    """What peer watch last saw of the peers (reachable, role), for the report."""
    from daemons.heartbeat.config import HeartbeatSection
    from daemons.heartbeat.store import PeerStateFile

    section = config.section(HeartbeatSection)
    loaded = PeerStateFile(section.state_file).load([p.name for p in section.peers])
    out: dict[str, Any] = {}
    for name, st in loaded.peers.items():
        out[name] = {
            "reachable": st.last_ok,
            "role": st.peer_role,
            "last_probe_at": st.last_probe_at,
        }
    return out

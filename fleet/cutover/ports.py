"""The TCP ports the fleet's services will listen on here, and whether another process holds
one now (health-server.js on :8099 is the case the cutover exists for).

A port is probed by binding the address the daemon will bind, briefly; a port held by this
host's own running fleet daemon (its heartbeat file names a live pid) is not a conflict.
Nothing here connects anywhere or keeps a socket.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from shared.config import FleetConfig
from shared.heartbeats import read_heartbeat
from shared.manifest import DaemonManifest
from shared.roles import Role

__all__ = ["FleetPort", "fleet_ports", "held_by_fleet", "port_problem"]


@dataclass(frozen=True)
class FleetPort:
    daemon: str
    key: str  # the config key: "heartbeat.health_port"
    address: str
    port: int


def fleet_ports(
    config: FleetConfig, manifests: Sequence[DaemonManifest], role: Role
) -> list[FleetPort]:
    """Every port an enabled daemon that runs with ``role`` listens on, with the address it
    binds (``<name>_bind`` beside ``<name>_port`` when the section has one, else [fleet] bind)."""
    ports: list[FleetPort] = []
    for manifest in manifests:
        section = config.daemon_section(manifest.section_name)
        if not section.enabled or manifest.refuse_reason(section, role):
            continue
        for key, port in section.listening_ports().items():
            if not port:
                continue
            bind = getattr(section, key.removesuffix("_port") + "_bind", None)
            address = bind if isinstance(bind, str) and bind else config.fleet.bind
            ports.append(FleetPort(manifest.name, f"{manifest.section_name}.{key}", address, port))
    return ports


def port_problem(address: str, port: int) -> str | None:
    """Why the fleet could not listen on ``address:port`` now (None: it could)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as the daemons' servers do: a port in TIME_WAIT is free, a listener is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "another process is listening on it"
            return f"cannot bind it: {exc.strerror}"
    return None


def held_by_fleet(config: FleetConfig, daemon: str) -> bool:
    """Is ``daemon`` running on this host now (its heartbeat names this host and a live pid)?"""
    beat = read_heartbeat(config.heartbeat_dir, daemon)
    if beat is None or beat.host != config.fleet.host:
        return False
    if not isinstance(beat.pid, int) or beat.pid <= 0:
        return False
    try:
        os.kill(beat.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

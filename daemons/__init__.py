"""The fleet's daemons, one package each, and the registry the CLI reads.

The registry names each daemon (hyphenated), its config section (underscored) and where its
Daemon class lives, so the CLI can import only the daemon it runs. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REGISTRY", "DaemonSpec", "section_name"]


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    module: str
    class_name: str

    @property
    def section(self) -> str:
        return section_name(self.name)


def section_name(daemon_name: str) -> str:
    return daemon_name.replace("-", "_")


REGISTRY: dict[str, DaemonSpec] = {
    spec.name: spec
    for spec in (
        DaemonSpec("email-reactor", "daemons.email_reactor.daemon", "EmailReactor"),
        DaemonSpec("ollama-health", "daemons.ollama_health.daemon", "OllamaHealth"),
        DaemonSpec("restore-loop", "daemons.restore_loop.daemon", "RestoreLoop"),
        DaemonSpec("heartbeat", "daemons.heartbeat.daemon", "Heartbeat"),
        DaemonSpec("blueprint-watchdog", "daemons.blueprint_watchdog.daemon", "BlueprintWatchdog"),
        DaemonSpec("claim-sweeper", "daemons.claim_sweeper.daemon", "ClaimSweeper"),
    )
}

"""What the app needs to know about a daemon without running it: the ``DaemonManifest``.

Each daemon package has a ``manifest.py`` building one ``DaemonManifest`` from plain data and
small pure functions: its name and config section, where it may run (the role rule), the
metrics it exports (the one list used both to register them and to generate dashboards and
rules), its alert rules, the databases it writes, its unit profile and its entry points. The
app (``fleet/``) reads manifests to answer ``fleet status``, ``/health``, unit and pack
generation; it imports a daemon's runtime code only to run it.

This module must stay cheap to import (standard library only at run time) and must never do
I/O: manifests are data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shared.roles import Role
from shared.schema_contract import ContractUse

if TYPE_CHECKING:
    from shared.config import FleetConfig
    from shared.sections import DaemonSection

__all__ = [
    "TARGET_LABELS",
    "AlertRule",
    "CompanionService",
    "DaemonManifest",
    "MetricKind",
    "MetricSpec",
    "ProcessType",
    "ScheduledJob",
    "SecretsEnvFile",
    "UnitProfile",
    "WrittenDb",
    "fenced_off",
    "load_entry",
    "metric",
]

MetricKind = Literal["gauge", "counter", "histogram"]
#: launchd.plist(5) ProcessType values (Adaptive follows XPC activity; Interactive is for apps)
ProcessType = Literal["Standard", "Background", "Adaptive", "Interactive"]

#: labels the Prometheus scrape config gives every series of a target (shared.observability)
TARGET_LABELS = frozenset({"host", "job", "instance"})


@dataclass(frozen=True)
class MetricSpec:
    """One metric family as it appears on /metrics (counters already end in ``_total``)."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None  # histograms; None: prometheus-client's defaults

    def __post_init__(self) -> None:
        # prometheus-client exports a counter as <name>_total whatever it is given: a spec
        # naming it otherwise would let rules and panels read a series that never exists.
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r}: name it as exported, ending in _total")
        if self.kind != "histogram" and self.buckets is not None:
            raise ValueError(f"{self.name!r}: only histograms have buckets")
        # The scrape target sets these (host: the machine); one a daemon exported too would
        # end up as exported_<label> or, with honor_labels, overwrite the machine's name.
        clash = sorted(TARGET_LABELS.intersection(self.labels))
        if clash:
            raise ValueError(
                f"{self.name!r}: {clash[0]!r} is the scrape target's label; name the daemon's "
                "own label after what it is (llm_host, peer, db)"
            )

    def series(self) -> tuple[str, ...]:
        """The sample names Prometheus stores for this family."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)

    @property
    def client_name(self) -> str:
        """The name to give prometheus-client (it appends ``_total`` to counters itself)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def metric(name: str, kind: MetricKind, help_: str, *labels: str) -> MetricSpec:
    """Shorthand for manifests: ``metric("fleet_x_total", "counter", "what", "label")``."""
    return MetricSpec(name, kind, help_, tuple(labels))


@dataclass(frozen=True)
class AlertRule:
    """One Prometheus alerting rule. ``runbook`` is a repository path under docs/ and may use
    ``{{ $labels.daemon }}`` (the rendered rule links it under ``[alerting]
    runbook_base_url``); ``daemons`` names whose metrics it reads (empty: every daemon's)."""

    name: str
    expr: str
    for_: str
    severity: Literal["critical", "warning"]
    summary: str
    description: str
    runbook: str
    daemons: tuple[str, ...] = ()

    @property
    def anchor(self) -> str:
        return self.name.lower()

    def to_rule(self, base_url: str = "") -> dict[str, Any]:
        """The rule as Prometheus loads it; the links are under ``base_url`` (an absolute
        URL the repository is browsable at; empty: repository paths)."""
        base = base_url.rstrip("/") + "/" if base_url else ""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": base + self.runbook,
                "doc_url": f"{base}docs/alerts.md#{self.anchor}",
            },
        }


@dataclass(frozen=True)
class WrittenDb:
    """A database a daemon writes: the dotted config key naming it, its path, and who writes
    it (for messages). The standby-dir rule is computed from these."""

    key: str
    path: Path
    writer: str


@dataclass(frozen=True)
class UnitProfile:
    """What a daemon needs from its service manager; the unit/plist generator reads it.
    Paths are the directories it writes (state and logs are always included)."""

    write_paths: tuple[Path, ...] = ()
    shared_tmp: bool = False  # a configured file lives in /tmp: the unit must not PrivateTmp
    tasks_max: int = 64
    memory_max_mb: int = 256
    needs_network: bool = True
    # The service's stdout/stderr files (set both, in one directory); None: launchd writes
    # <root>/logs/<name>.log and .err.log, systemd the journal.
    log_file: Path | None = None
    error_log_file: Path | None = None
    # launchd's ProcessType (macOS): "Background" throttles CPU and I/O and coalesces timers,
    # for batch work nobody waits on; "Standard" (light limits) for work with a deadline.
    # docs/operations.md has the choice per daemon and why.
    process_type: ProcessType = "Standard"


@dataclass(frozen=True)
class CompanionService:
    """A service a daemon asks to be installed beside the fleet's own (restore-loop asks for
    ``litestream replicate`` on the primary). It runs a program that is not ``fleet run``, so it
    gets ``Type=exec`` and no watchdog; secrets go in ``environment_file`` (KEY=VALUE, mode
    0600, outside the repo)."""

    name: str  # hyphenated; unit alai-fleet-<name>.service, label no.alai.fleet.<name>
    description: str
    argv: tuple[str, ...]
    profile: UnitProfile = field(default_factory=UnitProfile)
    environment_file: Path | None = None


@dataclass(frozen=True)
class ScheduledJob:
    """A ``fleet`` command a daemon asks to be run on a calendar on the hosts where the daemon
    itself runs (restore-loop's standby runs ``fleet dr drill`` monthly): a systemd oneshot
    service with a ``.timer`` (Persistent: a missed run happens at the next boot), or a launchd
    job with StartCalendarInterval. ``args`` follow the ``fleet`` binary."""

    name: str  # hyphenated; alai-fleet-<name>.service/.timer, no.alai.fleet.<name>
    description: str
    args: tuple[str, ...]
    day: int = 1  # of the month, 1-28
    hour: int = 4
    minute: int = 30
    #: a secrets file the job loads (KEY=VALUE, 0600), as a companion's
    environment_file: Path | None = None


@dataclass(frozen=True)
class SecretsEnvFile:
    """A KEY=VALUE file of secrets (``shared.envfile``) a daemon's own service loads as its
    environment: mode 0600, owned by the service's user, outside the repo. ``variables`` are
    the names the daemon's programs read from it (restore-loop: the ``${VAR}`` references of
    the litestream YAML its children run); one missing is a ``fleet cutover check`` conflict.
    Only a daemon that declares one gets it: no daemon is handed another's secrets."""

    path: Path
    variables: tuple[str, ...] = ()


def _never_refuses(_section: Any, _role: Role) -> str | None:
    return None


def _writes_nothing(_config: Any, _section: Any) -> Sequence[WrittenDb]:
    return ()


def _default_profile(_config: Any, _section: Any) -> UnitProfile:
    return UnitProfile()


def _no_companions(_config: Any, _prefix: Path) -> Sequence[CompanionService]:
    return ()


def _no_schedules(_config: Any, _section: Any) -> Sequence[ScheduledJob]:
    return ()


def _no_secrets_env(_config: Any, _section: Any) -> SecretsEnvFile | None:
    return None


def _no_sinks(_config: Any, _section: Any) -> Mapping[str, Any]:
    return {}


def _no_alerts(_section: Any) -> Sequence[AlertRule]:
    return ()


def _no_contracts(_config: Any, _section: Any) -> Sequence[ContractUse]:
    return ()


def load_entry(target: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class DaemonManifest:
    """Everything the app asks of a daemon without importing its runtime code.

    ``daemon`` is the ``"module:Class"`` of its Daemon subclass, imported only by ``fleet
    run``. ``commands`` maps ``fleet`` subcommand names to ``"module:click_group"`` (imported
    only when that subcommand runs).
    The callables take the daemon's own section (typed ``Any`` here: each manifest knows its
    section's type) and must be pure.
    """

    name: str
    section: type[DaemonSection]
    daemon: str
    description: str = ""
    refuse: Callable[[Any, Role], str | None] = _never_refuses
    metrics: tuple[MetricSpec, ...] = ()
    alerts: Callable[[Any], Sequence[AlertRule]] = _no_alerts
    writes: Callable[[FleetConfig, Any], Sequence[WrittenDb]] = _writes_nothing
    unit_profile: Callable[[FleetConfig, Any], UnitProfile] = _default_profile
    companions: Callable[[FleetConfig, Path], Sequence[CompanionService]] = _no_companions
    #: fleet commands run on a calendar where this daemon runs (enabled, role allowed)
    schedules: Callable[[FleetConfig, Any], Sequence[ScheduledJob]] = _no_schedules
    #: the secrets environment file this daemon's service loads (None: it gets none)
    secrets_env: Callable[[FleetConfig, Any], SecretsEnvFile | None] = _no_secrets_env
    #: delivery channels (``Message.sink`` name -> ``shared.notify`` Sink) this daemon's
    #: settings define; every outbox sender on the host gets them, enabled or not
    sinks: Callable[[FleetConfig, Any], Mapping[str, Any]] = _no_sinks
    #: the shared tables (other tools' schemas) this daemon uses on this host, with the
    #: contract it needs of each; ``fleet db check`` reads them
    contracts: Callable[[FleetConfig, Any], Sequence[ContractUse]] = _no_contracts
    commands: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def section_name(self) -> str:
        """The config table: the name with underscores (``[claim_sweeper]``)."""
        return self.name.replace("-", "_")

    def refuse_reason(self, section: Any, role: Role | str) -> str | None:
        """Why this daemon must not start with ``role`` (fencing), or None."""
        return self.refuse(section, Role(role))

    def fenced(self, section: Any, role: Role | str) -> bool:
        """Does role fencing keep this daemon off a host of ``role`` (restore-loop on a
        primary, email-reactor on a standby)? A daemon that refuses under both roles has a
        config problem, not a fence: it stays expected, and shows as stale."""
        role = Role(role)
        if self.refuse(section, role) is None:
            return False
        return self.refuse(section, role.other) is None

    def load_daemon(self) -> Any:
        """The Daemon subclass (imports the daemon's runtime code)."""
        return load_entry(self.daemon)


def fenced_off(
    manifests: Sequence[DaemonManifest], config: FleetConfig, role: Role
) -> dict[str, str]:
    """Daemon name -> why it must not start on a host of ``role``, for each of ``manifests``
    whose role rule refuses it there. The one fencing decision: ``fleet run --all`` skips these
    daemons and ``fleet check-config`` lists them."""
    fenced: dict[str, str] = {}
    for manifest in manifests:
        reason = manifest.refuse_reason(config.daemon_section(manifest.section_name), role)
        if reason is not None:
            fenced[manifest.name] = reason
    return fenced

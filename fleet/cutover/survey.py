"""``survey``: everything on this host that stands between it and running the fleet, found by
reading files (LaunchAgent plists, systemd units, ops-watchdog.json, the old litestream.yml via
``fleet litestream lint``, the secrets files, the Slack token) and probing the fleet's ports.
``conflicts`` turns a Survey into the list ``fleet cutover check`` prints, each with its fix
and whether ``fleet cutover apply`` makes that fix.

A legacy job is a conflict only where the fleet runs its replacement (the inbox watcher on the
primary, the restore loop on the standby); elsewhere it is left alone and noted. Nothing here
changes a file, starts or stops a job, or shows a secret's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fleet.cutover.host import DISABLED_DIR, Host
from fleet.cutover.legacy import (
    LEGACY_JOBS,
    LegacyJob,
    LegacyService,
    Manager,
    read_plist,
    read_unit,
)
from fleet.cutover.litestream import LintResult, config_args, lint_old_config, missing_configs
from fleet.cutover.ports import FleetPort, fleet_ports, held_by_fleet, port_problem
from fleet.cutover.runner import CommandRunner, shown
from fleet.cutover.secrets import (
    EnvFileState,
    SlackTokenState,
    env_file_states,
    slack_auth_test,
    slack_token_state,
)
from fleet.cutover.watchdog import WatchdogFile, legacy_labels_in, read_watchdog

__all__ = ["Conflict", "Survey", "conflicts", "generate_argv", "survey"]


@dataclass(frozen=True)
class Conflict:
    kind: str  # legacy-job, port, ops-watchdog, litestream-config, secrets-file, slack-token
    subject: str
    problem: str
    fix: str
    apply_fixes: bool

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "problem": self.problem,
            "fix": self.fix,
            "apply_fixes": self.apply_fixes,
        }


@dataclass
class Survey:
    host: Host
    services: list[str]
    legacy: list[LegacyService] = field(default_factory=list)  # replaced here
    kept: list[LegacyService] = field(default_factory=list)  # not replaced on this host
    warnings: list[str] = field(default_factory=list)
    held_ports: list[tuple[FleetPort, str]] = field(default_factory=list)
    watchdog: WatchdogFile | None = None
    watchdog_legacy: list[str] = field(default_factory=list)
    litestream: list[LintResult] = field(default_factory=list)
    missing_configs: list[Path] = field(default_factory=list)  # the fleet's litestream YAML
    env_files: list[EnvFileState] = field(default_factory=list)
    # variable -> (value, the legacy file it came from); values are never printed
    env_sources: dict[str, tuple[str, Path]] = field(default_factory=dict, repr=False)
    slack: SlackTokenState = field(default_factory=SlackTokenState)
    slack_online: str | None = None

    def replacements(self, job: LegacyJob) -> list[str]:
        return job.replacements(self.services)

    def label_replacements(self) -> dict[str, list[str]]:
        """Legacy label or unit name -> the fleet's labels (launchd) or units (systemd)
        replacing it, for the jobs replaced here."""
        out: dict[str, list[str]] = {}
        for job in LEGACY_JOBS:
            fleet = self.host.fleet_names(self.replacements(job))
            if not fleet:
                continue
            found = [s.name for s in self.legacy if s.job is job]
            for label in (*job.labels, *job.units, *found):
                out[label] = fleet
        return out

    @property
    def watchdog_path(self) -> Path:
        return self.host.legacy_config_dir / "ops-watchdog.json"


def _scan(host: Host) -> tuple[list[LegacyService], list[str]]:
    found: list[LegacyService] = []
    warnings: list[str] = []
    places: list[tuple[Path, Manager, tuple[str, ...]]]
    if host.target == "launchd":
        places = [(host.launch_agents, "launchd", ("*.plist",))]
    else:
        places = [
            (host.user_unit_dir, "systemd-user", ("*.service", "*.timer")),
            (host.system_unit_dir, "systemd-system", ("*.service", "*.timer")),
        ]
    for directory, manager, patterns in places:
        if not directory.is_dir():
            continue
        paths = sorted(p for pattern in patterns for p in directory.glob(pattern) if p.is_file())
        for path in paths:
            item = read_plist(path) if manager == "launchd" else read_unit(path, manager)
            if isinstance(item, str):
                warnings.append(item)
            elif item is not None:
                found.append(item)
    return found, warnings


def _old_litestream_configs(s: Survey) -> list[Path]:
    """The old replicate config(s): ~/system/config/litestream.yml and any ``-config`` file a
    legacy litestream job replaced here names."""
    paths = [s.host.legacy_config_dir / "litestream.yml"]
    for svc in s.legacy:
        if svc.job.name == "litestream":
            paths += config_args(svc.argv)
    return [p for p in dict.fromkeys(paths) if p.is_file()]


def survey(host: Host, runner: CommandRunner, *, online: bool = False) -> Survey:
    specs = host.services()
    s = Survey(host, [spec.name for spec in specs])
    found, s.warnings = _scan(host)
    for svc in found:
        (s.legacy if s.replacements(svc.job) else s.kept).append(svc)
    for port in fleet_ports(host.config, host.manifests, host.role):
        why = port_problem(port.address, port.port)
        if why is not None and not held_by_fleet(host.config, port.daemon):
            s.held_ports.append((port, why))
    s.watchdog = read_watchdog(s.watchdog_path)
    if s.watchdog.data is not None:
        s.watchdog_legacy = legacy_labels_in(s.watchdog.data, list(s.label_replacements()))
    if any(s.replacements(job) for job in LEGACY_JOBS if job.name == "litestream"):
        s.litestream = [lint_old_config(runner, p) for p in _old_litestream_configs(s)]
    restore = host.config.daemon_section("restore_loop") if "restore-loop" in s.services else None
    s.missing_configs = missing_configs(specs, getattr(restore, "config_path", None))
    s.env_files = env_file_states(host.config, host.manifests, specs)
    for svc in [*s.legacy, *s.kept]:
        for name, value in svc.environment.items():
            s.env_sources.setdefault(name, (value, svc.path))
    s.slack = slack_token_state(host.config)
    if online and not s.slack.problems:
        s.slack_online = slack_auth_test(host.config)
    return s


def _legacy_fix(s: Survey, svc: LegacyService) -> str:
    disabled = svc.path.parent / DISABLED_DIR
    if svc.manager == "launchd":
        return f"launchctl bootout {s.host.domain} {svc.path}; then move it into {disabled}/"
    sc = "systemctl --user" if svc.manager == "systemd-user" else "systemctl"
    return f"{sc} disable --now {svc.name}; then move it into {disabled}/ and daemon-reload"


def _port_fix(s: Survey, port: FleetPort, why: str) -> str:
    if not why.startswith("another process"):
        return (
            f"the daemon could not bind {port.address}:{port.port} either: check the address "
            f"({port.key.removesuffix('_port')}_bind or [fleet] bind) and the port"
        )
    fix = f"stop the process holding it (lsof -nP -iTCP:{port.port} -sTCP:LISTEN)"
    likely = [svc for svc in s.legacy if port.daemon in s.replacements(svc.job)]
    if likely:
        fix += f"; likely the legacy {likely[0].name}: {_legacy_fix(s, likely[0])}"
    return fix + ". `cutover apply` refuses to start while it is held"


def _env_conflicts(s: Survey, state: EnvFileState) -> list[Conflict]:
    who = ", ".join(state.services)
    subject = str(state.path)
    out: list[Conflict] = []
    if state.unreadable or state.bad_lines:
        why = state.unreadable or "; ".join(state.bad_lines)
        out.append(
            Conflict("secrets-file", subject, f"unusable: {why}", "repair it by hand", False)
        )
        return out
    if state.owner:
        out.append(
            Conflict(
                "secrets-file",
                subject,
                f"owned by {state.owner}, not by the user the services run as",
                f"chown it to that user and chmod 600 {state.path}",
                False,
            )
        )
    if state.mode is not None:
        out.append(
            Conflict(
                "secrets-file",
                subject,
                f"mode {state.mode:04o} lets group/others read the secrets {who} load",
                f"chmod 600 {state.path} (apply does it)",
                True,
            )
        )
    missing = state.missing
    if missing:
        unknown = [v for v in missing if v not in s.env_sources]
        what = "missing" if not state.exists else f"lacks {', '.join(missing)}"
        problem = f"{what}: {who} need {', '.join(missing)} (the litestream YAML's ${{VAR}}s)"
        if unknown:
            fix = (
                f"add {', '.join(f'{v}=...' for v in unknown)} to {state.path} (mode 0600); "
                "no legacy job defines them"
            )
        else:
            sources = sorted({str(s.env_sources[v][1]) for v in missing})
            fix = f"apply copies them from {', '.join(sources)} into it (mode 0600)"
        out.append(Conflict("secrets-file", subject, problem, fix, not unknown))
    return out


def generate_argv(s: Survey, path: Path) -> list[str] | None:
    """The ``fleet litestream config`` command that writes ``path``, if one does."""
    section = s.host.config.daemon_section("restore_loop")
    tables = getattr(section, "databases_file", None)
    if not isinstance(tables, Path) or not tables.is_file():
        return None
    role = "standby" if path.name == "litestream-restore.yml" else "primary"
    if role == "standby" and "restore-loop" not in s.services:
        return None
    argv = ["fleet", "litestream", "config", "--role", role, "--out", str(path.parent)]
    return argv + (["--config", str(s.host.config_file)] if s.host.config_file else [])


def conflicts(s: Survey) -> list[Conflict]:
    """What stands between this host and the fleet, in the order apply deals with it."""
    out: list[Conflict] = []
    for state in s.env_files:
        out += _env_conflicts(s, state)
    for problem in s.slack.problems:
        out.append(
            Conflict(
                "slack-token",
                "[slack] token",
                problem,
                "put a bot token (xoxb-...) in [slack] token_file (mode 0600)",
                False,
            )
        )
    if s.slack.token_mode is not None and s.slack.token_file is not None:
        out.append(
            Conflict(
                "slack-token",
                str(s.slack.token_file),
                f"token file mode {s.slack.token_mode:04o} lets group/others read it",
                f"chmod 600 {s.slack.token_file} (apply does it)",
                True,
            )
        )
    if s.slack_online:
        out.append(Conflict("slack-token", "[slack] token", s.slack_online, "fix the token", False))
    for port, why in s.held_ports:
        out.append(
            Conflict(
                "port",
                f"{port.address}:{port.port}",
                f"{why}; the fleet's {port.daemon} listens there ({port.key})",
                _port_fix(s, port, why),
                False,
            )
        )
    for svc in s.legacy:
        problem = f"{svc.job.what}; replaced by the fleet's {', '.join(s.replacements(svc.job))}"
        if svc.unreadable:
            problem += f" (the file is unusable: {svc.unreadable})"
        out.append(Conflict("legacy-job", svc.shown, problem, _legacy_fix(s, svc), True))
    for lint in s.litestream:
        if lint.error:
            out.append(
                Conflict("litestream-config", str(lint.path), lint.error, "lint it by hand", False)
            )
        elif lint.findings:
            listed = "; ".join(lint.findings[:3]) + (
                f" (+{len(lint.findings) - 3} more)" if len(lint.findings) > 3 else ""
            )
            out.append(
                Conflict(
                    "litestream-config",
                    str(lint.path),
                    f"the old replicate config: {len(lint.findings)} lint finding(s): {listed}",
                    "the fleet's litestream services run configs generated from the tier table "
                    "(fleet litestream config --role primary --out DIR); apply moves this one "
                    f"into {lint.path.parent / DISABLED_DIR}/",
                    True,
                )
            )
    for path in s.missing_configs:
        argv = generate_argv(s, path)
        out.append(
            Conflict(
                "litestream-config",
                str(path),
                "missing: the fleet's litestream processes will read it",
                f"{shown(argv)} (apply does it)" if argv else "write it by hand",
                argv is not None,
            )
        )
    wd = s.watchdog
    if wd is not None and wd.problem:
        out.append(
            Conflict(
                "ops-watchdog",
                str(wd.path),
                wd.problem,
                "repair the JSON by hand (apply will not rewrite a file it cannot read)",
                False,
            )
        )
    replacements = s.label_replacements()
    for label in s.watchdog_legacy:
        out.append(
            Conflict(
                "ops-watchdog",
                f"{s.watchdog_path} critical_services",
                f"lists {label}: the watchdog would restart the old job beside the fleet's",
                f"replace it with {', '.join(replacements[label])} (apply does it, keeping "
                f"{s.watchdog_path}.pre-cutover)",
                True,
            )
        )
    return out

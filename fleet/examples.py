"""The generated files committed to the repository, rendered from config/fleet.example.toml for
documented example hosts (so they do not depend on who runs the generator), and the one drift
check that keeps them equal to the generators: units/, launchdaemons/ and launchagents/
(``fleet units example``), config/prometheus/, config/alertmanager/ and config/grafana/
(``fleet observability example``).

An installed fleet has no checkout: there the example config is the one the models render
(``fleet config example``, which a test keeps equal to the committed file), so the same
commands write the same files into any directory.

Loads the whole config (every registered daemon's section) with HOME pinned and no FLEET_*
overrides from the caller's shell. Writes only with ``fix``, only generated files, and never
removes a file the generator did not write (README.md, an operator's own unit).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleet.alerting import DAEMON_ANNOUNCED
from fleet.config import load_config
from fleet.install import write_if_changed
from fleet.registry import RegistryLine, manifests
from shared.config import FleetConfig
from shared.observability import (
    HostTarget,
    render_alertmanager_config,
    render_grafana,
    render_prometheus_config,
    render_rules,
)
from shared.roles import Role
from shared.units import InstallLayout, Mode, Target, generate, is_generated_file

__all__ = [
    "EXAMPLE_HOSTS",
    "EXAMPLE_LAYOUTS",
    "PACK_EXAMPLES",
    "UNIT_EXAMPLES",
    "ExampleLayout",
    "ExampleSet",
    "example_config_file",
    "example_drift",
    "load_example_config",
    "pack_examples",
    "pinned_environment",
    "unit_examples",
]


@dataclass(frozen=True)
class ExampleLayout:
    """A documented host the committed example files describe: its home, venv, account (and
    its group, which LaunchDaemons name) and config file, and the repository directory its
    files live in."""

    target: Target
    mode: Mode
    home: Path
    prefix: Path
    user: str
    config_file: Path
    out_dir: str
    group: str | None = None

    def layout(self) -> InstallLayout:
        system = self.mode == "system"
        return InstallLayout(
            mode=self.mode,
            prefix=self.prefix,
            config_file=self.config_file,
            user=self.user if system else None,
            home=self.home,
            group=self.group if system else None,
        )


EXAMPLE_LAYOUTS: tuple[ExampleLayout, ...] = (
    ExampleLayout(
        target="systemd",
        mode="system",
        home=Path("/home/alai"),
        prefix=Path("/opt/alai-fleet/current"),
        user="alai",
        config_file=Path("/etc/alai-fleet/fleet.toml"),
        out_dir="units",
    ),
    ExampleLayout(
        target="launchd",
        mode="system",
        home=Path("/Users/alai"),
        prefix=Path("/opt/alai-fleet/venv"),
        user="alai",
        config_file=Path("/etc/alai-fleet/fleet.toml"),
        out_dir="launchdaemons",
        group="staff",  # a macOS user account's primary group
    ),
    ExampleLayout(
        target="launchd",
        mode="user",
        home=Path("/Users/alai"),
        prefix=Path("/opt/alai-fleet/current"),
        user="alai",
        config_file=Path("/Users/alai/.config/alai-fleet/fleet.toml"),
        out_dir="launchagents",
    ),
)

EXAMPLE_HOSTS: tuple[HostTarget, ...] = (
    HostTarget(name="anvil", address="anvil", role=Role.PRIMARY),
    HostTarget(name="forge", address="forge", role=Role.STANDBY),
)
_PACK_HOME = Path("/home/alai")


@contextlib.contextmanager
def pinned_environment(home: Path) -> Iterator[None]:
    """Load a config as the example host would: HOME pinned, no FLEET_* overrides from the
    caller's shell. Restores the environment afterwards."""
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith("FLEET_"):
                del os.environ[key]
        os.environ["HOME"] = str(home)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def load_example_config(
    example_config: Path, home: Path, lines: tuple[RegistryLine, ...] | None = None
) -> FleetConfig:
    with pinned_environment(home):
        return load_config(example_config, lines)


def unit_examples(
    example_config: Path, lines: tuple[RegistryLine, ...] | None = None
) -> dict[str, bytes]:
    """Repository-relative path -> content for units/, launchdaemons/ and launchagents/."""
    daemons = manifests(lines)
    files: dict[str, bytes] = {}
    for ex in EXAMPLE_LAYOUTS:
        config = load_example_config(example_config, ex.home, lines)
        for name, data in generate(config, daemons, ex.target, ex.layout()).files.items():
            files[f"{ex.out_dir}/{name}"] = data
    return files


def pack_examples(
    example_config: Path, lines: tuple[RegistryLine, ...] | None = None
) -> dict[str, bytes]:
    """Repository-relative path -> content for config/prometheus/, config/alertmanager/ and
    config/grafana/, for the example hosts anvil (primary) and forge (standby)."""
    daemons = manifests(lines)
    config = load_example_config(example_config, _PACK_HOME, lines)
    files = {
        "config/prometheus/prometheus.yml": render_prometheus_config(
            config, daemons, EXAMPLE_HOSTS
        ),
        "config/prometheus/rules/fleet.rules.yml": render_rules(config, daemons),
        "config/alertmanager/alertmanager.yml": render_alertmanager_config(
            config, quiet_alerts=DAEMON_ANNOUNCED
        ),
    }
    grafana = render_grafana(config, daemons)
    files.update({f"config/grafana/{rel}": text for rel, text in grafana.items()})
    return {rel: text.encode() for rel, text in files.items()}


@dataclass(frozen=True)
class ExampleSet:
    """One group of committed generated files: what renders them from the example config,
    the command that regenerates them, and the directories where a generated file the
    renderer no longer produces is stale (removed by a fix)."""

    what: str
    command: str
    render: Callable[[Path], Mapping[str, bytes]]
    stale_dirs: tuple[str, ...] = ()


UNIT_EXAMPLES = ExampleSet(
    "example units and plists",
    "fleet units example",
    unit_examples,
    tuple(ex.out_dir for ex in EXAMPLE_LAYOUTS),
)
PACK_EXAMPLES = ExampleSet(
    "prometheus, alertmanager and grafana files", "fleet observability example", pack_examples
)


@contextlib.contextmanager
def example_config_file(repo: Path) -> Iterator[Path]:
    """``repo``'s config/fleet.example.toml; when ``repo`` has none (an installed fleet, run
    outside a checkout), the example the models render, in a temporary file."""
    committed = repo / "config" / "fleet.example.toml"
    if committed.is_file():
        yield committed
        return
    from fleet.config import example_toml

    with tempfile.TemporaryDirectory(prefix="fleet-example-") as tmp:
        rendered = Path(tmp) / "fleet.example.toml"
        rendered.write_text(example_toml(), encoding="utf-8")
        yield rendered


def example_drift(repo: Path, examples: ExampleSet, *, fix: bool) -> list[str]:
    """``"<path>: differs|missing|no longer generated"`` for each committed file that is not
    what ``examples`` renders from ``repo``'s config/fleet.example.toml (or, without one, the
    packaged example); with ``fix``, also rewrite or remove it. Raises ConfigError when the
    example config is invalid."""
    with example_config_file(repo) as config_file:
        wanted = examples.render(config_file)
    drift: list[str] = []
    for rel, data in sorted(wanted.items()):
        path = repo / rel
        current = path.read_bytes() if path.is_file() else None
        if current != data:
            drift.append(f"{rel}: {'differs' if current is not None else 'missing'}")
            if fix:
                write_if_changed(path, data)
    for out_dir in examples.stale_dirs:
        for path in sorted((repo / out_dir).glob("*")):
            rel = f"{out_dir}/{path.name}"
            if rel not in wanted and is_generated_file(path):
                drift.append(f"{rel}: no longer generated")
                if fix:
                    path.unlink()
    return drift

"""Helpers for the unit/plist tests (tests/system/test_units*.py): configs enabling exactly
the daemons a test names, generation against the registered manifests, and readers for what
systemd makes of a unit (`directives`, `systemd-analyze verify` and `security`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.config import load_config
from fleet.registry import manifests
from shared.config import FleetConfig
from shared.roles import Role
from shared.units import GeneratedSet, InstallLayout, Target, generate

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def write_config(
    path: Path, root: Path, body: str = "", enable: str = "claim_sweeper", fleet: str = ""
) -> Path:
    """A config enabling exactly the sections in ``enable`` ("all" for every daemon); ``fleet``
    adds lines to [fleet], ``body`` adds tables (daemon tables are merged)."""
    registered = manifests()
    if enable == "all":
        wanted = {m.name for m in registered}
    else:
        wanted = {s.replace("_", "-") for s in enable.split()}
    lines = [f'[fleet]\nroot = "{root}"\nhost = "testhost"\n{fleet}\n']
    tables = parse_toml_tables(body)
    for m in registered:
        extra = tables.pop(m.section_name, "")
        lines.append(
            f"[{m.section_name}]\nenabled = {'true' if m.name in wanted else 'false'}\n{extra}"
        )
    for name, text in tables.items():
        lines.append(f"[{name}]\n{text}")
    path.write_text("\n".join(lines))
    return path


def parse_toml_tables(body: str) -> dict[str, str]:
    """Split ``body`` into {table: its lines} so write_config can merge daemon tables."""
    tables: dict[str, str] = {}
    current = None
    for line in body.strip().splitlines():
        m = re.match(r"^\[([a-z_]+)\]$", line.strip())
        if m:
            current = m.group(1)
            tables.setdefault(current, "")
        elif current is not None:
            tables[current] += line + "\n"
    return tables


def load(path: Path, monkeypatch: pytest.MonkeyPatch) -> FleetConfig:
    """The whole config (every registered daemon's section), without FLEET_* from the shell."""
    for key in list(os.environ):
        if key.startswith("FLEET_"):
            monkeypatch.delenv(key)
    return load_config(path)


def layout(
    mode: str = "system", config_file: Path | None = None, prefix: Path = VENV
) -> InstallLayout:
    return InstallLayout(
        mode=mode,  # type: ignore[arg-type]
        prefix=prefix,
        config_file=config_file,
        user="alai" if mode == "system" else None,
        home=Path("/home/alai"),
    )


def gen(config: FleetConfig, target: Target, lay: InstallLayout) -> GeneratedSet:
    """``generate`` for every registered daemon."""
    return generate(config, manifests(), target, lay)


def directives(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> every value (units repeat keys such as SystemCallFilter)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def runnable(config: FleetConfig, role: Role) -> set[str]:
    """Daemons enabled in ``config`` whose manifest accepts ``role`` (asked, not assumed)."""
    names = set()
    for m in manifests():
        section = config.daemon_section(m.section_name)
        if section.enabled and m.refuse_reason(section, role) is None:
            names.add(m.name)
    return names


def verify(paths: list[Path]) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 0


def exposure(path: Path) -> float:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1))


def write_all(files: dict[str, bytes], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths

"""Helpers for the Prometheus tests (tests/system/test_prometheus*.py): the committed pack's
paths, promtool (skipping when the Debian package prometheus is missing), and the example
config loaded without FLEET_* overrides from the shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet.config import load_config
from shared.config import FleetConfig

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "config" / "prometheus"
RULES = PROM_DIR / "rules" / "fleet.rules.yml"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not installed (Debian package prometheus)")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("promtool"), *args], capture_output=True, text=True, input=stdin, timeout=120
    )


def example_config() -> FleetConfig:
    """config/fleet.example.toml with every registered daemon's section."""
    saved = dict(os.environ)
    try:
        for key in list(os.environ):
            if key.startswith("FLEET_"):
                del os.environ[key]
        return load_config(REPO / "config" / "fleet.example.toml")
    finally:
        os.environ.clear()
        os.environ.update(saved)

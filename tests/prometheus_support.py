"""Helpers for the Prometheus tests (tests/system/test_prometheus*.py): the committed pack's
paths, promtool, amtool and the alertmanager binary (skipping when the Debian packages prometheus
or prometheus-alertmanager are missing), a real server started on 127.0.0.1 and waited for,
and the example config loaded without FLEET_* overrides from the shell."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
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


def alertmanager_binary() -> str:
    """Debian installs the server as prometheus-alertmanager, upstream as alertmanager."""
    for name in ("alertmanager", "prometheus-alertmanager"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip("alertmanager not installed (Debian package prometheus-alertmanager)")


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("amtool")
    if path is None:
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening yet
        return None


@contextlib.contextmanager
def running_server(argv: list[str], base: str, cwd: Path, what: str) -> Iterator[str]:
    """Start a Prometheus-style server (``argv``), wait (bounded) until ``base``/-/ready
    answers 200, yield ``base``; SIGTERM it afterwards (SIGKILL if it does not stop)."""
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while _status(f"{base}/-/ready") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _out, err = proc.communicate()
                pytest.fail(f"{what} did not become ready: {err[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

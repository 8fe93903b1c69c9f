"""Helpers the heartbeat tests share (no tests here): a config file writer, `fleet run` process
control, outbox and metrics readers."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fleet.registry import by_name
from tests.conftest import FLEET_BIN, free_port, http_get


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(
    path: Path,
    *,
    heartbeat: Mapping[str, Any],
    peers: Iterable[Mapping[str, Any]] = (),
    pings: Iterable[Mapping[str, Any]] = (),
    extra: str = "",
) -> Path:
    lines = ["[heartbeat]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in heartbeat.items()]
    for peer in peers:
        lines.append("[[heartbeat.peers]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in peer.items()]
    for ping in pings:
        lines.append("[[heartbeat.pings]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in ping.items()]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    path.chmod(0o600)  # ping URLs are secrets: a config holding one must be private
    return path


def only_enabled(env: Mapping[str, str], *names: str) -> dict[str, str]:
    """``env`` with every daemon disabled except ``names`` (other daemons' defaults change
    as they are built; these tests must not depend on them)."""
    out = dict(env)
    for spec in by_name().values():
        on = spec.name in names
        out[f"FLEET_{spec.section_name.upper()}__ENABLED"] = "true" if on else "false"
    return out


class HeartbeatProcess:
    """`fleet run heartbeat` with its health and metrics ports picked at run time."""

    def __init__(self, env: Mapping[str, str], cwd: Path, config: Path) -> None:
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **env,
            "FLEET_CONFIG": str(config),
            "FLEET_HEARTBEAT__HEALTH_PORT": str(self.health_port),
            "FLEET_HEARTBEAT__METRICS_PORT": str(self.metrics_port),
        }
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.output = ""

    def start(self) -> HeartbeatProcess:
        self.proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "heartbeat"],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def health(self, path: str = "/health") -> tuple[int, dict[str, Any] | None]:
        try:
            status, body = http_get(self.url(path), timeout=5)
        except OSError:
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    def metrics(self) -> str:
        try:
            return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)[1]
        except OSError:
            return ""

    def stop(self) -> str:
        proc = self.proc
        if proc is None:
            return self.output
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        self.output += out or ""
        self.proc = None
        return self.output

    def __enter__(self) -> HeartbeatProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def outbox_rows(root: Path) -> list[dict[str, str]]:
    """Every message the daemon handed to the outbox, in order."""
    db = root / "state/outbox.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT dedup_key, channel, text FROM outbox ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [{"key": r[0], "channel": r[1], "text": r[2]} for r in rows]


def rows_of(root: Path, kind: str) -> list[dict[str, str]]:
    return [r for r in outbox_rows(root) if r["key"].endswith(":" + kind)]


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_part = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_part for k, v in labels.items()):
            return float(value)
    return None

"""`fleet run ollama-health` and `fleet ollama ...` as real processes against fake Ollama servers
on 127.0.0.1: --once on a fresh machine, --once with the seed's tier-routing file, the long-running
daemon (READY, /metrics linted by promtool, transitions alerted once through the outbox,
SIGTERM), and the route/status commands, including a stale status file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemons.ollama_health.policy import format_iso
from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.system


def write_tier_file(path: Path, anvil: str, forge: str, timeout_ms: int = 500) -> None:
    path.write_text(
        json.dumps(
            {
                "defaultTier": "2",  # the routers' keys: ignored
                "ollamaHosts": {
                    "anvil": {
                        "url": anvil,
                        "health_path": "/api/tags",
                        "health_timeout_ms": timeout_ms,
                        "role": "primary-infra",
                    },
                    "forge": {
                        "url": forge,
                        "health_path": "/api/tags",
                        "health_timeout_ms": timeout_ms,
                        "role": "primary-compute",
                    },
                },
                "failoverRules": {
                    "anvil-down": {
                        "redirect_anvil_tiers": ["1", "2", "2t", "2cHQ"],
                        "to_forge_models": {"qwen2.5-coder:32b": "qwen2.5-coder:32b-instruct-q8_0"},
                    },
                    "forge-down": {
                        "redirect_forge_tiers": ["2c", "2cf", "2d", "3", "3s", "3r"],
                        "to_claude": True,
                    },
                },
            }
        )
    )


def env_for(fleet_env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    tier = tmp_path / "tier-routing.json"
    return {
        **fleet_env,
        "FLEET_OLLAMA_HEALTH__TIER_ROUTING_FILE": str(tier),
        "FLEET_OLLAMA_HEALTH__STATUS_FILE": str(tmp_path / "tmp" / "ollama-health.json"),
        "FLEET_OLLAMA_HEALTH__OVERRIDE_FILE": str(tmp_path / "tmp" / "override.json"),
        **extra,
    }


def outbox_rows(root: Path) -> list[tuple[str, str, str]]:
    db = root / "state" / "outbox.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT channel, dedup_key, text FROM outbox ORDER BY id").fetchall()


def test_once_on_a_fresh_machine(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    """Embedded defaults, nothing else running: one cycle, exit 0, the state reported."""
    res = run_fleet(["run", "ollama-health", "--once"], fleet_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    status = json.loads((fleet_root / "state" / "ollama-health.json").read_text())
    assert isinstance(status["anvil"]["healthy"], bool)
    assert status["_config"]["ollamaHosts"]["anvil"]["url"] == "http://127.0.0.1:11434"
    if not status["anvil"]["healthy"]:
        # No history: the alert waits for failure_threshold (2), counted across runs.
        assert outbox_rows(fleet_root) == []
        res = run_fleet(["run", "ollama-health", "--once"], fleet_env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        rows = outbox_rows(fleet_root)
        assert len(rows) == 1 and rows[0][0] == "#ops" and "anvil" in rows[0][2]
    assert (fleet_root / "state" / "heartbeats" / "ollama-health.json").exists()


def test_once_with_tier_routing_file_and_dry_run(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    with FakeOllama() as anvil:
        write_tier_file(tmp_path / "tier-routing.json", anvil.base_url, "http://127.0.0.1:9")
        env = env_for(fleet_env, tmp_path)
        status_path = tmp_path / "tmp" / "ollama-health.json"
        dry_env = env | {"FLEET_OLLAMA_HEALTH__FAILURE_THRESHOLD": "1"}
        dry = run_fleet(["run", "ollama-health", "--once", "--dry-run"], dry_env, tmp_path)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "would write status file" in dry.stdout and "would notify" in dry.stdout
        assert not status_path.exists() and outbox_rows(fleet_root) == []
        memory_path = fleet_root / "state" / "ollama-health-memory.json"
        assert not memory_path.exists()
        # Two runs: the memory file carries forge's first failure to the second, which alerts.
        for _ in range(2):
            res = run_fleet(["run", "ollama-health", "--once"], env, tmp_path)
            assert res.returncode == 0, res.stdout + res.stderr
    assert memory_path.stat().st_mode & 0o777 == 0o600
    status = json.loads(status_path.read_text())
    assert status_path.stat().st_mode & 0o777 == 0o600
    assert status["anvil"]["healthy"] is True and status["anvil"]["models"] == anvil.models
    assert status["forge"]["healthy"] is False
    assert status["forge"]["error"] == "connection refused"
    assert status["_routing"]["to_claude"] == ["2c", "2cf", "2d", "3", "3s", "3r"]
    keys = [r[1] for r in outbox_rows(fleet_root)]
    assert len(keys) == 2 and keys[0].startswith("ollama-down:forge:")
    assert keys[1].startswith("ollama-rule-on:forge-down:")
    logs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert all(rec["host"] == "testhost" for rec in logs)
    assert any(rec["event"] == "host down" and rec["llm_host"] == "forge" for rec in logs)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        base, _, rest = head.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return float(value)
    return None


def test_daemon_alerts_each_transition_once(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    with FakeOllama() as anvil, FakeOllama() as forge:
        write_tier_file(tmp_path / "tier-routing.json", anvil.base_url, forge.base_url, 300)
        env = env_for(
            fleet_env,
            tmp_path,
            NOTIFY_SOCKET=notify_socket.path,
            WATCHDOG_USEC="1000000",
            FLEET_OLLAMA_HEALTH__METRICS_PORT=str(port),
            FLEET_OLLAMA_HEALTH__INTERVAL_S="0.2",
            FLEET_OLLAMA_HEALTH__CYCLE_TIMEOUT_S="5",
        )
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "ollama-health"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert notify_socket.wait_for("READY=1", timeout=15), notify_socket.messages

            def metrics() -> str:
                return http_get(f"http://127.0.0.1:{port}/metrics")[1]

            def up(host: str) -> float | None:
                return metric_value(metrics(), "fleet_ollama_up", llm_host=host)

            assert wait_until(lambda: up("forge") == 1, timeout=15)
            forge.stop()
            assert wait_until(lambda: up("forge") == 0, timeout=15)
            rule = 'fleet_ollama_failover_active{rule="forge-down"} 1.0'
            assert wait_until(lambda: rule in metrics(), timeout=15)
            # Many cycles while down; then recovery.
            cycles = metric_value(metrics(), "fleet_cycles_total", outcome="ok") or 0
            assert wait_until(
                lambda: (
                    (metric_value(metrics(), "fleet_cycles_total", outcome="ok") or 0) >= cycles + 5
                ),
                timeout=15,
            )
            forge.start()
            assert wait_until(lambda: up("forge") == 1, timeout=15)
            body = metrics()
            assert (
                metric_value(body, "fleet_ollama_transitions_total", llm_host="forge", to="down")
                == 1
            )
            assert (
                metric_value(body, "fleet_ollama_transitions_total", llm_host="forge", to="up") == 1
            )
            assert metric_value(body, "fleet_ollama_models", llm_host="anvil") == 2
            assert "fleet_ollama_probe_duration_seconds_bucket" in body
            assert metric_value(body, "fleet_ollama_override_active") == 0
            status, health = http_get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and json.loads(health)["ok"] is True
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _err = proc.communicate()
                pytest.fail("daemon did not exit within 10 s of SIGTERM")
    assert proc.returncode == 0, out
    assert notify_socket.count("STOPPING=1") == 1
    kinds = [key.split(":")[0] for _ch, key, _text in outbox_rows(fleet_root)]
    assert kinds == ["ollama-down", "ollama-rule-on", "ollama-up", "ollama-rule-off"]
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing in CI: .ci/run must install the prometheus package")
        pytest.skip("promtool not installed (Debian package prometheus)")
    res = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr


def route_json(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, Any, str]:
    res = run_fleet(["ollama", "route", *args, "--json"], env, cwd)
    try:
        parsed = json.loads(res.stdout) if res.stdout.strip() else None
    except ValueError:
        parsed = None
    return res.returncode, parsed, res.stdout + res.stderr


def test_route_and_status_commands(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    with FakeOllama() as forge:
        write_tier_file(tmp_path / "tier-routing.json", "http://127.0.0.1:9", forge.base_url)
        env = env_for(fleet_env, tmp_path)
        status_path = tmp_path / "tmp" / "ollama-health.json"
        # No status file yet: the configured primary, saying so.
        code, chosen, out = route_json(env, tmp_path, "2", "--model", "qwen2.5-coder:32b")
        assert code == 0 and chosen["host"] == "anvil", out
        assert "no status file" in chosen["reason"]
        assert run_fleet(["ollama", "status"], env, tmp_path).returncode == 1
        assert run_fleet(["run", "ollama-health", "--once"], env, tmp_path).returncode == 0
    code, chosen, out = route_json(env, tmp_path, "2", "--model", "qwen2.5-coder:32b")
    assert code == 0, out
    assert chosen == {
        "host": "forge",
        "url": forge.base_url,
        "model": "qwen2.5-coder:32b-instruct-q8_0",
        "reason": "anvil-down: anvil unhealthy, tier 2 redirected to forge, "
        "model qwen2.5-coder:32b -> qwen2.5-coder:32b-instruct-q8_0",
    }
    res = run_fleet(["ollama", "route", "3s"], env, tmp_path)
    assert res.returncode == 0 and "host:   forge" in res.stdout
    code, error, out = route_json(env, tmp_path, "nope")
    assert code == 2 and "known tiers" in out  # not found (docs/cli.md)
    assert error["code"] == 2 and "known tiers" in error["error"]
    res = run_fleet(["ollama", "status"], env, tmp_path)
    assert res.returncode == 1  # anvil is down
    assert "anvil" in res.stdout and "connection refused" in res.stdout
    assert "tier 2 -> forge" in res.stdout
    res = run_fleet(["ollama", "status", "--json"], env, tmp_path)
    doc = json.loads(res.stdout)
    assert doc["stale"] is False and doc["hosts"]["anvil"]["healthy"] is False
    assert doc["routing"]["active_rules"] == ["anvil-down"]
    # Both down: a tier whose rule does not allow Claude is unavailable (exit 1).
    status = json.loads(status_path.read_text())
    status["forge"]["healthy"] = False
    status_path.write_text(json.dumps(status))
    code, chosen, out = route_json(env, tmp_path, "1")
    assert code == 1 and chosen["host"] is None and "unavailable" in chosen["reason"]
    code, chosen, _ = route_json(env, tmp_path, "2c")
    assert code == 0 and chosen["host"] == "claude" and chosen["url"] is None
    # Stale (older than 3 intervals): health unknown, the configured primary.
    status["_generated_at"] = format_iso(1_000_000_000)
    status_path.write_text(json.dumps(status))
    code, chosen, out = route_json(env, tmp_path, "1")
    assert code == 0 and chosen["host"] == "anvil" and "stale" in chosen["reason"], out
    assert chosen["url"] == "http://127.0.0.1:9"
    res = run_fleet(["ollama", "status"], env, tmp_path)
    assert res.returncode == 1 and "WARNING: older than 3 intervals" in res.stdout
    # A broken tier-routing file: the table the status file embeds is used, with a warning.
    (tmp_path / "tier-routing.json").write_text("{not json")
    res = run_fleet(["ollama", "route", "2c", "--json"], env, tmp_path)
    assert res.returncode == 0 and "warning: tier routing file" in res.stderr

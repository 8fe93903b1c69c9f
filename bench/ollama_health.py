"""ollama-health benchmark: 50 watched hosts, 10 of them accept-then-hang.

Prints (1) the wall time of a full daemon cycle (probes, thresholds, routing, atomic status
write, alerts into a real outbox) against the probe timeout, and against a sequential prober
over the same hosts measured in the same run; (2) the idle RSS of a real `fleet run
ollama-health` process watching those hosts, against an idle `fleet run claim-sweeper` started
the same way. Asserts nothing about timings. Everything lives in a temporary directory.

    .venv/bin/python bench/ollama_health.py            # 3 s timeout (the seed's), 3 cycles
    .venv/bin/python bench/ollama_health.py --quick    # 0.5 s timeout, 1 cycle
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from daemons.ollama_health.daemon import OllamaHealth  # noqa: E402
from daemons.ollama_health.probe import Prober  # noqa: E402
from daemons.ollama_health.table import table_from_section  # noqa: E402
from fleet.config import RootConfig as FleetConfig  # noqa: E402
from shared.metrics import DaemonMetrics  # noqa: E402
from shared.notify import Outbox  # noqa: E402
from shared.runtime import DaemonContext  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402

FLEET_BIN = Path(sys.executable).parent / "fleet"
HOSTS = 50
HANGING = 10


class NullLog:
    def _log(self, event: str, **kw: Any) -> None:
        return None

    debug = info = warning = error = _log


def start_fakes(cycles: int) -> list[FakeOllama]:
    fakes = [FakeOllama([f"model-{i}:8b", "qwen2.5-coder:32b"]).start() for i in range(HOSTS)]
    for fake in fakes[:HANGING]:
        fake.hang(times=cycles * 4 + 100)
    return fakes


def hosts_section(fakes: list[FakeOllama], timeout_ms: int) -> dict[str, Any]:
    return {
        f"h{i:02d}": {"url": f.base_url, "health_timeout_ms": timeout_ms}
        for i, f in enumerate(fakes)
    }


async def daemon_cycles(
    config: FleetConfig, cycles: int
) -> tuple[list[float], dict[str, Any] | None]:
    outbox = await Outbox(config.notify.outbox_db).open()
    ctx = DaemonContext(
        config=config,
        section=config.ollama_health,
        role="primary",
        log=NullLog(),
        metrics=DaemonMetrics("ollama-health", "0", registry=CollectorRegistry()),
        outbox=outbox,
    )
    daemon = OllamaHealth(ctx)
    await daemon.open()
    walls = []
    try:
        for _ in range(cycles):
            start = time.perf_counter()
            result = await daemon.cycle()
            walls.append(time.perf_counter() - start)
    finally:
        await daemon.close()
        await outbox.close()
    return walls, result.detail


async def sequential_cycle(config: FleetConfig) -> float:
    """The baseline: the same probes, one host after another (what a naive loop does)."""
    table = table_from_section(config.ollama_health)
    prober = Prober()
    try:
        start = time.perf_counter()
        for host in table.hosts.values():
            await prober.probe_host(host)
        return time.perf_counter() - start
    finally:
        await prober.close()


def rss_kb(pid: int) -> int | None:
    res = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    text = res.stdout.strip()
    return int(text) if text.isdigit() else None


def idle_rss(name: str, tmp: Path, toml: str, ready: Path, settle_s: float) -> int | None:
    """Start `fleet run NAME`, wait for its first cycle (``ready`` exists), let it idle,
    read its RSS, stop it."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "NOTIFY_SOCKET"))}
    env.update(HOME=str(tmp / "home"), FLEET_SLACK__BASE_URL="http://127.0.0.1:9/api/")
    proc = subprocess.Popen(
        [str(FLEET_BIN), "run", name, "--config", str(cfg)],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        if not ready.exists():
            return None
        time.sleep(settle_s)
        return rss_kb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.5 s timeout, one cycle")
    args = parser.parse_args()
    timeout_ms = 500 if args.quick else 3000
    cycles = 1 if args.quick else 3
    timeout_s = timeout_ms / 1000
    print(
        f"ollama-health bench ({'quick' if args.quick else 'full'}); python "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{HOSTS} hosts, {HANGING} accept-then-hang, probe timeout {timeout_s:g} s")
    with tempfile.TemporaryDirectory(prefix="bench-ollama-") as tmpdir:
        tmp = Path(tmpdir)
        fakes = start_fakes(cycles)
        try:
            hosts = hosts_section(fakes, timeout_ms)
            config = FleetConfig(
                fleet={"root": str(tmp / "root"), "host": "bench"},
                slack={"base_url": "http://127.0.0.1:9/api/"},
                ollama_health={"hosts": hosts, "interval_s": 15},
            )
            walls, detail = asyncio.run(daemon_cycles(config, cycles))
            sequential = asyncio.run(sequential_cycle(config))
            status = json.loads(config.ollama_health.status_file.read_text())
            down = sum(1 for k, v in status.items() if not k.startswith("_") and not v["healthy"])

            # Idle RSS: the daemon watching the same 50 hosts vs an idle claim-sweeper.
            root = tmp / "rss-root"
            host_tables = "".join(
                f'\n[ollama_health.hosts.{name}]\nurl = "{h["url"]}"\n'
                f"health_timeout_ms = {timeout_ms}\n"
                for name, h in hosts.items()
            )
            oh_status = tmp / "rss-ollama-health.json"
            oh_toml = (
                f'[fleet]\nroot = "{root}"\nhost = "bench"\n\n'
                f'[ollama_health]\nmetrics_port = 0\ninterval_s = 15\nstatus_file = "{oh_status}"\n'
                f"{host_tables}"
            )
            cs_toml = (
                f'[fleet]\nroot = "{root}"\nhost = "bench"\n\n[claim_sweeper]\nmetrics_port = 0\n'
            )
            settle = 1.0 if args.quick else 3.0
            rss_oh = idle_rss("ollama-health", tmp, oh_toml, oh_status, settle)
            rss_cs = idle_rss(
                "claim-sweeper", tmp, cs_toml, root / "state/heartbeats/claim-sweeper.json", settle
            )
        finally:
            for fake in fakes:
                fake.stop()
    median = statistics.median(walls)
    print()
    print("cycle wall time (full daemon cycle: probes + thresholds + routing + status write)")
    print(f"  per cycle:           {', '.join(f'{w:.3f} s' for w in walls)}")
    print(f"  median:              {median:.3f} s")
    print(f"  vs probe timeout:    {median / timeout_s:.3f}x  (target <= 1.15x)")
    print(f"  sequential prober:   {sequential:.3f} s  (same hosts, one after another)")
    print(f"  concurrent speed-up: {sequential / median:.1f}x faster than sequential")
    print(
        f"  hosts reported down: {down} of {HOSTS}  (detail: {len(detail['unhealthy'])} unhealthy)"
        if detail
        else f"  hosts reported down: {down}"
    )
    print()
    print("idle RSS (after the first cycle, between cycles)")
    if rss_oh is None or rss_cs is None:
        print(f"  could not measure (ollama-health {rss_oh}, claim-sweeper {rss_cs})")
    else:
        print(f"  ollama-health (50 hosts): {rss_oh / 1024:.1f} MiB")
        print(f"  claim-sweeper baseline:   {rss_cs / 1024:.1f} MiB")
        print(f"  ratio:                    {rss_oh / rss_cs:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

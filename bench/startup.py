"""Start-up cost of the `fleet` command, each figure against baselines measured in the same run:

- `fleet status` wall time (every daemon with a heartbeat file), against `python -c pass` and
  against a bare interpreter importing only what `fleet status` needs (click and the standard
  library modules it reads with); and the same command when the config holds a value only the
  models can judge, so it loads the whole config (pydantic-settings and every daemon's section);
- `fleet run claim-sweeper` from exec to READY=1 on a real NOTIFY_SOCKET, against `python -c
  pass` and against importing the card's libraries (what any daemon built on them pays);
- idle RSS of that daemon, against the peak RSS of an interpreter that imported the card's
  libraries (read by the child itself after its imports end, not sampled from outside).

    .venv/bin/python bench/startup.py [--runs N]

Prints figures (medians); asserts nothing. Talks only to 127.0.0.1 and a socket in a temp dir.
Targets (issue 11): `fleet status` <= 0.3 s and start -> READY <= 0.5 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLEET = Path(sys.executable).parent / "fleet"
CARD_LIBS = (
    "import anyio, aiosqlite, httpx, apscheduler, structlog, pydantic_settings, slack_sdk,"
    " prometheus_client, aiohttp"
)
STATUS_LIBS = "import click, json, subprocess, tomllib"
# A value the direct read leaves to the models (a lax bool): `fleet status` loads the config.
FULL_LOAD_TOML = "[claim_sweeper]\nauto_release = 0\n"
# The child reports its own peak RSS once its imports are done (kB on Linux).
REPORT_RSS = "\nimport resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "NOTIFY_"))}
    env.update(
        {
            "HOME": str(root / "home"),
            "FLEET_FLEET__ROOT": str(root),
            "FLEET_SLACK__BASE_URL": "http://127.0.0.1:9/api/",
        }
    )
    return env


def write_heartbeats(root: Path) -> None:
    """A fresh heartbeat file per registered daemon, naming this (live) process."""
    from fleet.registry import LINES
    from shared.heartbeats import Heartbeat, write_heartbeat

    now = time.time()
    for line in LINES:
        beat = Heartbeat(line.name, "bench", os.getpid(), "0", "primary", now, 0.01, 1, 60.0, now)
        write_heartbeat(root / "state" / "heartbeats", beat)


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, res.stdout


def baseline(code: str) -> tuple[float, float]:
    """Wall seconds of a bare interpreter running ``code``, and its peak RSS (MB)."""
    wall, out = timed([sys.executable, "-c", code + REPORT_RSS])
    return wall, int(out.strip().splitlines()[-1]) / 1024


def time_to_ready(root: Path, idle_s: float) -> tuple[float, float]:
    """Seconds from exec to READY=1, and RSS (MB) after idling ``idle_s``."""
    sock_dir = tempfile.mkdtemp(prefix="nsb")
    path = os.path.join(sock_dir, "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    env = clean_env(root)
    env.update({"NOTIFY_SOCKET": path, "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(free_port())})
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(FLEET), "run", "claim-sweeper"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = float("nan")
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                if b"READY=1" in sock.recv(4096):
                    ready = time.perf_counter() - start
                    break
            except TimeoutError:
                if proc.poll() is not None:
                    break
        time.sleep(idle_s)
        rss = rss_mb(proc.pid) if proc.poll() is None else float("nan")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        sock.close()
    return ready, rss


def row(label: str, value: float, base: float, unit: str) -> str:
    return f"{label:<52}{value:>9.3f}{base:>10.3f}{value / base:>8.2f}  {unit}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--idle-s", type=float, default=2.0)
    args = parser.parse_args()
    med = statistics.median
    statuses, full_loads, readies, rsses = [], [], [], []
    bare, status_libs, card_libs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            # Interleaved, so a burst of load hits every figure alike.
            root = Path(tmp) / f"r{i}"
            root.mkdir()
            bare.append(baseline("pass"))
            status_libs.append(baseline(STATUS_LIBS))
            card_libs.append(baseline(CARD_LIBS))
            write_heartbeats(root)
            statuses.append(timed([str(FLEET), "status"], clean_env(root))[0])
            full = root / "full.toml"
            full.write_text(FULL_LOAD_TOML)
            full_loads.append(
                timed([str(FLEET), "status", "--config", str(full)], clean_env(root))[0]
            )
            ready, rss = time_to_ready(root, args.idle_s)
            readies.append(ready)
            rsses.append(rss)
    print(f"runs: {args.runs} (medians), RSS sampled after {args.idle_s}s idle")
    print(f"{'figure':<52}{'value':>9}{'baseline':>10}{'ratio':>8}")
    print(row("fleet status (s) vs python -c pass", med(statuses), med(b[0] for b in bare), "s"))
    print(
        row(
            "fleet status (s) vs importing what it needs (click)",
            med(statuses),
            med(b[0] for b in status_libs),
            "s",
        )
    )
    print(
        row(
            "fleet status, full config load (s) vs python -c pass",
            med(full_loads),
            med(b[0] for b in bare),
            "s",
        )
    )
    print(row("start -> READY=1 (s) vs python -c pass", med(readies), med(b[0] for b in bare), "s"))
    print(
        row(
            "start -> READY=1 (s) vs importing the card's libs",
            med(readies),
            med(b[0] for b in card_libs),
            "s",
        )
    )
    print(
        row(
            "idle RSS (MB) vs python + the card's libs",
            med(rsses),
            med(b[1] for b in card_libs),
            "MB",
        )
    )
    print("targets: fleet status <= 0.3 s, start -> READY <= 0.5 s (idle machine)")


if __name__ == "__main__":
    main()

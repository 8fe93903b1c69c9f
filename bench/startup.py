"""Daemon start-up and idle footprint: time from exec to READY=1 on a real NOTIFY_SOCKET, and
idle RSS of `fleet run claim-sweeper`, each against a baseline measured in the same run
(a bare interpreter importing nothing / the card's libraries).

    .venv/bin/python bench/startup.py [--runs N]

Prints figures; asserts nothing. Talks only to 127.0.0.1 and a socket in a temp dir.
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
LIBS = (
    "import anyio, aiosqlite, httpx, apscheduler, structlog, pydantic_settings, slack_sdk,"
    " prometheus_client, aiohttp"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_to_ready(root: Path, idle_s: float) -> tuple[float, float]:
    """Seconds from exec to READY=1, and RSS (MB) after idling ``idle_s``."""
    sock_dir = tempfile.mkdtemp(prefix="nsb")
    path = os.path.join(sock_dir, "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "NOTIFY_SOCKET": path,
            "FLEET_FLEET__ROOT": str(root),
            "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(free_port()),
            "FLEET_SLACK__BASE_URL": "http://127.0.0.1:9/api/",
        }
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(FLEET), "run", "claim-sweeper"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready = float("nan")
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            try:
                if b"READY=1" in sock.recv(4096):
                    ready = time.perf_counter() - start
                    break
            except TimeoutError:
                continue
        time.sleep(idle_s)
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        sock.close()
    return ready, rss


def baseline_exec(code: str) -> tuple[float, float]:
    """Seconds to run a bare interpreter with ``code``, and its peak RSS (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code + "\nimport time; time.sleep(0.3)"])
    time.sleep(0.25)
    rss = rss_mb(proc.pid)
    proc.wait()
    return time.perf_counter() - start - 0.3, rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=3.0)
    args = parser.parse_args()
    readies, rsses = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            ready, rss = time_to_ready(Path(tmp) / f"r{i}", args.idle_s)
            readies.append(ready)
            rsses.append(rss)
    bare = [baseline_exec("pass") for _ in range(args.runs)]
    libs = [baseline_exec(LIBS) for _ in range(args.runs)]
    med = statistics.median
    print(f"runs: {args.runs} (median), idle before RSS sample: {args.idle_s}s")
    print(f"{'figure':<44}{'value':>10}{'baseline':>10}{'ratio':>8}")
    print(
        f"{'start -> READY=1 (s) vs bare python start':<44}{med(readies):>10.3f}"
        f"{med(b[0] for b in bare):>10.3f}{med(readies) / med(b[0] for b in bare):>8.1f}"
    )
    print(
        f"{'start -> READY=1 (s) vs importing the libs':<44}{med(readies):>10.3f}"
        f"{med(x[0] for x in libs):>10.3f}{med(readies) / med(x[0] for x in libs):>8.2f}"
    )
    print(
        f"{'idle RSS (MB) vs python + the libs':<44}{med(rsses):>10.1f}"
        f"{med(x[1] for x in libs):>10.1f}{med(rsses) / med(x[1] for x in libs):>8.2f}"
    )
    print("targets: READY < 1.5 s, RSS < 60 MB")


if __name__ == "__main__":
    main()

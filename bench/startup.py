"""Start-up and idle cost of the fleet's processes, each figure beside "importing only the
dependencies" measured in the same run:

- every daemon (`fleet run NAME`) and `fleet run --all` (on a primary and on a standby, the two
  host roles): seconds from exec to READY=1 on a real NOTIFY_SOCKET, and RSS after idling.
  Baseline: a bare interpreter that imports exactly the third-party modules that process
  loaded (read from its own `python -X importtime` run just before), sends READY=1 to the same
  kind of socket, then idles in an asyncio loop. The ratio is what the fleet's own code and
  state cost on top of its dependencies;
- `fleet status` wall time (every daemon with a heartbeat file), against an interpreter
  importing only what it needs (click and the standard library modules it reads with);
- what sending Slack messages adds to a daemon's RSS: the sink's way (slack-sdk's sync
  WebClient in a worker thread) against slack-sdk's AsyncWebClient (which loads aiohttp), each
  in a fresh process that loaded the runtime, posting to a fake Slack on 127.0.0.1.

    .venv/bin/python bench/startup.py [--runs N] [--idle-s S] [--plain]

Every daemon reaches READY under the bench's config: each gets its own ports, ollama-health a
dead host on 127.0.0.1:9, Slack a dead URL on 127.0.0.1:9, restore-loop the standby role (it
refuses a primary) and no tier table (its cycles fail, it stays up and idle). Every process
runs with the generated systemd units' environment (PYTHONOPTIMIZE=2, MALLOC_ARENA_MAX=1;
`--plain` for plain python), the install byte-compiled at that level first as `fleet units
install` does (with PYTHONDONTWRITEBYTECODE set, a process would otherwise compile every module
at every start).
`claim-sweeper (launchd)` is the same daemon started the way a launchd plist starts it.
Prints medians; asserts nothing. Talks only to 127.0.0.1 and sockets in temp dirs.
Targets (issue 15): idle RSS <= 45 MiB per daemon, `fleet run --all` <= 65 MiB,
start -> READY <= 0.5 s; `fleet status` <= 0.3 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fleet.install import compile_for_units
from shared.units import MALLOC_ARENA_MAX, PYTHON_OPTIMIZE

FLEET = Path(sys.executable).parent / "fleet"
OWN = ("shared", "daemons", "fleet", "tests", "bench")
STATUS_LIBS = "import click, json, subprocess, tomllib"
PORT_KEYS = (
    "EMAIL_REACTOR__METRICS_PORT",
    "OLLAMA_HEALTH__METRICS_PORT",
    "RESTORE_LOOP__METRICS_PORT",
    "HEARTBEAT__METRICS_PORT",
    "HEARTBEAT__HEALTH_PORT",
    "BLUEPRINT_WATCHDOG__METRICS_PORT",
    "CLAIM_SWEEPER__METRICS_PORT",
)
# (label, `fleet` arguments, host role)
TARGETS = (
    ("email-reactor", ["run", "email-reactor"], "primary"),
    ("ollama-health", ["run", "ollama-health"], "primary"),
    ("restore-loop", ["run", "restore-loop"], "standby"),
    ("heartbeat", ["run", "heartbeat"], "primary"),
    ("blueprint-watchdog", ["run", "blueprint-watchdog"], "primary"),
    ("claim-sweeper", ["run", "claim-sweeper"], "primary"),
    # the same daemon as a launchd job starts it (the plists' form)
    ("claim-sweeper (launchd)", ["units", "launchd-run", "claim-sweeper"], "primary"),
    ("--all (primary)", ["run", "--all"], "primary"),
    ("--all (standby)", ["run", "--all"], "standby"),
)
# The baseline child: import the given modules, say READY=1 where the daemon would, idle.
DEPS_CHILD = """
import asyncio, importlib, os, socket, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
asyncio.run(asyncio.Event().wait())
"""
# Child: load what a daemon loads, post 3 messages one way, print RSS before and after (MiB).
SLACK_CHILD = """
import asyncio, re, sys
sys.path.insert(0, sys.argv[2])
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
import shared.runner
from tests.fakes.slack import DEFAULT_TOKEN, FakeSlack
fake = FakeSlack()
fake.start()
before = rss()
async def main(mode):
    if mode == "async":
        from slack_sdk.web.async_client import AsyncWebClient
        c = AsyncWebClient(token=DEFAULT_TOKEN, base_url=fake.base_url, retry_handlers=[])
        for _ in range(3):
            await c.chat_postMessage(channel="#ops", text="bench")
    else:
        import anyio.to_thread
        from slack_sdk import WebClient
        c = WebClient(token=DEFAULT_TOKEN, base_url=fake.base_url, retry_handlers=[])
        for _ in range(3):
            await anyio.to_thread.run_sync(lambda: c.chat_postMessage(channel="#ops", text="bench"))
asyncio.run(main(sys.argv[1]))
assert len(fake.messages) == 3
print(before, rss())
fake.stop()
"""
ROOT = Path(__file__).resolve().parents[1]
IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fleet_env(root: Path, role: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLEET_", "NOTIFY_", "WATCHDOG_", "MC_LEASE"))
    }
    env.update(
        {
            "HOME": str(root / "home"),
            "FLEET_FLEET__ROOT": str(root),
            "FLEET_FLEET__ROLE": role,
            "FLEET_SLACK__BASE_URL": "http://127.0.0.1:9/api/",
            "FLEET_OLLAMA_HEALTH__HOSTS": json.dumps({"anvil": {"url": "http://127.0.0.1:9"}}),
        }
    )
    env.update({f"FLEET_{key}": str(free_port()) for key in PORT_KEYS})
    return env


def third_party(names: list[str]) -> list[str]:
    """The modules in ``names`` whose package lives in site-packages (not the fleet's own)."""
    site = sysconfig.get_paths()["purelib"]
    where: dict[str, bool] = {}
    found = []
    for name in dict.fromkeys(names):
        top = name.split(".")[0]
        if top in OWN or top.startswith("_"):  # ours, or what site.py loads in every python
            continue
        if top not in where:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            places = [spec.origin or ""] if spec is not None else []
            if spec is not None and spec.submodule_search_locations:
                places += list(spec.submodule_search_locations)
            where[top] = any(p.startswith(site) for p in places)
        if where[top]:
            found.append(name)
    return found


def loaded_modules(args: list[str], env: dict[str, str], idle_s: float) -> list[str]:
    """Every module `fleet ARGS` imports up to idling, in import order."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", str(FLEET), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(idle_s + 1.0)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    return [m.group(1) for m in IMPORT_LINE.finditer(err)]


@dataclass
class Sample:
    ready_s: float  # nan: no READY=1 within 30 s, or the process ended
    rss_mib: float
    note: str = ""  # the last log lines of a process that failed


def measure(argv: list[str], env: dict[str, str], idle_s: float) -> Sample:
    """Seconds from exec to READY=1 on a fresh NOTIFY_SOCKET, and RSS after ``idle_s``."""
    with tempfile.TemporaryDirectory(prefix="nsb") as sock_dir, tempfile.TemporaryFile() as log:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(sock_dir, "n.sock"))
        sock.settimeout(0.05)
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env={**env, "NOTIFY_SOCKET": os.path.join(sock_dir, "n.sock")},
            stdout=log,
            stderr=subprocess.STDOUT,
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
            rss = rss_mib(proc.pid) if proc.poll() is None else float("nan")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()
        note = ""
        if ready != ready or rss != rss:  # nan: say why
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-3:]
            note = f"exit {proc.returncode}: " + " | ".join(line[:300] for line in tail)
    return Sample(ready, rss, note)


def write_heartbeats(root: Path) -> None:
    """A fresh heartbeat file per registered daemon, naming this (live) process."""
    from fleet.registry import LINES
    from shared.heartbeats import Heartbeat, write_heartbeat

    now = time.time()
    for line in LINES:
        beat = Heartbeat(line.name, "bench", os.getpid(), "0", "primary", now, 0.01, 1, 60.0, now)
        write_heartbeat(root / "state" / "heartbeats", beat)


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def slack_growth(mode: str) -> float:
    """MiB a daemon-like process grows by posting 3 Slack messages ``mode`` (sync|async)."""
    res = subprocess.run(
        [sys.executable, "-c", SLACK_CHILD, mode, str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    before, after = (float(x) for x in res.stdout.split())
    return after - before


def good(values: list[float]) -> list[float]:
    return [v for v in values if v == v] or [float("nan")]  # drop failed runs (nan)


def row(label: str, value: float, base: float, unit: str, extra: str = "") -> str:
    return f"{label:<34}{value:>10.3f}{base:>10.3f}{value / base:>8.2f}  {unit:<4}{extra}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=2.0)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="run every process as plain python, not with the systemd units' environment",
    )
    args = parser.parse_args()
    med = statistics.median
    # The units' environment (fleet_env hands it to every process, baselines too), and the
    # byte-code at that level as `fleet units install` leaves a host.
    unit_env = {"PYTHONOPTIMIZE": PYTHON_OPTIMIZE, "MALLOC_ARENA_MAX": MALLOC_ARENA_MAX}
    for key in unit_env:
        os.environ.pop(key, None)
    if not args.plain:
        os.environ.update(unit_env)
    print(compile_for_units(Path(sys.prefix), os.environ.get("PYTHONOPTIMIZE", "0")))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        deps: dict[str, list[str]] = {}
        for label, run_args, role in TARGETS:
            root = base / f"probe-{len(deps)}"
            deps[label] = third_party(loaded_modules(run_args, fleet_env(root, role), args.idle_s))
        fleet: dict[str, list[Sample]] = {label: [] for label, _a, _r in TARGETS}
        only: dict[str, list[Sample]] = {label: [] for label, _a, _r in TARGETS}
        statuses: list[float] = []
        status_libs: list[float] = []
        slack_sync: list[float] = []
        slack_async: list[float] = []
        for i in range(args.runs):
            # Interleaved, so a burst of load hits a figure and its baseline alike.
            for n, (label, run_args, role) in enumerate(TARGETS):
                root = base / f"r{i}-{n}"
                env = fleet_env(root, role)
                fleet[label].append(measure([str(FLEET), *run_args], env, args.idle_s))
                child = [sys.executable, "-c", DEPS_CHILD, *deps[label]]
                only[label].append(measure(child, env, args.idle_s))
            root = base / f"status-{i}"
            write_heartbeats(root)
            statuses.append(timed([str(FLEET), "status"], fleet_env(root, "primary")))
            status_libs.append(timed([sys.executable, "-c", STATUS_LIBS]))
            slack_sync.append(slack_growth("sync"))
            slack_async.append(slack_growth("async"))

    print(f"runs: {args.runs} (medians); RSS read from /proc after {args.idle_s:g} s idle")
    shown = " ".join(f"{k}={os.environ[k]}" for k in unit_env if k in os.environ)
    print(f"every process: {shown + ', as the systemd units' if shown else 'plain python'}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("baseline: a python process importing only the same third-party modules, then idle")
    head = f"{'fleet':>10}{'deps only':>10}{'ratio':>8}"
    print(f"{'start -> READY=1 (s)':<34}{head}        fastest: fleet, deps only")
    for label, _a, _r in TARGETS:
        mine, theirs = (
            good([s.ready_s for s in fleet[label]]),
            good([s.ready_s for s in only[label]]),
        )
        best = f"{min(mine):.3f}, {min(theirs):.3f}"
        print(row(label, med(mine), med(theirs), "s", best))
    print(f"{'idle RSS (MiB)':<34}{head}")
    for label, _a, _r in TARGETS:
        mine, theirs = (
            good([s.rss_mib for s in fleet[label]]),
            good([s.rss_mib for s in only[label]]),
        )
        print(row(label, med(mine), med(theirs), "MiB"))
    print(f"{'wall time (s)':<34}{'fleet':>10}{'deps only':>10}{'ratio':>8}")
    print(row("fleet status", med(statuses), med(status_libs), "s"))
    print(f"{'RSS added by 3 Slack posts (MiB)':<34}{'sync+thr':>10}{'async':>10}{'ratio':>8}")
    print(row("slack-sdk WebClient vs Async", med(slack_sync), med(slack_async), "MiB"))
    for label, _a, _r in TARGETS:
        for sample in fleet[label] + only[label]:
            if sample.note:
                print(f"FAILED RUN {label}: {sample.note}")
    print("third-party packages per process:")
    for label, _a, _r in TARGETS:
        tops = sorted({name.split(".")[0] for name in deps[label]})
        print(f"  {label:<20} {' '.join(tops)}")
    print(
        "targets: idle RSS <= 45 MiB per daemon, --all <= 65 MiB, start -> READY <= 0.5 s,"
        " fleet status <= 0.3 s"
    )


if __name__ == "__main__":
    main()

"""The DR drill: 17 P0 DBs replicated by real `litestream replicate` to Azurite (abs), written at
10 tx/s each by a separate process. Two standbys read the same replicas at the same time:

- restore-loop in follow mode (`fleet run restore-loop`, defaults: 1 s follow polls);
- the baseline: the seed's 30 s loop as it must be written for litestream 0.5 (every 30 s
  restore each DB to a temp file and rename it into place, no checks).

It samples each copy's staleness (now minus the newest visible row's write time) 4 times a second
over the window, reports min/median/p95/max, the restore-side CPU of each standby (its process
plus its litestream children, from wait4), then kills the primary and times `fleet restore
promote --all` (RTO) and prints the RPO it reports. Prints figures with ratios against the
baseline; asserts nothing about timings. Everything lives in a temporary directory.

    .venv/bin/python bench/restore.py            # 60 s window (about 2 min in all)
    .venv/bin/python bench/restore.py --quick    # 12 s window, 8 DBs (under 40 s)
    .venv/bin/python bench/restore.py --replica file   # without Azurite (file replicas)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from daemons.restore_loop.litestream import find_litestream  # noqa: E402
from tests.fakes.litestream_primary import AZURITE_KEY, Primary, Standby  # noqa: E402

FLEET = Path(sys.executable).parent / "fleet"
BASELINE_INTERVAL_S = 30.0


# the baseline loop (runs as its own process: `restore.py --baseline-loop CONFIG DIR DB...`) ---
def baseline_loop(config: str, out_dir: str, db_paths: list[str], stop_file: str) -> None:
    """The seed's loop for 0.5: every 30 s, restore each DB to a temp file, rename into place."""
    binary = str(find_litestream(""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    while not Path(stop_file).exists():
        started = time.monotonic()
        for db in db_paths:
            name = Path(db).name
            tmp = out / f".{name}.tmp-restore"
            for leftover in (tmp, Path(f"{tmp}.tmp")):
                leftover.unlink(missing_ok=True)
            done = subprocess.run(
                [binary, "restore", "-config", config, "-o", str(tmp), db],
                capture_output=True,
                timeout=120,
                check=False,
            )
            if done.returncode == 0:
                os.replace(tmp, out / name)
        while time.monotonic() - started < BASELINE_INTERVAL_S:
            if Path(stop_file).exists():
                return
            time.sleep(0.2)


# measurement -------------------------------------------------------------------------------------
def newest_row_ts(path: Path) -> float | None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT max(ts) FROM t").fetchone()
        return float(row[0]) if row and row[0] is not None else None
    except sqlite3.Error:
        return None
    finally:
        conn.close()


class Sampler:
    """Staleness samples of a set of copies, 4 times a second, in a background thread."""

    def __init__(self, copies: list[Path]) -> None:
        self.copies = copies
        self.samples: list[float] = []
        self.missing = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for copy in self.copies:
                ts = newest_row_ts(copy)
                if ts is None:
                    self.missing += 1
                else:
                    self.samples.append(max(0.0, time.time() - ts))


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {
            "n": 0,
            "min": float("nan"),
            "median": float("nan"),
            "p95": float("nan"),
            "max": float("nan"),
        }
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def stop_with_rusage(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> float:
    """Stop ``proc``, reap it with wait4 and return its CPU seconds (it and its reaped
    children)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return float(usage.ru_utime + usage.ru_stime)


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


# the drill -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> None:
    n_dbs = args.dbs or (8 if args.quick else 17)
    window_s = args.window or (12.0 if args.quick else 60.0)
    use_azurite = args.replica == "abs"
    work = Path(tempfile.mkdtemp(prefix="restore-bench-"))
    azurite = None
    primary: Primary | None = None
    procs: list[subprocess.Popen[Any]] = []
    try:
        if use_azurite:
            if not (os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")):
                sys.exit(
                    "azurite-blob not found (npm install -g azurite@3.35.0), or --replica file"
                )
            from tests.fakes.azurite import Azurite

            azurite = Azurite(work / "azurite").start()
            azurite.create_container("backups")
        names = [f"p0-{i:02d}" for i in range(n_dbs)]
        primary = Primary(
            work / "anvil",
            names,
            sync_interval="1s",
            abs_endpoint=azurite.endpoint if azurite else None,
        ).create()
        # Some history, so a restore is not trivially small (~0.5 MB a DB).
        for name in names:
            conn = sqlite3.connect(primary.db_path(name))
            conn.executemany(
                "INSERT INTO t(ts, payload) VALUES (?, ?)",
                [(time.time(), "x" * 200) for _ in range(2000)],
            )
            conn.commit()
            conn.close()
        primary.start_replicate()
        primary.start_writer(rate_per_s=10, max_s=window_s + 600)
        print(
            f"drill: {n_dbs} P0 DBs, 10 tx/s each, replica "
            f"{'abs on Azurite ' + azurite.endpoint if azurite else 'file'}, "
            f"window {window_s:g}s; litestream sync-interval 1s",
            flush=True,
        )
        time.sleep(2.0)

        # follow-mode standby: the real daemon with its defaults (P0 follows every 1 s).
        fleet_root = work / "forge"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "NOTIFY_"))}
        env.update(
            FLEET_FLEET__ROOT=str(fleet_root),
            FLEET_FLEET__HOST="forge",
            FLEET_SLACK__BASE_URL="http://127.0.0.1:9/api/",
            FLEET_RESTORE_LOOP__METRICS_PORT="0",
            HOME=str(work / "home"),
        )
        standby = Standby(env, fleet_root, work, primary, tiers=("P0",))
        for key in list(standby.env):
            if key.startswith("FLEET_RESTORE_LOOP__") and key != "FLEET_RESTORE_LOOP__METRICS_PORT":
                del standby.env[key]
        standby.env["LITESTREAM_AZURE_ACCOUNT_KEY"] = AZURITE_KEY
        follow = subprocess.Popen(
            [str(FLEET), "run", "restore-loop"],
            env=standby.env,
            cwd=work,
            stdout=(work / "restore-loop.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        procs.append(follow)

        # baseline standby: the seed's loop, restoring from the same replicas.
        baseline_dir = work / "baseline"
        stop_file = work / "baseline.stop"
        baseline = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--baseline-loop",
                str(fleet_root / "config" / "litestream-restore.yml"),
                str(baseline_dir),
                str(stop_file),
                *[str(standby.copy(n)) for n in names],
            ],
            env=standby.env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "baseline.log").open("ab"),
        )
        procs.append(baseline)
        started = time.monotonic()
        follow_copies = [standby.copy(n) for n in names]
        base_copies = [baseline_dir / f"{n}.db" for n in names]
        ready = wait_for(
            lambda: all(newest_row_ts(p) is not None for p in follow_copies + base_copies), 120
        )
        print(f"standbys ready after {time.monotonic() - started:.1f}s (both restored once)")
        if not ready:
            print("warning: not every copy was restored; figures cover the ones that were")
        follow_sampler, base_sampler = Sampler(follow_copies), Sampler(base_copies)
        follow_sampler.start()
        base_sampler.start()
        window_start = time.monotonic()
        time.sleep(window_s)
        follow_sampler.stop()
        base_sampler.stop()
        measured = time.monotonic() - window_start
        wall = time.monotonic() - started

        # the drill: ANVIL dies (writer and replication stop), FORGE is promoted.
        primary.stop_writer()
        for proc in primary.replicates:
            proc.kill()
        killed_at = time.monotonic()
        promote = subprocess.run(
            [str(FLEET), "restore", "promote", "--all", "--json"],
            env=standby.env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
        rto = time.monotonic() - killed_at
        report: dict[str, Any] = {}
        try:
            report = json.loads(promote.stdout)
        except ValueError:
            print("promote output:", promote.stdout[-1500:], promote.stderr[-1500:])

        stop_file.touch()
        follow_cpu = stop_with_rusage(follow)
        base_cpu = stop_with_rusage(baseline, signal.SIGTERM)
        procs.clear()

        f, b = summary(follow_sampler.samples), summary(base_sampler.samples)
        print(
            f"\nstaleness of the standby copies over {measured:.0f}s "
            f"({f['n']} / {b['n']} samples; now - newest visible row):"
        )
        print(f"  {'':<26}{'min':>8}{'median':>9}{'p95':>9}{'max':>9}")
        for label, s in (("restore-loop follow (1 s)", f), ("baseline: 30 s loop", b)):
            print(
                f"  {label:<26}{s['min']:>7.2f}s{s['median']:>8.2f}s{s['p95']:>8.2f}s"
                f"{s['max']:>8.2f}s"
            )
        if f["n"] and b["n"]:
            print(
                f"  ratio baseline/follow: median {b['median'] / max(f['median'], 1e-3):.1f}x, "
                f"p95 {b['p95'] / max(f['p95'], 1e-3):.1f}x"
            )
        print(f"\nrestore-side CPU over {wall:.0f}s (process + litestream children):")
        for label, cpu in (
            ("restore-loop follow:", follow_cpu),
            ("baseline 30 s loop: ", base_cpu),
        ):
            print(f"  {label} {cpu:6.1f} s = {100 * cpu / wall:5.1f}% of a core")
        print(f"  ratio follow/baseline: {follow_cpu / max(base_cpu, 1e-3):.2f}x")

        promoted = [d for d in report.get("dbs", []) if d.get("status") == "promoted"]
        rpos = [d["rpo_s"] for d in promoted if d.get("rpo_s") is not None]
        print(
            f"\npromote --all after the primary died: exit {promote.returncode}, "
            f"{len(promoted)}/{len(names)} DBs promoted"
        )
        print(
            f"  RTO (wall, command start to end): {rto:.2f}s; its own figure "
            f"{report.get('rto_s', float('nan')):.2f}s"
        )
        if rpos:
            print(f"  RPO reported: median {statistics.median(rpos):.2f}s, max {max(rpos):.2f}s")
        print(
            f"\ntargets: RPO p95 <= 2.5 s: {'met' if f['p95'] <= 2.5 else 'MISSED'} "
            f"(follow p95 {f['p95']:.2f}s); promote --all <= 60 s: "
            f"{'met' if rto <= 60 else 'MISSED'} ({rto:.1f}s)"
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if primary is not None:
            primary.close()
        if azurite is not None:
            azurite.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline-loop":
        config, out_dir, stop_file, *dbs = sys.argv[2:]
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        baseline_loop(config, out_dir, dbs, stop_file)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 s window, 8 DBs")
    parser.add_argument("--window", type=float, default=None, help="measurement window (s)")
    parser.add_argument("--dbs", type=int, default=None, help="number of P0 DBs (17)")
    parser.add_argument("--replica", choices=("abs", "file"), default="abs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    run(parser.parse_args())


if __name__ == "__main__":
    main()

"""Mission Control lease benchmarks: claim throughput across real processes, and the
claim-sweep query on a large ``tasks`` table with and without ``idx_tasks_lease_until``.

Prints figures; asserts nothing about timings (it does check that the races stayed correct).
Everything lives in a temporary directory that is removed at exit.

    .venv/bin/python bench/claims.py            # 10k tasks for claims, 1M rows for the sweep
    .venv/bin/python bench/claims.py --quick    # 10k tasks, 100k rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.mission_control import LeaseHeld, MissionControl, format_sql_ts  # noqa: E402

NOW = datetime(2026, 5, 8, 12, 0, 0, tzinfo=UTC)


# worker ----------------------------------------------------------------------------------------
def worker(db: str, actor: str, ids: list[int]) -> None:
    """One claimer process: connect, say ready, wait for the start line, claim ``ids``."""
    won = held = 0
    with MissionControl(db, create=False, clock=NOW.timestamp) as store:
        print("ready", flush=True)
        sys.stdin.readline()
        start = time.time()
        for task_id in ids:
            try:
                store.claim(task_id, actor, "bench")
                won += 1
            except LeaseHeld:
                held += 1
        end = time.time()
    print(json.dumps({"won": won, "held": held, "start": start, "end": end}), flush=True)


# (a) claim throughput --------------------------------------------------------------------------
@dataclass
class ClaimRun:
    name: str
    procs: int
    attempts: int
    won: int
    wall_s: float

    @property
    def claims_per_s(self) -> float:
        return self.won / self.wall_s

    @property
    def attempts_per_s(self) -> float:
        return self.attempts / self.wall_s


def run_claimers(db: Path, name: str, id_lists: list[list[int]], n_tasks: int) -> ClaimRun:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tasks SET lease_holder = NULL, lease_until = NULL")
    conn.close()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(db), f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in range(len(id_lists))
    ]
    try:
        for p, ids in zip(procs, id_lists, strict=True):
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(json.dumps(ids) + "\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"worker failed to start: {name}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"worker exited {p.returncode}: {name}")
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    won = sum(r["won"] for r in results)
    attempts = sum(r["won"] + r["held"] for r in results)
    with sqlite3.connect(db) as conn:
        held_rows = conn.execute(
            "SELECT count(*) FROM tasks WHERE lease_holder IS NOT NULL"
        ).fetchone()[0]
    conn.close()
    if won != n_tasks or held_rows != n_tasks:
        raise SystemExit(f"race broken in {name!r}: {won} wins, {held_rows} leased rows")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return ClaimRun(name, len(id_lists), attempts, won, wall)


def bench_claims(tmp: Path, n_tasks: int, n_procs: int) -> list[ClaimRun]:
    db = tmp / "claims.db"
    with MissionControl(db, clock=NOW.timestamp) as store:
        store.conn.executemany(
            "INSERT INTO tasks(title, created_at, updated_at) VALUES (?, ?, ?)",
            [(f"task {i}", format_sql_ts(NOW), format_sql_ts(NOW)) for i in range(n_tasks)],
        )
    ids = list(range(1, n_tasks + 1))
    return [
        run_claimers(db, "1 process, every task", [ids], n_tasks),
        run_claimers(
            db,
            f"{n_procs} processes, disjoint shares",
            [ids[i::n_procs] for i in range(n_procs)],
            n_tasks,
        ),
        run_claimers(db, f"{n_procs} processes racing for every task", [ids] * n_procs, n_tasks),
    ]


# (b) sweep on a big table ----------------------------------------------------------------------
def build_big_db(path: Path, rows: int, expired: int, live: int) -> None:
    with MissionControl(path, clock=NOW.timestamp):
        pass  # creates the schema and indexes exactly as the fleet does
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    # Every (rows // expired)-th row holds an expired lease, every (rows // live)-th (offset 1)
    # a live one; expiries are spread over the last / next hour.
    conn.execute(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :rows)"
        " INSERT INTO tasks(id, title, status, created_at, updated_at, lease_holder, lease_until)"
        " SELECT n, 'task ' || n, 'open', :now, :now,"
        "  CASE WHEN n % :exp_step = 0 OR n % :live_step = 1 THEN 'bench:' || (n % 97) END,"
        "  CASE WHEN n % :exp_step = 0"
        "   THEN datetime(:now, '-' || (1 + n % 3600) || ' seconds')"
        "   WHEN n % :live_step = 1"
        "   THEN datetime(:now, '+' || (1 + n % 3600) || ' seconds') END"
        " FROM seq",
        {
            "rows": rows,
            "now": format_sql_ts(NOW),
            "exp_step": rows // expired,
            "live_step": rows // live,
        },
    )
    conn.execute("COMMIT")
    conn.close()


def time_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm the page cache and the statement cache
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


SEED_QUERY = (
    "SELECT id, title, lease_holder, lease_until FROM tasks"
    " WHERE lease_holder IS NOT NULL AND lease_until > :now"
)


def sweep_figures(store: MissionControl, repeat: int) -> dict[str, float]:
    def seed_query() -> object:
        return store.conn.execute(SEED_QUERY, {"now": format_sql_ts(NOW)}).fetchall()

    return {
        "claim-sweep (expired_leases + lease_counts)": time_ms(
            lambda: (store.expired_leases(), store.lease_counts()), repeat
        ),
        "  expired_leases": time_ms(store.expired_leases, repeat),
        "  lease_counts": time_ms(store.lease_counts, repeat),
        "seed monitoring query (live leases)": time_ms(seed_query, repeat),
    }


def sweep_plan(db: Path) -> str:
    # A fresh connection: a cached EXPLAIN statement is not re-prepared after DROP INDEX and
    # would keep showing the old plan.
    sql = (
        "EXPLAIN QUERY PLAN SELECT id, title, lease_holder, lease_until FROM tasks"
        " WHERE lease_holder IS NOT NULL AND lease_until <= ? ORDER BY lease_until"
    )
    conn = sqlite3.connect(db)
    try:
        return "; ".join(row[3] for row in conn.execute(sql, (format_sql_ts(NOW),)))
    finally:
        conn.close()


def bench_sweep(
    tmp: Path, rows: int, expired: int, live: int, repeat: int
) -> tuple[dict[str, float], dict[str, float], str, str, float]:
    db = tmp / "sweep.db"
    t = time.perf_counter()
    build_big_db(db, rows, expired, live)
    build_s = time.perf_counter() - t
    with MissionControl(db, clock=NOW.timestamp) as store:
        found = len(store.expired_leases())
        counts = store.lease_counts()
        if found != expired or counts != (live, expired):
            raise SystemExit(f"sweep DB wrong: {found} expired, counts {counts}")
        plan_idx = sweep_plan(db)
        indexed = sweep_figures(store, repeat)
        store.conn.execute("DROP INDEX idx_tasks_lease_until")
        plan_scan = sweep_plan(db)
        if len(store.expired_leases()) != expired:
            raise SystemExit("sweep without the index returned a different answer")
        scanned = sweep_figures(store, repeat)
    return indexed, scanned, plan_idx, plan_scan, build_s


# report ----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~15 s)")
    parser.add_argument("--worker", nargs=2, metavar=("DB", "ACTOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ids = json.loads(sys.stdin.readline())
        worker(args.worker[0], args.worker[1], ids)
        return

    n_tasks = 10_000
    rows = 100_000 if args.quick else 1_000_000
    expired, live, procs, repeat = 1_000, 10_000, 8, 5
    t_total = time.perf_counter()
    print(
        f"alai-fleet claim bench ({'quick' if args.quick else 'full'}): sqlite "
        f"{sqlite3.sqlite_version}, python {platform.python_version()}, "
        f"{os.cpu_count()} cpus, {platform.system()}"
    )
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        runs = bench_claims(tmp, n_tasks, procs)
        base = runs[0].claims_per_s
        print(f"\n(a) claim throughput: {n_tasks:,} tasks, one CAS UPDATE per attempt (WAL)")
        print(
            f"{'scenario':<38} {'procs':>5} {'attempts':>9} {'won':>7} {'wall s':>7}"
            f" {'claims/s':>9} {'attempts/s':>10} {'vs 1 proc':>9}"
        )
        for r in runs:
            print(
                f"{r.name:<38} {r.procs:>5} {r.attempts:>9,} {r.won:>7,} {r.wall_s:>7.2f}"
                f" {r.claims_per_s:>9,.0f} {r.attempts_per_s:>10,.0f}"
                f" {r.claims_per_s / base:>8.2f}x"
            )
        print("(every race checked: each task won exactly once)")

        indexed, scanned, plan_idx, plan_scan, build_s = bench_sweep(
            tmp, rows, expired, live, repeat
        )
        print(
            f"\n(b) claim-sweep on {rows:,} tasks ({expired:,} expired, {live:,} live,"
            f" {rows - expired - live:,} free; built in {build_s:.1f} s); median of {repeat}"
        )
        print(f"{'query':<45} {'indexed ms':>10} {'no index ms':>11} {'ratio':>8}")
        for name, ms in indexed.items():
            print(f"{name:<45} {ms:>10.2f} {scanned[name]:>11.2f} {scanned[name] / ms:>7.0f}x")
        print(f"plan with idx_tasks_lease_until: {plan_idx}")
        print(f"plan after DROP INDEX:           {plan_scan}")
        sweep_ms = indexed["claim-sweep (expired_leases + lease_counts)"]
        verdict = "met" if sweep_ms < 50 else "MISSED"
        print(f"target indexed claim-sweep < 50 ms: {verdict} ({sweep_ms:.2f} ms)")
    print(f"\ntotal {time.perf_counter() - t_total:.1f} s")


if __name__ == "__main__":
    main()

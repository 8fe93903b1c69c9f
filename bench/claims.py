"""Mission Control lease benchmarks, SQLite and Postgres in the same run: claim throughput
across real processes, the claim-sweep query on a large ``tasks`` table with and without
``idx_tasks_lease_until``, and the cold start of ``fleet mc claim-status`` (the hook verb).

Prints figures; asserts nothing about timings (it does check that the races stayed correct).
Everything lives in a temporary directory that is removed at exit. Postgres is a throwaway
server started here (tests/pg_support.py: Debian postgresql, initdb in the temp dir).

    .venv/bin/python bench/claims.py            # 10k tasks for claims, 1M rows for the sweep
    .venv/bin/python bench/claims.py --quick    # 2k tasks, 100k rows
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

from shared.mission_control import (  # noqa: E402
    LeaseHeld,
    McTarget,
    MissionControl,
    format_sql_ts,
    open_store,
)
from tests.pg_support import PgServer  # noqa: E402

NOW = datetime(2026, 5, 8, 12, 0, 0, tzinfo=UTC)


# worker ----------------------------------------------------------------------------------------
def worker(db: str, actor: str, ids: list[int]) -> None:
    """One claimer process: connect, say ready, wait for the start line, claim ``ids``.
    ``db``: a SQLite path or a Postgres URL (password from $ALAI_MC_PASSWORD_FILE)."""
    won = held = 0
    with open_store(McTarget.from_value(db), create=False, clock=NOW.timestamp) as store:
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


# backends --------------------------------------------------------------------------------------
@dataclass
class Backend:
    name: str
    target: str  # SQLite path or Postgres URL (no password)
    env: dict[str, str]
    dsn: str = ""  # Postgres with password, for this script's own connections

    def sql(self, query: str, params: dict[str, object] | None = None) -> list[tuple[object, ...]]:
        if not self.dsn:
            conn = sqlite3.connect(self.target, isolation_level=None)
            try:
                return conn.execute(query, params or {}).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as pconn:
            cur = pconn.execute(query.replace(":now", "%(now)s"), params or {})  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def store(self) -> object:
        pw = self.env.get("ALAI_MC_PASSWORD_FILE")
        target = McTarget.from_value(self.target, Path(pw) if pw else None)
        return open_store(target, clock=NOW.timestamp)


def sqlite_backend(path: Path) -> Backend:
    return Backend("SQLite", str(path), {})


def pg_backend(server: PgServer, pw_file: Path) -> Backend:
    db = server.create_database()
    return Backend(
        "Postgres", server.url(db), {"ALAI_MC_PASSWORD_FILE": str(pw_file)}, server.dsn(db)
    )


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


def run_claimers(be: Backend, name: str, id_lists: list[list[int]], n_tasks: int) -> ClaimRun:
    be.sql("UPDATE tasks SET lease_holder = NULL, lease_until = NULL")
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", be.target, f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **be.env},
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
    held_rows = be.sql("SELECT count(*) FROM tasks WHERE lease_holder IS NOT NULL")[0][0]
    if won != n_tasks or held_rows != n_tasks:
        raise SystemExit(f"race broken in {name!r}: {won} wins, {held_rows} leased rows")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return ClaimRun(f"{be.name}: {name}", len(id_lists), attempts, won, wall)


def bench_claims(be: Backend, n_tasks: int, n_procs: int) -> list[ClaimRun]:
    with be.store():
        pass  # the schema, as the fleet creates it
    be.sql(
        "INSERT INTO tasks(title) SELECT 'task ' || n FROM "
        + (
            "generate_series(1, :n) n"
            if be.dsn
            else "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :n)"
            " SELECT n FROM s)"
        ).replace(":n", str(int(n_tasks)))
    )
    ids = list(range(1, n_tasks + 1))
    return [
        run_claimers(be, "1 process, every task", [ids], n_tasks),
        run_claimers(
            be,
            f"{n_procs} procs, disjoint shares",
            [ids[i::n_procs] for i in range(n_procs)],
            n_tasks,
        ),
        run_claimers(be, f"{n_procs} procs racing for every task", [ids] * n_procs, n_tasks),
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


def sweep_figures(store: object, seed_query: Callable[[], object], repeat: int) -> dict[str, float]:
    expired_leases = store.expired_leases  # type: ignore[attr-defined]
    lease_counts = store.lease_counts  # type: ignore[attr-defined]
    return {
        "claim-sweep (expired_leases + lease_counts)": time_ms(
            lambda: (expired_leases(), lease_counts()), repeat
        ),
        "  expired_leases": time_ms(expired_leases, repeat),
        "  lease_counts": time_ms(lease_counts, repeat),
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


SweepResult = tuple[dict[str, float], dict[str, float], str, str, float]


def bench_sweep(tmp: Path, rows: int, expired: int, live: int, repeat: int) -> SweepResult:
    db = tmp / "sweep.db"
    t = time.perf_counter()
    build_big_db(db, rows, expired, live)
    build_s = time.perf_counter() - t
    with MissionControl(db, clock=NOW.timestamp) as store:
        found = len(store.expired_leases())
        counts = store.lease_counts()
        if found != expired or counts != (live, expired):
            raise SystemExit(f"sweep DB wrong: {found} expired, counts {counts}")

        def seed() -> object:
            return store.conn.execute(SEED_QUERY, {"now": format_sql_ts(NOW)}).fetchall()

        plan_idx = sweep_plan(db)
        indexed = sweep_figures(store, seed, repeat)
        store.conn.execute("DROP INDEX idx_tasks_lease_until")
        plan_scan = sweep_plan(db)
        if len(store.expired_leases()) != expired:
            raise SystemExit("sweep without the index returned a different answer")
        scanned = sweep_figures(store, seed, repeat)
    return indexed, scanned, plan_idx, plan_scan, build_s


def bench_sweep_pg(be: Backend, rows: int, expired: int, live: int, repeat: int) -> SweepResult:
    """The same table on Postgres (timestamptz, the fleet's partial index), same spread."""
    t = time.perf_counter()
    with be.store():
        pass
    exp_step, live_step = rows // expired, rows // live
    be.sql(
        "INSERT INTO tasks(id, title, status, created_at, updated_at, lease_holder, lease_until)"
        f" OVERRIDING SYSTEM VALUE SELECT n, 'task ' || n, 'open', :now, :now,"
        f"  CASE WHEN n % {exp_step} = 0 OR n % {live_step} = 1 THEN 'bench:' || (n % 97) END,"
        f"  CASE WHEN n % {exp_step} = 0 THEN :now - make_interval(secs => 1 + n % 3600)"
        f"   WHEN n % {live_step} = 1 THEN :now + make_interval(secs => 1 + n % 3600) END"
        f" FROM generate_series(1, {rows}) n".replace("%", "%%").replace("%%(now)s", "%(now)s"),
        {"now": NOW},
    )
    be.sql("ANALYZE tasks")
    build_s = time.perf_counter() - t
    explain = (
        "EXPLAIN SELECT id, title, lease_holder, lease_until FROM tasks WHERE lease_holder IS"
        " NOT NULL AND lease_holder <> '' AND lease_until <= :now ORDER BY lease_until, id"
    )
    with be.store() as store:
        found = len(store.expired_leases())  # type: ignore[attr-defined]
        counts = store.lease_counts()  # type: ignore[attr-defined]
        if found != expired or counts != (live, expired):
            raise SystemExit(f"Postgres sweep DB wrong: {found} expired, counts {counts}")
        conn = store.conn  # type: ignore[attr-defined]

        def seed() -> object:
            # The documented twin of the seed's query (docs/mission-control.md).
            return conn.execute(SEED_QUERY.replace(":now", "%(now)s"), {"now": NOW}).fetchall()

        def plan() -> str:
            return "; ".join(str(r[0]).strip() for r in be.sql(explain, {"now": NOW})[:3])

        plan_idx = plan()
        indexed = sweep_figures(store, seed, repeat)
        be.sql("DROP INDEX idx_tasks_lease_until")
        be.sql("ANALYZE tasks")
        plan_scan = plan()
        if len(store.expired_leases()) != expired:  # type: ignore[attr-defined]
            raise SystemExit("Postgres sweep without the index returned a different answer")
        scanned = sweep_figures(store, seed, repeat)
    return indexed, scanned, plan_idx, plan_scan, build_s


# (c) hook cold start ---------------------------------------------------------------------------
def cold_start_ms(be: Backend, runs: int) -> tuple[float, float]:
    """(median, best) wall time of a fresh `fleet mc claim-status 1 --db TARGET` process.
    Interleaved by the caller with the other backend so both see the same background load."""
    fleet = Path(sys.executable).parent / "fleet"
    argv = [str(fleet), "mc", "claim-status", "1", "--db", be.target]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "ALAI_MC"))}
    env.update(be.env)
    samples = []
    for i in range(runs + 1):
        t = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        ms = (time.perf_counter() - t) * 1000
        if done.returncode != 0:
            raise SystemExit(f"claim-status failed on {be.name}: {done.stderr.strip()}")
        if i:  # the first run fills the page cache
            samples.append(ms)
    return statistics.median(samples), min(samples)


def cold_starts(backends: list[Backend], rounds: int) -> dict[str, tuple[float, float]]:
    """Alternate the backends in rounds of 5 runs (a burst of load hits both alike)."""
    samples: dict[str, list[float]] = {be.name: [] for be in backends}
    for _ in range(rounds):
        for be in backends:
            median, _best = cold_start_ms(be, 5)
            samples[be.name].append(median)
    return {n: (statistics.median(xs), min(xs)) for n, xs in samples.items()}


# report ----------------------------------------------------------------------------------------
def print_claims(runs: list[ClaimRun], n_tasks: int) -> None:
    base = runs[0].claims_per_s
    print(f"\n(a) claim throughput: {n_tasks:,} tasks, one CAS statement per attempt")
    print(
        f"{'scenario':<42} {'procs':>5} {'attempts':>9} {'won':>7} {'wall s':>7}"
        f" {'claims/s':>9} {'attempts/s':>10} {'vs SQLite 1':>11}"
    )
    for r in runs:
        print(
            f"{r.name:<42} {r.procs:>5} {r.attempts:>9,} {r.won:>7,} {r.wall_s:>7.2f}"
            f" {r.claims_per_s:>9,.0f} {r.attempts_per_s:>10,.0f}"
            f" {r.claims_per_s / base:>10.2f}x"
        )
    print("(every race checked: each task won exactly once)")


def print_sweep(name: str, result: SweepResult, rows: int, expired: int, live: int) -> float:
    indexed, scanned, plan_idx, plan_scan, build_s = result
    repeat = 5
    print(
        f"\n(b) {name} claim-sweep on {rows:,} tasks ({expired:,} expired, {live:,} live,"
        f" {rows - expired - live:,} free; built in {build_s:.1f} s); median of {repeat}"
    )
    print(f"{'query':<45} {'indexed ms':>10} {'no index ms':>11} {'ratio':>8}")
    for q, ms in indexed.items():
        print(f"{q:<45} {ms:>10.2f} {scanned[q]:>11.2f} {scanned[q] / ms:>7.0f}x")
    print(f"plan with idx_tasks_lease_until: {plan_idx}")
    print(f"plan after DROP INDEX:           {plan_scan}")
    return indexed["claim-sweep (expired_leases + lease_counts)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~1 min)")
    parser.add_argument("--worker", nargs=2, metavar=("DB", "ACTOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ids = json.loads(sys.stdin.readline())
        worker(args.worker[0], args.worker[1], ids)
        return

    n_tasks = 2_000 if args.quick else 10_000
    rows = 100_000 if args.quick else 1_000_000
    expired, live, procs, repeat = 1_000, 10_000, 8, 5
    t_total = time.perf_counter()
    server = PgServer.start_new()
    try:
        version = server.bin_dir.parent.name
        print(
            f"alai-fleet claim bench ({'quick' if args.quick else 'full'}): sqlite "
            f"{sqlite3.sqlite_version}, postgres {version} (local, 127.0.0.1), python "
            f"{platform.python_version()}, {os.cpu_count()} cpus, {platform.system()}, "
            f"load {os.getloadavg()[0]:.1f}"
        )
        with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp_name:
            tmp = Path(tmp_name)
            pw = server.write_password_file(tmp / "pg.password")
            lite, pg = sqlite_backend(tmp / "claims.db"), pg_backend(server, pw)
            runs = bench_claims(lite, n_tasks, procs) + bench_claims(pg, n_tasks, procs)
            print_claims(runs, n_tasks)

            sweeps = {
                "SQLite": bench_sweep(tmp, rows, expired, live, repeat),
                "Postgres": bench_sweep_pg(pg_backend(server, pw), rows, expired, live, repeat),
            }
            ms = {n: print_sweep(n, r, rows, expired, live) for n, r in sweeps.items()}
            print(f"Postgres/SQLite indexed claim-sweep: {ms['Postgres'] / ms['SQLite']:.1f}x")
            for n, v in ms.items():
                print(
                    f"target indexed claim-sweep < 50 ms ({n}): "
                    f"{'met' if v < 50 else 'MISSED'} ({v:.2f} ms)"
                )

            cold = cold_starts([lite, pg], 4)
            print(
                "\n(c) `fleet mc claim-status 1` cold start (fresh process); 4 alternating rounds"
                " of 5 runs: median of the round medians, best round"
            )
            for n, (median, best) in cold.items():
                print(f"  {n:<9} {median:7.1f} ms  (best round {best:.1f} ms)")
            ratio = cold["Postgres"][0] / cold["SQLite"][0]
            print(f"  Postgres/SQLite: {ratio:.2f}x")
            verdict = "met" if cold["Postgres"][0] <= 150 else "MISSED"
            print(f"target claim-status against Postgres <= 150 ms: {verdict}")
    finally:
        server.destroy()
    print(f"\ntotal {time.perf_counter() - t_total:.1f} s")


if __name__ == "__main__":
    main()

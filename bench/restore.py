"""The DR drill with honest figures: P0 DBs replicated by real `litestream replicate` to Azurite
(abs), written at 10 tx/s each (plus ``--idle N`` DBs never written), each row carrying its
commit time. Two standbys read the same replicas in the same run:

- restore-loop (`fleet run restore-loop`, its defaults: intervals from the default budget, fast
  follow when the primary's /health stops answering);
- raw `litestream restore -f` followers, one per DB, at today's P0 interval (1 s).

Both start after the primary has been writing for ``--head-start`` seconds (30), as a standby
starts beside a running primary, so the window shows the steady state (the whole run, start-up
included, is printed too).

Each client reaches Azurite through its own counting forwarder, so the primary's PUTs and each
standby's LISTs are counted apart (the request lines Azurite's debug log shows). It reports
staleness during the window, CPU per component, LIST/PUT counts extrapolated to a day against
the printed estimates; then the primary dies (writer and replicate SIGKILLed, /health gone),
staleness 10 s later (fast follow), `fleet restore promote --all` (wall RTO from the command's
start) and the raw followers stopped in its place, and for every DB the true RPO from rows (the
primary's newest commit time minus the promoted copy's; rows lost), exact-prefix and quick_check.

    .venv/bin/python bench/restore.py            # 17 P0 DBs, 60 s window
    .venv/bin/python bench/restore.py --quick    # 6 DBs, 20 s window
    .venv/bin/python bench/restore.py --idle 17  # and 17 idle DBs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
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

from bench.restore_probes import (  # noqa: E402
    daemon_counters,
    newest_row_ts,
    read_rows,
    summary,
    tree_cpu,
    wait_for,
)
from daemons.restore_loop.cost import (  # noqa: E402
    DAY_S,
    CostItem,
    lists_per_poll,
    monthly_cost,
)
from daemons.restore_loop.follower import quick_check  # noqa: E402
from daemons.restore_loop.litestream import find_litestream  # noqa: E402
from tests.fakes.azurite import Azurite, CountingProxy  # noqa: E402
from tests.fakes.http import FakeHTTPServer  # noqa: E402
from tests.fakes.litestream_primary import AZURITE_ACCOUNT, AZURITE_KEY, Primary, Standby  # noqa: E402

FLEET = Path(sys.executable).parent / "fleet"
RAW_INTERVAL = "1s"
TODAY_EXAMPLE_LIST_PER_DAY = 15.9e6  # the example tier table at P0 1 s / P1 15 s (issue 16)


# raw followers (their own process: `restore.py --raw-followers CONFIG DIR DB...`) -------------
def raw_followers(config: str, out_dir: str, dbs: list[str]) -> None:
    """One `litestream restore -f` per DB, restarted fresh (output removed) when it exits, as
    the simplest supervisor would; on SIGTERM stop and reap them (so this process's wait4
    counts their CPU)."""
    binary = str(find_litestream(""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def start(db: str) -> subprocess.Popen[bytes]:
        target = out / Path(db).name
        for leftover in (target, Path(f"{target}-txid"), Path(f"{target}.tmp")):
            leftover.unlink(missing_ok=True)
        return subprocess.Popen(
            [
                *(binary, "restore", "-config", config, "-f", "-follow-interval", RAW_INTERVAL),
                *("-o", str(target), db),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    children = {db: start(db) for db in dbs}
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(1.0):
        for db, child in children.items():
            if child.poll() is not None:
                children[db] = start(db)
    for child in children.values():
        child.terminate()
    for child in children.values():
        child.wait()


def stop_with_rusage(proc: subprocess.Popen[Any]) -> float:
    """SIGTERM ``proc``, reap it with wait4, return its CPU seconds and its reaped children's.
    NaN when it was already reaped elsewhere (never poll() it before: that reaps it)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        _pid, _status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return float("nan")
    proc.returncode = 0
    return float(usage.ru_utime + usage.ru_stime)


class Sampler:
    """Staleness of copies (reference newest row ts minus the copy's), 4 times a second."""

    def __init__(self, copies: dict[str, Path], reference: Any) -> None:
        self.copies, self.reference = copies, reference
        self.samples: list[tuple[float, float]] = []  # (monotonic, staleness)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, path in self.copies.items():
                ts, ref = newest_row_ts(path), self.reference(name)
                if ts is not None and ref is not None:
                    self.samples.append((time.monotonic(), max(0.0, ref - ts)))


def outcome(copy: Path, primary_rows: list[tuple[int, float]]) -> dict[str, Any]:
    """True RPO and rows lost of one promoted copy against the primary's rows."""
    rows = read_rows(copy)
    prefix = rows == primary_rows[: len(rows)]
    rpo = (primary_rows[-1][1] - rows[-1][1]) if rows and primary_rows else float("nan")
    return {
        "rows": len(rows),
        "lost": len(primary_rows) - len(rows),
        "rpo_s": max(0.0, rpo),
        "prefix": prefix,
        "quick_check": quick_check(copy),
    }


def line(label: str, s: dict[str, float]) -> str:
    return f"  {label:<30}{s['median']:>8.2f}s{s['p95']:>8.2f}s{s['max']:>8.2f}s  (n={s['n']:.0f})"


# the drill -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> None:
    n_active = args.dbs or (6 if args.quick else 17)
    window_s = args.window or (20.0 if args.quick else 60.0)
    work = Path(tempfile.mkdtemp(prefix="restore-bench-"))
    azurite = Azurite(work / "azurite").start()
    azurite.create_container("backups")
    proxies = {k: CountingProxy(azurite.port) for k in ("primary", "restore-loop", "raw")}
    health = FakeHTTPServer(lambda m, p, h, b: (200, {}, {"ok": True, "role": "primary"})).start()
    active = [f"p0-{i:02d}" for i in range(n_active)]
    names = active + [f"idle-{i:02d}" for i in range(args.idle)]
    primary = Primary(
        work / "anvil",
        names,
        sync_interval="1s",
        abs_endpoint=proxies["primary"].endpoint(AZURITE_ACCOUNT),
    ).create()
    procs: list[subprocess.Popen[Any]] = []
    try:
        for name in names:  # some history (~0.5 MB a DB), commit times included
            conn = sqlite3.connect(primary.db_path(name))
            conn.executemany(
                "INSERT INTO t(ts, payload) VALUES (?, ?)",
                [(time.time(), "x" * 200) for _ in range(2000)],
            )
            conn.commit()
            conn.close()
        primary.start_replicate()
        primary.start_writer(rate_per_s=10, max_s=window_s + 900, only=active)
        head_start = 5.0 if args.quick else args.head_start
        print(
            f"drill: {n_active} P0 DBs at 10 tx/s + {args.idle} idle, abs on Azurite, "
            f"window {window_s:g}s, primary sync-interval 1s, writing {head_start:g}s before "
            f"the standbys start; raw followers at {RAW_INTERVAL}",
            flush=True,
        )
        # A standby starts beside a primary that has been running: its first listings then
        # hold the DBs' recent uploads (how restore-loop learns a busy DB's upload rate).
        time.sleep(head_start)
        fleet_root = work / "forge"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "NOTIFY_"))}
        env.update(
            FLEET_FLEET__ROOT=str(fleet_root),
            FLEET_FLEET__HOST="forge",
            FLEET_SLACK__BASE_URL="http://127.0.0.1:9/api/",
            HOME=str(work / "home"),
        )
        standby = Standby(env, fleet_root, work, primary, tiers=("P0",))
        for key in [k for k in standby.env if k.startswith("FLEET_RESTORE_LOOP__")]:
            del standby.env[key]  # restore-loop's own defaults
        standby.env.update(
            LITESTREAM_AZURE_ACCOUNT_KEY=AZURITE_KEY,
            FLEET_RESTORE_LOOP__METRICS_PORT="0",
            FLEET_RESTORE_LOOP__PRIMARY_HEALTH_URL=f"{health.base_url}/health",
        )
        config = fleet_root / "config" / "litestream-restore.yml"
        text = config.read_text()
        primary_ep = proxies["primary"].endpoint(AZURITE_ACCOUNT)
        config.write_text(
            text.replace(primary_ep, proxies["restore-loop"].endpoint(AZURITE_ACCOUNT))
        )
        raw_config = work / "raw.yml"
        raw_config.write_text(text.replace(primary_ep, proxies["raw"].endpoint(AZURITE_ACCOUNT)))
        follow = subprocess.Popen(
            [str(FLEET), "run", "restore-loop"],
            env=standby.env,
            cwd=work,
            stdout=(work / "restore-loop.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        procs.append(follow)
        raw_dir = work / "raw"
        raw = subprocess.Popen(
            [sys.executable, __file__, "--raw-followers", str(raw_config), str(raw_dir)]
            + [str(standby.copy(n)) for n in names],
            env=standby.env,
        )
        procs.append(raw)
        ours = {n: standby.copy(n) for n in names}
        theirs = {n: raw_dir / f"{n}.db" for n in names}
        started = time.monotonic()
        ready = wait_for(
            lambda: all(newest_row_ts(p) is not None for p in [*ours.values(), *theirs.values()]),
            300,
        )
        print(f"both standbys restored every DB after {time.monotonic() - started:.1f}s")
        if not ready:
            print("warning: not every copy was restored; figures cover the ones that were")
        time.sleep(3.0)  # let start-up restores settle before the window

        # the window: primary healthy ---------------------------------------------------------
        newest = {n: primary.db_path(n) for n in names}
        live_ref = lambda n: newest_row_ts(newest[n])  # noqa: E731
        cpu0 = {"restore-loop": tree_cpu(follow.pid), "raw": tree_cpu(raw.pid)}
        counters0 = daemon_counters(work / "restore-loop.log")
        count0 = {k: p.snapshot() for k, p in proxies.items()}
        samplers = {
            "restore-loop": Sampler({n: ours[n] for n in active}, live_ref).start(),
            "raw": Sampler({n: theirs[n] for n in active}, live_ref).start(),
        }
        t0 = time.monotonic()
        time.sleep(window_s)
        window = time.monotonic() - t0
        counts = {k: p.snapshot() - count0[k] for k, p in proxies.items()}
        cpu1 = {"restore-loop": tree_cpu(follow.pid), "raw": tree_cpu(raw.pid)}
        counters1 = daemon_counters(work / "restore-loop.log")
        events = {k: v - counters0.get(k, 0.0) for k, v in counters1.items()}
        stale = {k: summary([s for _, s in v.stop()]) for k, v in samplers.items()}
        status = subprocess.run(
            [str(FLEET), "restore", "status", "--json"],
            env=standby.env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        bill = json.loads(status.stdout or "{}").get("bill", {}) if status.stdout else {}
        rates = {
            str(r.get("db")): r.get("writes_per_s")
            for r in json.loads(status.stdout or "{}").get("databases", [])
        }
        intervals = sorted(
            {
                r.get("follow_interval_s")
                for r in json.loads(status.stdout or "{}").get("databases", [])
            }
            - {None}
        )

        # the primary dies --------------------------------------------------------------------
        primary.die()
        health.stop()
        died = time.monotonic()
        final = {n: read_rows(primary.db_path(n)) for n in names}
        dead_ref = lambda n: final[n][-1][1] if final[n] else None  # noqa: E731
        after = Sampler({n: ours[n] for n in active}, dead_ref).start()
        time.sleep(10.0)
        after_samples = after.stop()
        late = summary([s for t, s in after_samples if t - died >= 8.0])

        t_raw = time.monotonic()
        # Raw followers first (they had the same 10 s): stopped, their copies are the result;
        # then promote runs without 1 s polls loading the blob endpoint beside it.
        raw_cpu_total = stop_with_rusage(raw)
        raw_out = {n: outcome(theirs[n], final[n]) for n in names}
        raw_rto = time.monotonic() - t_raw
        t_cmd = time.monotonic()
        promote = subprocess.run(
            [str(FLEET), "restore", "promote", "--all", "--no-role", "--json"],
            env=standby.env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )
        rto = time.monotonic() - t_cmd
        report: dict[str, Any] = {}
        try:
            report = json.loads(promote.stdout)
        except ValueError:
            print("promote output:", promote.stdout[-1500:], promote.stderr[-1500:])
        ours_out = {n: outcome(ours[n], final[n]) for n in names}
        ours_cpu_total = stop_with_rusage(follow)
        procs.clear()
        report_figures(
            args,
            window=window,
            counts=counts,
            cpu=(cpu0, cpu1),
            events=events,
            totals=(ours_cpu_total, raw_cpu_total, time.monotonic() - started),
            stale=stale,
            late=late,
            bill=bill,
            intervals=intervals,
            rates=rates,
            n_dbs=len(names),
            promote=(promote.returncode, rto, report),
            outcomes=(ours_out, raw_out, raw_rto),
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        primary.close()
        health.stop()
        for p in proxies.values():
            p.close()
        azurite.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report_figures(args: argparse.Namespace, **f: Any) -> None:
    window, counts = f["window"], f["counts"]
    cpu0, cpu1 = f["cpu"]
    ours_total, raw_total, wall = f["totals"]
    print(f"\nstaleness while the primary is healthy ({window:.0f}s; its newest row - copy's):")
    print(f"  {'':<30}{'median':>9}{'p95':>9}{'max':>9}")
    iv = ", ".join(f"{i:g}s" for i in f["intervals"]) or "?"
    print(line(f"restore-loop (budget: {iv})", f["stale"]["restore-loop"]))
    print(line(f"raw followers ({RAW_INTERVAL})", f["stale"]["raw"]))
    print("  (the standby's staleness is not the RPO: promote catches up; see below)")

    print(f"\nblob requests over the window, extrapolated to a day ({window:.0f}s):")
    per_day = {k: {m: n * DAY_S / window for m, n in c.items()} for k, c in counts.items()}
    ours_list, raw_list = per_day["restore-loop"].get("LIST", 0), per_day["raw"].get("LIST", 0)
    est = float(f["bill"].get("standby_list_per_day", float("nan")))
    # The raw followers' estimate with the same model (measured write rates; idle: 9 LISTs).
    raw_est = sum(
        DAY_S * lists_per_poll(CostItem("P0", "follow", 1.0, rate, 1.0))
        for rate in f["rates"].values()
    )
    print(
        f"  restore-loop: {ours_list:>12,.0f} LIST/day measured; printed estimate {est:,.0f} "
        f"(measured/estimate {ours_list / est if est else float('nan'):.2f})"
    )
    print(
        f"  raw followers: {raw_list:>11,.0f} LIST/day measured; the same model at 1 s "
        f"gives {raw_est:,.0f} (measured/estimate {raw_list / raw_est:.2f})"
    )
    print(f"  restore-loop / raw: {ours_list / max(raw_list, 1):.2f}x LISTs")
    put_est = float(f["bill"].get("primary_put_per_day", float("nan")))
    put = per_day["primary"].get("PUT", 0)
    print(
        f"  primary uploads: {put:,.0f} PUT/day measured; printed estimate {put_est:,.0f} "
        f"(from the write rates restore-loop measured; {put / put_est if put_est else 0:.2f})"
    )
    print(
        f"  at 0.05 EUR per 10,000: restore-loop {monthly_cost(ours_list, 0.05):,.2f} EUR/month, "
        f"raw {monthly_cost(raw_list, 0.05):,.2f} EUR/month for these {f['n_dbs']} DBs"
    )

    print("\nrestore-side CPU over the window (/proc, process + live children):")
    per = {}
    for k in ("restore-loop", "raw"):
        own = cpu1[k]["self"] - cpu0[k]["self"]
        kids = cpu1[k]["children"] - cpu0[k]["children"]
        per[k] = own + kids
        print(
            f"  {k:<13} {100 * per[k] / window:5.1f}% of a core "
            f"(python/supervisor {100 * own / window:4.1f}%, "
            f"litestream {100 * kids / window:4.1f}%)"
        )
    ended = cpu1["restore-loop"]["ended"] - cpu0["restore-loop"]["ended"]
    ev = f["events"]
    restarts = ", ".join(f"{k[9:]} {v:.0f}" for k, v in sorted(ev.items()) if k[:9] == "restarts:")
    print(
        f"  restore-loop's litestream: {100 * ended / window:.1f}% in processes that ended in "
        f"the window ({ev.get('listings', 0):.0f} listings; follower restarts: "
        f"{restarts or 'none'})"
    )
    print(f"  restore-loop / raw: {per['restore-loop'] / max(per['raw'], 1e-6):.2f}x")
    print(
        f"  whole run incl. start-up and promote (wait4): restore-loop {ours_total:.1f}s, "
        f"raw {raw_total:.1f}s CPU over {wall:.0f}s"
    )
    late = f["late"]
    print(
        f"\nafter the primary died: restore-loop staleness 8-10 s later (fast follow): "
        f"p95 {late['p95']:.2f}s, max {late['max']:.2f}s (n={late['n']:.0f})"
    )

    code, rto, report = f["promote"]
    ours, raw, raw_rto = f["outcomes"]
    promoted = {d["db"]: d for d in report.get("dbs", []) if d.get("status") == "promoted"}
    print(f"\npromote --all: exit {code}, {len(promoted)}/{len(ours)} promoted")
    print(
        f"  RTO wall (command start to exit): {rto:.2f}s; "
        f"its own figure {report.get('rto_s', 0):.2f}s"
    )
    print(f"  raw followers in its place: stopped and checked in {raw_rto:.2f}s")
    for label, out in (("restore-loop promoted", ours), ("raw followers", raw)):
        rpos = summary([o["rpo_s"] for o in out.values()])
        lost = sum(o["lost"] for o in out.values())
        ok = sum(1 for o in out.values() if o["prefix"] and o["quick_check"] == "ok")
        print(
            f"  {label:<22} true RPO median {rpos['median']:.2f}s p95 {rpos['p95']:.2f}s "
            f"max {rpos['max']:.2f}s; rows lost {lost}; "
            f"exact prefix + quick_check ok {ok}/{len(out)}"
        )
    gaps = [
        abs(ours[n]["rpo_s"] - d["rpo_s"]) <= (d.get("rpo_resolution_s") or 0)
        for n, d in promoted.items()
        if d.get("rpo_s") is not None
    ]
    print(
        "  promote's reported RPO within its stated resolution of the true one: "
        f"{sum(gaps)}/{len(gaps)}"
    )

    rpo_p95 = summary([o["rpo_s"] for o in ours.values()])["p95"]
    cpu_ratio = per["restore-loop"] / max(per["raw"], 1e-6)
    all_ok = all(o["prefix"] and o["quick_check"] == "ok" for o in ours.values())
    checks = [
        ("estimate within 10% of the Azurite count", est > 0 and abs(ours_list / est - 1) <= 0.10),
        ("true RPO p95 <= 1 s", rpo_p95 <= 1.0),
        ("wall RTO of promote --all <= 5 s", rto <= 5.0),
        ("every promoted DB an exact prefix, quick_check ok", all_ok),
        ("restore-side CPU <= 1.2x raw", cpu_ratio <= 1.2),
        ("staleness p95 <= 2 s within 10 s of the primary's death", late["p95"] <= 2.0),
    ]
    print("\ntargets:")
    for label, met in checks:
        print(f"  {'met   ' if met else 'MISSED'} {label}")
    print(
        f"  (LIST target, example tier table at the default budget: see `fleet litestream "
        f"config --role standby`; today's defaults {TODAY_EXAMPLE_LIST_PER_DAY:,.0f} LIST/day)"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-followers":
        config, out_dir, *dbs = sys.argv[2:]
        raw_followers(config, out_dir, dbs)
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 DBs, 20 s window")
    parser.add_argument("--window", type=float, default=None, help="measurement window (s)")
    parser.add_argument("--dbs", type=int, default=None, help="P0 DBs written (17)")
    parser.add_argument("--idle", type=int, default=0, help="P0 DBs never written (0)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--head-start",
        type=float,
        default=30.0,
        help="seconds the primary writes before the standbys start (30; --quick 5)",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()

"""email-reactor cycle benchmark.

(a) One cycle over 1,000 new emails (60% needing the LLM) against a fake LLM with 100 ms
    latency: wall time, against the bound ceil(llm_emails / concurrency) x 0.1 s and against
    the seed's sequential design (one LLM call at a time) measured in the same run.
(b) Selecting new emails from a 200,000-row inbox (the query every cycle starts with),
    against the same query without the reactor's (status, created_at) index.

    .venv/bin/python bench/email_reactor.py [--quick]

Prints figures; asserts nothing. Everything runs on 127.0.0.1 and in a temp dir.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.email_fixtures import FOREIGN_SCHEMA, sql_ts
from tests.fakes.llm import FakeLLM

FLEET = Path(sys.executable).parent / "fleet"


def build_inbox(path: Path, total: int, llm_share: float) -> int:
    """``total`` new emails; ``llm_share`` of them reach the LLM, the rest are newsletters."""
    conn = sqlite3.connect(path)
    conn.execute(FOREIGN_SCHEMA)
    now = datetime.now(UTC)
    llm_count = int(total * llm_share)
    rows = []
    for i in range(total):
        needs_llm = i < llm_count
        sender = (
            f"person{i}@unknown{i % 50}.example.net"
            if needs_llm
            else f"newsletter@n{i}.example.com"
        )
        subject = f"Contract question {i}" if needs_llm and i % 2 else f"Update {i}"
        rows.append(
            (
                "ceo@example.com",
                sender,
                f"Sender {i}",
                "ceo@example.com",
                subject,
                "Body text",
                "[]",
                "{}",
                "ACTION",
                "new",
                sql_ts(now - timedelta(seconds=total - i)),
            )
        )
    conn.executemany(
        "INSERT INTO emails(account, from_addr, from_name, to_addr, subject, body_text,"
        " attachments, headers, classification, status, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()
    return llm_count


def run_cycle(root: Path, llm_url: str, concurrency: int, total: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(
        {
            "FLEET_FLEET__ROOT": str(root),
            "FLEET_EMAIL_REACTOR__LLM_URL": llm_url,
            "FLEET_EMAIL_REACTOR__LLM_CONCURRENCY": str(concurrency),
            "FLEET_EMAIL_REACTOR__MAX_EMAILS_PER_CYCLE": str(total),
            # one cycle decides everything: the per-cycle task cap is not what is measured
            "FLEET_EMAIL_REACTOR__MAX_TASKS_PER_CYCLE": str(max(1, total)),
            "FLEET_EMAIL_REACTOR__CYCLE_TIMEOUT_S": "3600",
            "FLEET_SLACK__BASE_URL": "http://127.0.0.1:9/api/",
        }
    )
    start = time.perf_counter()
    res = subprocess.run(
        [str(FLEET), "run", "email-reactor", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"cycle failed:\n{res.stdout[-3000:]}")
    return wall


def startup_overhead(root: Path) -> float:
    """A --once run with nothing to do: process start, config, DB open; subtracted below."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update({"FLEET_FLEET__ROOT": str(root), "FLEET_SLACK__BASE_URL": "http://127.0.0.1:9/api/"})
    start = time.perf_counter()
    subprocess.run(
        [str(FLEET), "run", "email-reactor", "--once"],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return time.perf_counter() - start


def cycle_bench(total: int, latency: float) -> None:
    concurrency = 4
    with tempfile.TemporaryDirectory() as tmp, FakeLLM(latency_s=latency) as llm:
        figures = {}
        empty = Path(tmp) / "empty"
        (empty / "databases").mkdir(parents=True)
        build_inbox(empty / "databases/email-inbox.db", 0, 0)
        overhead = startup_overhead(empty)
        for label, conc in (("concurrent (4)", concurrency), ("sequential (seed)", 1)):
            root = Path(tmp) / label.split()[0]
            (root / "databases").mkdir(parents=True)
            llm_count = build_inbox(root / "databases/email-inbox.db", total, 0.6)
            figures[label] = run_cycle(root, llm.url, conc, total) - overhead
        bound = math.ceil(llm_count / concurrency) * latency
        conc_s, seq_s = figures["concurrent (4)"], figures["sequential (seed)"]
        print(
            f"(a) one cycle: {total} new emails, {llm_count} to the LLM at {latency * 1000:.0f}"
            f" ms each (process start-up {overhead:.2f} s subtracted)"
        )
        print(f"    {'design':<22}{'wall s':>9}{'vs bound':>10}{'vs sequential':>15}")
        print(f"    {'bound ceil(n/4)*lat':<22}{bound:>9.2f}{1.0:>10.2f}{bound / seq_s:>15.2f}")
        print(
            f"    {'concurrent (4)':<22}{conc_s:>9.2f}{conc_s / bound:>10.2f}"
            f"{conc_s / seq_s:>15.2f}"
        )
        print(f"    {'sequential (seed)':<22}{seq_s:>9.2f}{seq_s / bound:>10.2f}{1.0:>15.2f}")
        print(
            f"    target: concurrent within 1.3x of the bound -> "
            f"{'met' if conc_s <= 1.3 * bound else 'NOT met'} ({conc_s / bound:.2f}x)"
        )


def select_bench(rows: int) -> None:
    from daemons.email_reactor.store import InboxStore

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inbox.db"
        conn = sqlite3.connect(path)
        conn.execute(FOREIGN_SCHEMA)
        now = datetime.now(UTC)
        # A realistic inbox: most mail old or already read; ~200 new and undecided.
        conn.executemany(
            "INSERT INTO emails(account, from_addr, subject, classification, status, created_at)"
            " VALUES ('a@example.com', ?, 's', 'ACTION', ?, ?)",
            (
                (
                    f"s{i}@example.net",
                    "new" if i % 1000 == 0 else "read",
                    sql_ts(now - timedelta(minutes=(rows - i))),
                )
                for i in range(rows)
            ),
        )
        conn.commit()
        conn.close()
        import asyncio

        async def measure() -> tuple[float, int]:
            store = await InboxStore(path).open()
            since = sql_ts(now - timedelta(days=30))
            best = math.inf
            n = 0
            for _ in range(7):
                start = time.perf_counter()
                n = len((await store.new_emails(since, 500)).emails)
                best = min(best, time.perf_counter() - start)
            await store.close()
            return best, n

        indexed, found = asyncio.run(measure())
        conn = sqlite3.connect(path)
        conn.execute("DROP INDEX idx_emails_reactor_new")
        conn.commit()
        conn.close()

        async def measure_noindex() -> float:
            store = InboxStore(path)
            store_db = await store.open(migrate=False)
            since = sql_ts(now - timedelta(days=30))
            best = math.inf
            for _ in range(7):
                start = time.perf_counter()
                await store_db.new_emails(since, 500)
                best = min(best, time.perf_counter() - start)
            await store_db.close()
            return best

        plain = asyncio.run(measure_noindex())
        print(f"(b) select new emails from a {rows:,}-row inbox ({found} new), best of 7")
        print(
            f"    with idx_emails_reactor_new {indexed * 1000:8.2f} ms"
            f"   without {plain * 1000:8.2f} ms"
            f"   ratio {plain / indexed:6.1f}x   target < 50 ms: "
            f"{'met' if indexed < 0.05 else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    total = 200 if args.quick else 1000
    rows = 50_000 if args.quick else 200_000
    cycle_bench(total, 0.1)
    select_bench(rows)


if __name__ == "__main__":
    main()

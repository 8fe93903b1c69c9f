"""Outbox benchmarks: the SQLite outbox against the Postgres one, in the same run.

For each backend: enqueue rate (one process, sequential), delivery rate (senders draining
pushes into an in-memory sink: ready + rate check + claim + mark_sent per row), with 1 and 4
senders at once (separate connections), and the cost of a repeat enqueue (dedup hit). Starts a
throwaway Postgres server (tests/pg_support.py: initdb in a temp dir, 127.0.0.1) unless
``--url`` names one (its password from ``$ALAI_MC_PASSWORD_FILE``). Prints figures; asserts
only that every row was delivered exactly once.

    .venv/bin/python bench/outbox.py            # 2000 messages
    .venv/bin/python bench/outbox.py --quick    # 300 messages
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.notify import Message, OutboxRow, OutboxSender, OutboxStore  # noqa: E402
from shared.notify.outbox_postgres import PostgresOutbox  # noqa: E402
from shared.notify.outbox_sqlite import SqliteOutbox  # noqa: E402
from shared.sections import NotifySection  # noqa: E402


class CountingSink:
    name = "slack"
    available = True

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    async def send(self, row: OutboxRow) -> None:
        self.sent[row.dedup_key] += 1

    async def close(self) -> None:
        pass


class QuietLog:
    def _drop(self, *_args: Any, **_kw: Any) -> None:
        pass

    info = warning = error = _drop


SETTINGS = NotifySection(rate_per_minute=1_000_000, burst=1_000_000)


async def _enqueue(ob: OutboxStore, n: int, prefix: str) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await ob.enqueue(Message("#ceo", f"m{i}", f"{prefix}:{i}", kind="push"))
    return n / (time.perf_counter() - t0)


async def _deliver(make: Any, n: int, senders: int, prefix: str) -> float:
    stores = [await make().open() for _ in range(senders)]
    sink = CountingSink()
    try:
        await _enqueue(stores[0], n, prefix)
        log = QuietLog()
        workers = [
            OutboxSender(ob, {"slack": sink}, SETTINGS, log=log, owner=f"s{i}", batch=100)
            for i, ob in enumerate(stores)
        ]
        t0 = time.perf_counter()

        async def run(sender: OutboxSender) -> None:
            while await sender.step():
                pass

        await asyncio.gather(*(run(s) for s in workers))
        # a sender may stop while another still holds rows: finish what is left
        while await workers[0].step():
            pass
        elapsed = time.perf_counter() - t0
    finally:
        for ob in stores:
            await ob.close()
    mine = {k: v for k, v in sink.sent.items() if k.startswith(prefix)}
    if len(mine) != n or set(mine.values()) != {1}:
        raise SystemExit(f"{prefix}: {len(mine)} of {n} delivered, counts {set(mine.values())}")
    return n / elapsed


async def _dedup_hits(ob: OutboxStore, n: int, prefix: str) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        if await ob.enqueue(Message("#ceo", f"m{i}", f"{prefix}:{i}", kind="push")):
            raise SystemExit("a repeat was stored")
    return n / (time.perf_counter() - t0)


async def bench(name: str, make: Any, n: int) -> dict[str, float]:
    ob = await make().open()
    try:
        figures = {"enqueue/s": await _enqueue(ob, n, f"{name}-e")}
        figures["dedup hit/s"] = await _dedup_hits(ob, n, f"{name}-e")
    finally:
        await ob.close()
    figures["deliver/s 1 sender"] = await _deliver(make, n, 1, f"{name}-d1")
    figures["deliver/s 4 senders"] = await _deliver(make, n, 4, f"{name}-d4")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 messages instead of 2000")
    parser.add_argument("--url", help="an existing postgresql:// URL (no password in it)")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    server = None
    with tempfile.TemporaryDirectory(prefix="outbox-bench") as tmp:
        if args.url:
            url, password = args.url, None
        else:
            from tests.pg_support import PgServer

            server = PgServer.start_new()
            url, password = server.url(server.create_database()), server.password
        try:
            path = Path(tmp) / "outbox.db"
            results = {
                "sqlite": asyncio.run(bench("sqlite", lambda: SqliteOutbox(path), n)),
                "postgres": asyncio.run(
                    bench("postgres", lambda: PostgresOutbox(url, password=password), n)
                ),
            }
        finally:
            if server is not None:
                server.destroy()
    print(f"outbox benchmark, {n} messages per figure (higher is better)")
    print(f"{'':24}{'sqlite':>12}{'postgres':>12}{'pg/sqlite':>12}")
    for key in results["sqlite"]:
        s, p = results["sqlite"][key], results["postgres"][key]
        print(f"{key:24}{s:12.0f}{p:12.0f}{p / s:12.2f}")


if __name__ == "__main__":
    main()

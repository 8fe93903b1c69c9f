"""One "host" in the Mission Control claim races (run as a script, one process per host):
``WORKERS`` threads, each with its own store connection, walk the tasks 1..N in their own
shuffled order and claim each. The store is what this host's own config (``--config``, in its
own fleet root) or ``$ALAI_MC_URL`` selects, as for a real host. Prints ``ready``, waits for a line
on stdin, claims; with ``--until-stopped`` it stops at the next line on stdin (or at the end of
the list). Last line: JSON ``{"won": {holder: [ids]}, "held": n, "reconnects": n}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
from pathlib import Path

from shared.config import load_config
from shared.mission_control import LeaseHeld, McTarget, open_store


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actor", required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--until-stopped", action="store_true")
    ap.add_argument("--config", help="this host's fleet.toml ([mission_control] url)")
    args = ap.parse_args()
    if args.config:
        section = load_config(Path(args.config)).mission_control
        target = McTarget.resolve(
            config_url=section.url, config_db=section.db, password_file=section.password_file
        )
    else:
        target = McTarget.resolve(
            config_db=Path(os.environ.get("FLEET_MISSION_CONTROL__DB", "mission-control.db"))
        )
    stores = [open_store(target, create=False) for _ in range(args.workers)]
    if target.is_postgres:
        for store in stores:
            store._retry_s = 120.0  # type: ignore[attr-defined]  # ride out a restart
    stop = threading.Event()
    won: dict[str, list[int]] = {}
    held = [0] * args.workers
    errors: list[str] = []

    def work(i: int) -> None:
        holder_session = f"w{i}"
        order = list(range(1, args.tasks + 1))
        random.Random(f"{args.actor}:{i}").shuffle(order)
        mine: list[int] = []
        won[f"{args.actor}:{holder_session}"] = mine
        try:
            for task_id in order:
                if stop.is_set():
                    return
                try:
                    stores[i].claim(task_id, args.actor, holder_session, ttl_minutes=60)
                    mine.append(task_id)
                except LeaseHeld:
                    held[i] += 1
        except Exception as exc:  # reported, the test fails on it
            errors.append(f"{type(exc).__name__}: {exc}")

    print("ready", flush=True)
    sys.stdin.readline()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(args.workers)]
    for t in threads:
        t.start()
    if args.until_stopped:
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    for t in threads:
        t.join()
    reconnects = sum(getattr(s, "reconnects", 0) for s in stores)
    for store in stores:
        store.close()
    print(
        json.dumps({"won": won, "held": sum(held), "reconnects": reconnects, "errors": errors}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

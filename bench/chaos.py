"""Chaos soak for the email-reactor (issue 14's reliability figures).

A real `fleet run email-reactor` process triages mail that an ingest thread keeps inserting
(``--mails`` over the first 80% of ``--minutes``), while a driver injects, at random: a write
lock on the inbox DB or on the outbox DB held by another connection for 2-20 s, kill -9 of the
daemon (restarted at once, as the service manager would), LLM stalls (answers held 20-40 s, past
the client's deadline) and 429s. Then the faults stop, the daemon drains, and the run prints:
mails ingested and decided, tasks and duplicate tasks, pushes owed/delivered/duplicated, audit
lines and duplicates, losses, and how many of each fault it injected. Slack is a fake on
127.0.0.1; everything lives in a temp dir.

    .venv/bin/python bench/chaos.py                 # 5,000 mails, 10 minutes
    .venv/bin/python bench/chaos.py --quick         # 500 mails, 1 minute

Targets: 0 lost, 0 duplicate tasks, duplicate pushes <= kills. Prints figures; exits 1 when a
target is missed (so a regression is visible in a log), never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.email_fixtures import FOREIGN_SCHEMA, PARTNERS
from tests.fakes.http import Fault
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack

FLEET = Path(sys.executable).parent / "fleet"


def subject(i: int) -> str:
    return f"Contract proposal {i:05d}" if i % 10 == 0 else f"Question {i:05d}"


def sender(i: int) -> str:
    if i % 25 == 0:
        return "partner.one@example.com"  # a strategic partner: task + push
    return f"person{i}@unknown{i % 40}.example.net"


class Ingest(threading.Thread):
    """email-agent.js: inserts ``total`` mails spread over ``seconds``."""

    def __init__(self, db: Path, total: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.db, self.total, self.seconds = db, total, seconds
        self.inserted = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=60, isolation_level=None)
        start = time.monotonic()
        while self.inserted < self.total and not self.stop.is_set():
            due = int(self.total * min(1.0, (time.monotonic() - start) / self.seconds))
            while self.inserted < max(due, 1) and self.inserted < self.total:
                i = self.inserted
                now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
                try:
                    conn.execute(
                        "INSERT INTO emails(account, from_addr, from_name, to_addr, subject,"
                        " body_text, attachments, headers, classification, status, created_at)"
                        " VALUES ('ceo@example.com', ?, ?, 'ceo@example.com', ?, 'Hello.',"
                        " '[]', '{}', 'ACTION', 'new', ?)",
                        (sender(i), f"Sender {i}", subject(i), now),
                    )
                except sqlite3.OperationalError:
                    break  # locked by the chaos driver: try again shortly
                self.inserted += 1
            self.stop.wait(0.05)
        conn.close()


def hold_lock(db: Path, seconds: float) -> None:
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError:
        pass
    finally:
        conn.close()


class Daemon:
    def __init__(self, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.env, self.cwd, self.log = env, cwd, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: Counter[int] = Counter()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(FLEET), "run", "email-reactor"],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ensure(self) -> None:
        """Restart after an exit of its own (what Restart=on-failure does)."""
        if self.proc is not None and self.proc.poll() is not None:
            self.exits[self.proc.returncode] += 1
            self.start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def counts(root: Path) -> dict[str, int]:
    inbox = sqlite3.connect(root / "databases/email-inbox.db", timeout=60)
    mc = sqlite3.connect(root / "databases/mission-control.db", timeout=60)
    try:
        has = inbox.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'reactor_decisions'"
        ).fetchone()[0]
        decided = (
            inbox.execute("SELECT count(*) FROM reactor_decisions").fetchone()[0] if has else 0
        )
        owed = (
            inbox.execute(
                "SELECT count(*) FROM reactor_decisions WHERE push_key IS NOT NULL"
            ).fetchone()[0]
            if has
            else 0
        )
        refs = [r[0] for r in mc.execute("SELECT source_ref FROM tasks WHERE source = 'email'")]
    except sqlite3.OperationalError:
        return {"decided": -1, "owed": -1, "tasks": -1, "duplicate_tasks": -1}
    finally:
        inbox.close()
        mc.close()
    dup = sum(n - 1 for n in Counter(refs).values() if n > 1)
    return {"decided": decided, "owed": owed, "tasks": len(refs), "duplicate_tasks": dup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="500 mails, 1 minute")
    ap.add_argument("--mails", type=int, default=5000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    mails, minutes = (500, 1.0) if args.quick else (args.mails, args.minutes)
    rng = random.Random(args.seed)
    injected: Counter[str] = Counter()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-chaos-"))
    root = tmp / "root"
    (root / "databases").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    inbox_db = root / "databases/email-inbox.db"
    conn = sqlite3.connect(inbox_db)
    conn.execute(FOREIGN_SCHEMA)
    conn.close()
    with FakeLLM() as llm, FakeSlack() as slack:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLEET_", "NOTIFY_SOCKET", "WATCHDOG_"))
        }
        env.update(
            {
                "HOME": str(tmp / "home"),
                "FLEET_FLEET__ROOT": str(root),
                "FLEET_FLEET__HOST": "chaos",
                "FLEET_SLACK__BASE_URL": slack.base_url,
                "FLEET_SLACK__TOKEN": slack.token,
                "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
                "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "10",
                "FLEET_EMAIL_REACTOR__INTERVAL_S": "1",
                "FLEET_EMAIL_REACTOR__BACKOFF_MAX_S": "5",
                "FLEET_EMAIL_REACTOR__METRICS_PORT": "0",
                "FLEET_EMAIL_REACTOR__DIGEST_TIME": "00:00",
                # the fake Slack takes any rate; the soak measures losses, not Slack's limit
                "FLEET_NOTIFY__RATE_PER_MINUTE": "1200",
                "PYTHONUNBUFFERED": "1",
            }
        )
        daemon = Daemon(env, tmp, tmp / "reactor.log")
        ingest = Ingest(inbox_db, mails, minutes * 60 * 0.8)
        outbox_db = root / "state/outbox.db"
        started = time.monotonic()
        ingest.start()
        daemon.start()
        end = started + minutes * 60
        locks: list[threading.Thread] = []
        while time.monotonic() < end:
            time.sleep(rng.uniform(1.0, 6.0))
            daemon.ensure()
            fault = rng.choice(["lock-inbox", "lock-outbox", "kill", "llm-stall", "llm-429"])
            if fault in ("lock-inbox", "lock-outbox"):
                db = inbox_db if fault == "lock-inbox" else outbox_db
                if not db.exists():
                    continue
                t = threading.Thread(target=hold_lock, args=(db, rng.uniform(2, 20)), daemon=True)
                t.start()
                locks.append(t)
            elif fault == "kill":
                daemon.kill()
            elif fault == "llm-stall":
                llm.inject(Fault(delay_s=rng.uniform(20, 40), name="stall"), times=5)
            else:
                llm.inject(Fault(status=429, headers={"Retry-After": "2"}, name="429"), times=5)
            injected[fault] += 1
        # Faults off: drain. Bounded: a run that cannot finish is reported, not waited on.
        llm.clear_faults()
        for t in locks:
            t.join(timeout=30)
        ingest.stop.set()
        ingest.join(timeout=30)
        drain_deadline = time.monotonic() + 300
        while time.monotonic() < drain_deadline:
            daemon.ensure()
            c = counts(root)
            if c["decided"] >= ingest.inserted and len(slack.texts("#ceo")) >= c["owed"]:
                break
            time.sleep(1)
        daemon.stop()
        ceo = slack.texts("#ceo")
        elapsed = time.monotonic() - started

    c = counts(root)
    audit = root / "state/email-reactor/audit.jsonl"
    ids = (
        [json.loads(line)["email_id"] for line in audit.read_text().splitlines() if line.strip()]
        if audit.exists()
        else []
    )
    pushed = Counter(s for s in (subject(i) for i in range(ingest.inserted)) for t in ceo if s in t)
    dup_pushes = sum(n - 1 for n in pushed.values() if n > 1)
    lost = ingest.inserted - c["decided"]
    undelivered = c["owed"] - len(pushed)
    kills = injected["kill"]
    print(f"chaos soak: {ingest.inserted} mails over {elapsed / 60:.1f} min (seed {args.seed})")
    print("  injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    print(f"  daemon exits of its own: {dict(daemon.exits) or 'none'}")
    print(f"  decided {c['decided']} / {ingest.inserted}  lost {lost}")
    print(f"  tasks {c['tasks']}  duplicate tasks {c['duplicate_tasks']}")
    print(
        f"  pushes owed {c['owed']}  delivered {len(pushed)}  undelivered {undelivered}  "
        f"duplicate pushes {dup_pushes} (allowed <= kills = {kills})"
    )
    print(
        f"  audit lines {len(ids)}  duplicate audit lines {len(ids) - len(set(ids))}  "
        f"decisions without a line {len(set(range(1, ingest.inserted + 1)) - set(ids))}"
    )
    ok = lost == 0 and c["duplicate_tasks"] == 0 and dup_pushes <= kills and undelivered <= 0
    print(f"  targets {'met' if ok else 'MISSED'}; log: {tmp / 'reactor.log'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Another program holds the write lock on a database the daemons use, for 30 s (and, marked
``slow``, 5 minutes): real `fleet run` processes live through it (no exit, /metrics served,
WATCHDOG=1 flowing, the failures counted in ``fleet_store_errors_total``) and finish the work
once the lock is released: queued notifications reach the Slack fake, every mail is decided.
A daemon started during an outbox lock starts and sends after it. The lock is a real python
process in ``BEGIN EXCLUSIVE`` (``tests/store_faults.LockHolder``)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, wait_until
from tests.email_fixtures import (
    CASES,
    CORRESPONDENTS,
    PARTNERS,
    add_bulk,
    create_inbox,
    fixture_answer,
)
from tests.fakes.llm import FakeLLM
from tests.fakes.paperless import FakePaperless
from tests.fakes.slack import FakeSlack
from tests.store_faults import LockHolder, is_write_locked
from tests.system.test_email_reactor_process import timezone_far_from_digest_time
from tests.system.test_outbox_processes import seed_expired_leases

pytestmark = pytest.mark.system

HOLDS = [30, pytest.param(300, marks=pytest.mark.slow, id="300")]
#: after the release: the sender's idle backoff is capped at 60 s, a failed cycle's at 2 s here
DELIVERED_WITHIN_S = 240


class Daemon:
    """`fleet run NAME` with its own notify socket (watchdog armed), metrics port and log."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.port = free_port()
        self.ns = NotifySocket()
        self.log_path = cwd / f"{name}.log"
        section = name.replace("-", "_").upper()
        with self.log_path.open("w") as log:  # a file, not a pipe nobody drains for minutes
            self.proc = subprocess.Popen(
                [str(FLEET_BIN), "run", name],
                env={
                    **env,
                    "NOTIFY_SOCKET": self.ns.path,
                    "WATCHDOG_USEC": "2000000",  # WATCHDOG=1 every second
                    f"FLEET_{section}__METRICS_PORT": str(self.port),
                },
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text()

    def sample(self, metric: str, **labels: str) -> float:
        """Sum of the samples of ``metric`` matching ``labels`` (0 when none)."""
        status, body = http_get(f"http://127.0.0.1:{self.port}/metrics")
        assert status == 200, (status, body[:200])
        return sum(
            s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def failed_cycles(self) -> float:
        return sum(
            self.sample("fleet_cycles_total", daemon=self.name, outcome=outcome)
            for outcome in ("error", "timeout")
        )

    def ready(self) -> bool:
        return self.ns.wait_for("READY=1", timeout=60)

    def watchdog_flows(self) -> bool:
        before = self.ns.count("WATCHDOG=1")
        return wait_until(lambda: self.ns.count("WATCHDOG=1") >= before + 2, timeout=30)

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9
        finally:
            self.ns.close()


@dataclass
class World:
    env: dict[str, str]
    llm: FakeLLM
    slack: FakeSlack
    root: Path
    cwd: Path

    @property
    def inbox(self) -> Path:
        return self.root / "databases/email-inbox.db"

    @property
    def outbox(self) -> Path:
        return self.root / "state/outbox.db"

    @property
    def mc(self) -> Path:
        return self.root / "databases/mission-control.db"

    def decided(self) -> set[int]:
        with sqlite3.connect(f"file:{self.inbox}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT email_id FROM reactor_decisions").fetchall()
        conn.close()
        return {int(r[0]) for r in rows}


@pytest.fixture
def world(fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path) -> Iterator[World]:
    (fleet_root / "config").mkdir()
    (fleet_root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    with (
        FakeLLM(fixture_answer) as llm,
        FakePaperless(CORRESPONDENTS) as paperless,
        FakeSlack() as slack,
    ):
        env = {
            **fleet_env,
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "60",
            "FLEET_EMAIL_REACTOR__PAPERLESS_URL": paperless.base_url,
            "FLEET_EMAIL_REACTOR__PAPERLESS_TOKEN": paperless.token,
            "FLEET_EMAIL_REACTOR__DIGEST_TIME": "23:59",
            "FLEET_EMAIL_REACTOR__TIMEZONE": timezone_far_from_digest_time(),
            "FLEET_EMAIL_REACTOR__INTERVAL_S": "0.5",
            "FLEET_EMAIL_REACTOR__BACKOFF_MAX_S": "2",
            "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.5",
            "FLEET_CLAIM_SWEEPER__BACKOFF_MAX_S": "2",
        }
        yield World(env, llm, slack, fleet_root, tmp_path)


def ops_alert_for(world: World, task_id: int) -> bool:
    return any(f"Task {task_id}" in text for text in world.slack.texts("#ops"))


@pytest.mark.parametrize("hold_s", HOLDS)
def test_outbox_lock_running_daemons_live_and_deliver_after(world: World, hold_s: int) -> None:
    """Why-bullet "crashes every daemon on an outbox lock": the sender met a StoreError it did
    not catch and each daemon exited 1 after about 25 s of lock."""
    create_inbox(world.inbox, [])
    seed_expired_leases(world.mc, 0)  # creates mission-control.db
    daemons = [Daemon(name, world.env, world.cwd) for name in ("claim-sweeper", "email-reactor")]
    codes: list[int] = []
    try:
        assert all(d.ready() for d in daemons), [d.output()[-2000:] for d in daemons]
        assert wait_until(
            lambda: all(d.sample("fleet_cycles_total", outcome="ok") for d in daemons)
        )
        with LockHolder(world.outbox) as lock:
            # Work that needs the outbox arrives during the lock: an expired lease (an #ops
            # alert) and a strategic partner's mail (a #ceo push).
            (task_id,) = seed_expired_leases(world.mc, 1)
            partner = create_inbox(world.inbox, [c for c in CASES if c.name == "partner exact"])
            # Each daemon meets the lock, counts it and lives on: /metrics, WATCHDOG=1.
            assert wait_until(
                lambda: all(d.sample("fleet_store_errors_total", db="outbox.db") for d in daemons),
                timeout=hold_s + 120,
            ), [d.output()[-3000:] for d in daemons]
            assert all(d.alive() and d.watchdog_flows() for d in daemons)
            assert is_write_locked(world.outbox)
            assert world.slack.texts("#ceo") == [] and not ops_alert_for(world, task_id)
            lock.release(after_s=hold_s)
        assert wait_until(lambda: ops_alert_for(world, task_id), timeout=DELIVERED_WITHIN_S)
        assert wait_until(lambda: len(world.slack.texts("#ceo")) == 1, timeout=DELIVERED_WITHIN_S)
        assert world.decided() >= set(partner.values())
        assert all(d.alive() for d in daemons), [d.output()[-3000:] for d in daemons]
        assert all(d.sample("fleet_cycles_total", outcome="ok") for d in daemons)
    finally:
        codes = [d.stop() for d in daemons]
    outputs = [d.output() for d in daemons]
    assert codes == [0, 0], [o[-3000:] for o in outputs]
    for out in outputs:
        # Reported once per incident (by the cycle, the sender or both), not once per failure.
        reports = [out.count('"outbox sender failing"'), out.count('"cycle failed"')]
        assert max(reports) == 1, out[-3000:]
        assert "ended unexpectedly" not in out
    assert len(world.slack.texts("#ceo")) == 1


@pytest.mark.parametrize(
    ("hold_s", "outbox_state"),
    [
        (30, "migrated"),
        (30, "fresh"),
        pytest.param(300, "fresh", marks=pytest.mark.slow, id="300-fresh"),
    ],
)
def test_daemon_started_during_outbox_lock_starts_and_sends_after(
    world: World, hold_s: int, outbox_state: str
) -> None:
    """A daemon started while the outbox is locked (restarted by its service manager, say)
    used to fail its start-up; it must start (READY, /metrics) and send after the release.
    ``fresh``: the outbox has never been migrated, so opening it needs the write lock too."""
    (task_id,) = seed_expired_leases(world.mc, 1)
    if outbox_state == "migrated":
        import asyncio

        from shared.notify import Outbox

        async def migrate() -> None:
            await (await Outbox(world.outbox).open()).close()

        asyncio.run(migrate())
    else:
        world.outbox.parent.mkdir(parents=True, exist_ok=True)
    sweeper: Daemon | None = None
    try:
        with LockHolder(world.outbox) as lock:
            sweeper = Daemon("claim-sweeper", world.env, world.cwd)
            assert sweeper.ready(), sweeper.output()[-3000:]
            assert is_write_locked(world.outbox), "READY came only after the lock was gone"
            assert wait_until(
                lambda: (
                    sweeper is not None
                    and sweeper.sample("fleet_store_errors_total", db="outbox.db") >= 1
                ),
                timeout=hold_s + 120,
            ), sweeper.output()[-3000:]
            assert sweeper.alive() and sweeper.watchdog_flows()
            assert not ops_alert_for(world, task_id)
            lock.release(after_s=hold_s)
        assert wait_until(lambda: ops_alert_for(world, task_id), timeout=DELIVERED_WITHIN_S)
        assert sweeper.alive(), sweeper.output()[-3000:]
    finally:
        code = sweeper.stop() if sweeper is not None else None
    out = sweeper.output()
    assert code == 0, out[-3000:]
    if outbox_state == "fresh":
        assert "outbox unavailable at start-up" in out, out[-3000:]
    assert len([t for t in world.slack.texts("#ops") if f"Task {task_id}" in t]) == 1


@pytest.mark.parametrize("hold_s", HOLDS)
def test_inbox_lock_reactor_lives_and_decides_all_after(world: World, hold_s: int) -> None:
    """Why-bullet "wedges the inbox": cycles time out (8 s here) while their decision waits
    for the lock; a cancelled write must not leave the connection inside a transaction once
    the lock is released, or every later decision fails and the ingest is locked out."""
    create_inbox(world.inbox, [])
    env = {**world.env, "FLEET_EMAIL_REACTOR__CYCLE_TIMEOUT_S": "8"}
    reactor = Daemon("email-reactor", env, world.cwd)
    codes: list[int] = []
    try:
        assert reactor.ready(), reactor.output()[-3000:]
        assert wait_until(lambda: reactor.sample("fleet_cycles_total", outcome="ok") >= 1)
        world.llm.hold()  # the reactor reads the mail, asks, and waits for the answers
        ids = add_bulk(world.inbox, 4)
        assert wait_until(lambda: len(world.llm.calls) >= 4, timeout=60)
        with LockHolder(world.inbox) as lock:
            world.llm.release()  # the answers arrive with the inbox locked
            failed = reactor.failed_cycles()
            assert wait_until(
                lambda: reactor.failed_cycles() >= failed + 2, timeout=hold_s + 120
            ), reactor.output()[-3000:]
            assert reactor.alive() and reactor.watchdog_flows()
            assert world.decided() == set()
            lock.release(after_s=hold_s)
        assert wait_until(lambda: world.decided() >= set(ids), timeout=DELIVERED_WITHIN_S), (
            reactor.output()[-3000:]
        )
        assert reactor.alive()
        assert not is_write_locked(world.inbox), "the reactor holds the inbox's write lock"
    finally:
        codes = [reactor.stop()]
    out = reactor.output()
    assert codes == [0], out[-3000:]
    assert "within a transaction" not in out, out[-3000:]

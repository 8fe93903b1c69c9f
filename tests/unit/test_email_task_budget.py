"""``max_tasks_per_cycle`` in one in-process email-reactor cycle (real SQLite files, no LLM:
every mail is a known contact, decided by rule): the tasks over the budget stay undecided for
the next cycle, a strategic partner's task never waits, and a cycle whose task budget ran out
does not ask for the next cycle at once (``more``), or the cap would be no cap at all."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from daemons.email_reactor.daemon import EmailReactor
from fleet.config import load_config
from shared.logging import get_logger
from shared.metrics import DaemonMetrics
from shared.notify import Outbox
from shared.runtime import CycleResult, DaemonContext
from tests.email_fixtures import PARTNERS, Case, create_inbox

FRIEND = "old.friend@example.net"  # create_inbox's OWN mail went to them: a known contact


@pytest.fixture
def root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    monkeypatch.setenv("FLEET_FLEET__ROOT", str(root))
    (root / "config").mkdir(parents=True)
    (root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    return root


def friends(count: int) -> list[Case]:
    return [Case(f"friend {i}", "-", "-", "-", from_addr=FRIEND) for i in range(count)]


async def one_cycle(
    monkeypatch: pytest.MonkeyPatch, *, max_tasks: int, max_emails: int
) -> CycleResult:
    monkeypatch.setenv("FLEET_EMAIL_REACTOR__MAX_TASKS_PER_CYCLE", str(max_tasks))
    monkeypatch.setenv("FLEET_EMAIL_REACTOR__MAX_EMAILS_PER_CYCLE", str(max_emails))
    config = load_config()
    outbox = await Outbox(config.notify.outbox_db).open()
    ctx = DaemonContext(
        config=config,
        section=config.email_reactor,
        role="primary",
        log=get_logger(daemon="email-reactor"),
        metrics=DaemonMetrics("email-reactor", "test"),
        outbox=outbox,
    )
    daemon = EmailReactor(ctx)
    try:
        await daemon.open()
        return await daemon.cycle()
    finally:
        await daemon.close()
        await outbox.close()


def task_refs(root: Path) -> list[int]:
    with sqlite3.connect(root / "databases/mission-control.db") as conn:
        refs = [int(r[0]) for r in conn.execute("SELECT source_ref FROM tasks")]
    conn.close()
    return sorted(refs)


async def test_over_the_budget_waits_and_does_not_hurry_the_next_cycle(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = create_inbox(root / "databases/email-inbox.db", friends(8))
    first = await one_cycle(monkeypatch, max_tasks=2, max_emails=5)
    assert len(task_refs(root)) == 2
    assert first.more is False, "a spent task budget must not run the next cycle at once"
    second = await one_cycle(monkeypatch, max_tasks=2, max_emails=5)
    assert len(task_refs(root)) == 4 and second.more is False
    # With room in the budget a full read still asks for the next cycle at once.
    third = await one_cycle(monkeypatch, max_tasks=10, max_emails=3)
    assert len(task_refs(root)) == 7 and third.more is True
    await one_cycle(monkeypatch, max_tasks=10, max_emails=3)
    assert task_refs(root) == sorted(ids.values()), "none lost, none twice"


async def test_a_partner_never_waits_for_the_task_budget(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = Case("partner", "-", "-", "-", from_addr="partner.one@example.com", age_h=0.5)
    ids = create_inbox(root / "databases/email-inbox.db", [*friends(4), partner])
    await one_cycle(monkeypatch, max_tasks=2, max_emails=50)
    refs = task_refs(root)
    assert len(refs) == 3 and ids["partner"] in refs

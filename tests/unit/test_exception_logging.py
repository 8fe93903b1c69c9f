"""Crash logs name the real errors: an ExceptionGroup (a failing TaskGroup) is unwrapped into
its leaf exceptions, each with its type and message (cut short, addresses hashed by the log
processor); tracebacks go out at debug only. Today's "ExceptionGroup: unhandled errors in a
TaskGroup" alone never appears."""

from __future__ import annotations

import asyncio
import errno
import io
import json
from pathlib import Path

from shared.logging import configure_logging, describe_error, error_leaves
from shared.runtime import CycleResult, Daemon, DaemonRunner


def _group() -> BaseExceptionGroup[BaseException]:
    inner = ExceptionGroup(
        "unhandled errors in a TaskGroup", [ValueError("partner tier 'gold' is not one of P0-P2")]
    )
    return ExceptionGroup(
        "unhandled errors in a TaskGroup",
        [OSError(errno.ENOSPC, "No space left on device"), inner],
    )


def test_a_group_is_described_by_its_leaves() -> None:
    group = _group()
    leaves = error_leaves(group)
    assert [type(e) for e in leaves] == [OSError, ValueError]
    text = describe_error(group)
    assert "OSError: [Errno 28] No space left on device" in text
    assert "ValueError: partner tier 'gold' is not one of P0-P2" in text
    assert "unhandled errors in a TaskGroup" not in text
    plain = RuntimeError("boom")
    assert error_leaves(plain) == [plain] and describe_error(plain) == "RuntimeError: boom"


def test_a_long_message_is_cut_short() -> None:
    text = describe_error(ValueError("x" * 10_000))
    assert text.startswith("ValueError: xxx") and len(text) < 400


class _TaskGroupDaemon(Daemon):
    name = "claim-sweeper"  # borrows that section

    async def cycle(self) -> CycleResult:
        async def full_disk() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        async def bad_row() -> None:  # fails in the same loop pass: both are leaves
            raise ValueError("row 42 from ceo@example.com: bad mc_task_id")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(full_disk())
            tg.create_task(bad_row())
        return CycleResult()


async def test_a_failing_task_group_cycle_logs_each_cause(tmp_path: Path) -> None:
    from fleet.config import RootConfig
    from shared.sections import FleetSection

    buf = io.StringIO()
    configure_logging(host="h1", level="debug", daemon="claim-sweeper", stream=buf)
    config = RootConfig(fleet=FleetSection(root=tmp_path, host="h1"))
    runner = DaemonRunner(_TaskGroupDaemon, config)
    await runner.open(serve_metrics=False, with_outbox=False)
    try:
        assert await runner.run_cycle() is None
    finally:
        await runner.close()
    lines = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    (failed,) = [r for r in lines if r["event"] == "cycle failed"]
    assert failed["level"] == "error"
    assert "OSError: [Errno 28] No space left on device" in failed["error"]
    assert "ValueError: row 42 from" in failed["error"]
    assert "unhandled errors in a TaskGroup" not in failed["error"]
    assert sorted(failed["causes"]) == sorted(
        [
            "OSError: [Errno 28] No space left on device",
            f"ValueError: row 42 from {_hash('ceo@example.com')}: bad mc_task_id",
        ]
    )
    assert "ceo@example.com" not in buf.getvalue(), "addresses never reach the log"
    tracebacks = [r for r in lines if r["event"] == "cycle failure traceback"]
    assert {r["level"] for r in tracebacks} == {"debug"} and len(tracebacks) == 2
    assert all("Traceback" in r["traceback"] for r in tracebacks)


def _hash(addr: str) -> str:
    from shared.logging import hash_email

    return hash_email(addr)

"""``shared.shield.complete``: the work finishes although its caller is cancelled (as a stop or
a cycle timeout cancels it), and the cancellation still reaches the caller. Also the reason
the fleet has its own shield: anyio's shielded ``CancelScope`` does not hold against
``Task.cancel()`` (if anyio ever changes that, this test says so)."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from shared.shield import complete


async def test_the_work_finishes_and_the_cancellation_is_reraised() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def final_write() -> str:
        started.set()
        await release.wait()
        done.append("written")
        return "ok"

    task = asyncio.create_task(complete(final_write()))
    await started.wait()
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # a second stop changes nothing
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == ["written"]


async def test_without_a_cancellation_the_result_is_returned() -> None:
    async def work() -> int:
        return 7

    assert await complete(work()) == 7


async def test_a_failure_after_a_cancellation_is_the_cause_of_the_cancellation() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def failing() -> None:
        started.set()
        await release.wait()
        raise OSError("disk full")

    task = asyncio.create_task(complete(failing()))
    await started.wait()
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError) as exc:
        await task
    assert isinstance(exc.value.__cause__, OSError)


async def test_an_anyio_shielded_scope_does_not_hold_against_task_cancel() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def shielded() -> None:
        with anyio.CancelScope(shield=True):
            started.set()
            await release.wait()
            done.append("written")

    task = asyncio.create_task(shielded())
    await started.wait()
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == []  # the "shielded" work was cut: shared.shield.complete exists for this

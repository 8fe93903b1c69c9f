"""``complete``: await a piece of work to its end even when the awaiting task is cancelled
meanwhile (a stop, a cycle timeout), then re-raise the cancellation.

This is the fleet's one shield for final writes and rollbacks. anyio's shielded ``CancelScope``
does not hold against ``Task.cancel()``, which is how the runtime stops a cycle (and
``asyncio.timeout`` cancels it), and a bare ``asyncio.shield`` returns to the caller at the
first cancellation while the work runs on unseen. Standard library only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["complete"]

_T = TypeVar("_T")


async def complete(work: Awaitable[_T]) -> _T:
    """Await ``work`` (a coroutine or future) to the end, however often the caller is
    cancelled meanwhile; then re-raise the cancellation, if there was one. If the work fails
    after a cancellation, the cancellation wins (the failure is its ``__cause__``)."""
    future = asyncio.ensure_future(work)
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})  # never cancels ``future`` itself
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        failure = None if future.cancelled() else future.exception()
        raise asyncio.CancelledError() from failure
    return future.result()

"""``OutboxSender``: drains the outbox through the sinks, one ``step()`` at a time.

A step requeues rows a dead sender left, holds alerts during a silence (pushes still go),
otherwise collapses what the collapse plan says, then claims and sends what is due, at most
``rate_per_minute`` per channel. A row delivered while the store failed to mark it sent is
marked first thing in the next step (before its lease lapses), so a lost connection to a
Postgres outbox does not send it twice. A failed send is pushed back with a backoff (Slack's
Retry-After when it sent one) or, when permanent, marked dead, counted and logged: nothing is
dropped silently and no row is left claimed. ``run()`` steps without sleeping while there is
work; a step the outbox database failed (locked past its retries, unopenable, a full disk)
is a failed step, never the end of ``run()``: it backs off, is reported to ``on_store_error``
(the ``fleet_store_errors_total`` counter) and logged once per incident. It never blocks the
event loop (the outbox does its I/O off the loop) and never logs cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from shared.backoff import backoff_delay
from shared.logging import describe_error
from shared.notify.message import OutboxRow
from shared.notify.metrics import NotifyMetrics
from shared.notify.outbox import OutboxStore
from shared.notify.sink import Sink, SinkError
from shared.sections import NotifySection
from shared.sqlite import is_store_error

__all__ = ["IDLE_MAX_S", "OutboxSender", "idle_delay_s", "retry_delay_s"]

#: the longest ``run()`` waits between steps while the outbox database keeps failing
IDLE_MAX_S = 60.0
#: how often a sender prunes finished rows
PRUNE_EVERY_S = 3600.0


def retry_delay_s(
    attempts: int,
    cap_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float] | None = None,
) -> float:
    """Delay before the next try of a row that failed ``attempts`` times: the service's
    Retry-After when it sent one, else ``2^attempts`` seconds (jittered by ``rand``); never
    more than ``cap_s`` (``[notify] max_backoff_s``)."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), cap_s)
    return min(cap_s, backoff_delay(attempts + 1, 1.0, cap_s, rand))


def idle_delay_s(failures: int, idle_s: float, rand: Callable[[], float] | None = None) -> float:
    """How long ``run()`` waits after a step that found nothing to do: ``idle_s``, doubled
    for each consecutive failing step, at most ``IDLE_MAX_S``."""
    return min(IDLE_MAX_S, backoff_delay(failures + 1, idle_s, IDLE_MAX_S, rand))


class OutboxSender:
    """Delivers outbox rows through the sinks, one ``step()`` at a time. ``rand`` is the
    jitter source for retry and idle delays (None: none), so senders do not move in
    lockstep."""

    def __init__(
        self,
        outbox: OutboxStore,
        sinks: dict[str, Sink],
        settings: NotifySection,
        *,
        log: Any,
        metrics: NotifyMetrics | None = None,
        owner: str | None = None,
        batch: int = 50,
        rand: Callable[[], float] | None = random.random,
        on_store_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = sinks
        self.settings = settings
        self.log = log
        self.metrics = metrics
        # host:pid:object, unique across the hosts sharing a Postgres outbox
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.batch = batch
        self.rand = rand
        self.on_store_error = on_store_error
        self._last_prune = 0.0
        self._held_notice: set[str] = set()
        self._was_silenced = False
        self._unmarked: set[int] = set()  # delivered rows the store has not marked sent yet

    async def step(self) -> int:
        """Deliver what is ready now; return how many rows were attempted (0: idle)."""
        ob = self.outbox
        now = ob.now()
        if self._unmarked:
            await self._mark_unmarked()
        await ob.requeue_abandoned()
        silenced = ob.silenced(await ob.silence())
        if silenced:
            await ob.hold_alerts()
        else:
            if self._was_silenced:
                self.log.info("silence ended; summarizing held alerts")
            summaries = await ob.collapse(self.settings.stale_alert_s, self.settings.burst)
            if summaries and self.metrics:
                self.metrics.collapsed.labels("slack").inc(len(summaries))
        self._was_silenced = silenced
        attempted = 0
        sent_in_step: dict[tuple[str, str], int] = {}
        for row in await ob.ready(
            include_alerts=not silenced,
            limit=self.batch,
            per_channel=self.settings.rate_per_minute,
            max_delay_s=self.settings.max_backoff_s,
        ):
            sink = self.sinks.get(row.sink)
            if sink is None or not sink.available:
                if row.sink not in self._held_notice:
                    self._held_notice.add(row.sink)
                    self.log.warning("sink not configured; holding messages", sink=row.sink)
                continue
            key = (row.sink, row.channel)
            if key not in sent_in_step:
                sent_in_step[key] = await ob.sent_recently(row.sink, row.channel)
            if sent_in_step[key] >= self.settings.rate_per_minute:
                continue
            if not await ob.claim(row.id, self.owner, self.settings.send_lease_s):
                continue  # another sender took it
            attempted += 1
            if await self._deliver(sink, row):
                sent_in_step[key] += 1
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            pruned = await ob.prune(self.settings.prune_after_s)
            if pruned:
                self.log.info("outbox pruned", rows=pruned)
        if self.metrics:
            self.metrics.pending.set(await ob.pending_count())
        return attempted

    async def _deliver(self, sink: Sink, row: OutboxRow) -> bool:
        """Send one claimed row and record the outcome; True if it was delivered."""
        ob = self.outbox
        try:
            await sink.send(row)
        except SinkError as exc:
            failure: SinkError | None = exc
        except Exception as exc:
            # A sink bug or an answer nobody anticipated: push the row back to be retried
            # instead of leaving it claimed and crash-looping the daemon on it.
            failure = SinkError("unexpected", detail=describe_error(exc))
        else:
            failure = None
        if failure is not None:
            self._record_failure(row, failure)
            if failure.permanent:
                await ob.mark_dead(row.id, self.owner, str(failure))
            else:
                delay = retry_delay_s(
                    row.attempts + 1,
                    self.settings.max_backoff_s,
                    failure.retry_after_s,
                    self.rand,
                )
                await ob.mark_retry(row.id, self.owner, delay, str(failure))
            return False
        if self.metrics:
            self.metrics.sent.labels(row.sink).inc()
        self.log.info(
            "notification sent",
            sink=row.sink,
            channel=row.channel,
            kind=row.kind,
            outbox_id=row.id,
            source=row.daemon,
        )
        try:
            await ob.mark_sent(row.id, self.owner)
        except BaseException:
            # Delivered, but the store did not take the mark (connection lost, cancelled):
            # record it first thing next step, before the lease lapses and it is sent again.
            self._unmarked.add(row.id)
            raise
        return True

    async def _mark_unmarked(self) -> None:
        """Record the deliveries a failed store left unmarked (see ``_deliver``)."""
        for row_id in sorted(self._unmarked):
            await self.outbox.mark_sent(row_id, self.owner)
            self._unmarked.discard(row_id)

    def _record_failure(self, row: OutboxRow, exc: SinkError) -> None:
        if self.metrics:
            self.metrics.failed.labels(row.sink, exc.reason).inc()
        level = self.log.error if exc.permanent else self.log.warning
        level(
            "notification failed",
            sink=row.sink,
            channel=row.channel,
            outbox_id=row.id,
            reason=exc.reason,
            permanent=exc.permanent,
            attempts=row.attempts + 1,
            error=str(exc),
        )

    async def run(self, stop: asyncio.Event, idle_s: float = 2.0) -> None:
        """Step until ``stop`` is set; sleep ``idle_s`` only when a step found nothing to do,
        longer (``idle_delay_s``) after each step in a row the outbox database failed."""
        failures = 0
        while not stop.is_set():
            try:
                attempted = await self.step()
                if failures:
                    self.log.info("outbox sender recovered", failures=failures)
                failures = 0
            except Exception as exc:
                if not (is_store_error(exc) or isinstance(exc, OSError)):
                    raise  # a bug: let the runtime end the process, to be restarted
                failures += 1
                attempted = 0
                if self.on_store_error is not None:
                    self.on_store_error(exc)
                if failures == 1:
                    self.log.error("outbox sender failing", error=describe_error(exc))
            if attempted:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=idle_delay_s(failures, idle_s, self.rand)
                )

    async def drain(self, timeout_s: float) -> None:
        """Step until nothing is deliverable now, for at most ``timeout_s`` (``--once``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not await self.step():
                return

    async def close(self) -> None:
        for sink in self.sinks.values():
            await sink.close()

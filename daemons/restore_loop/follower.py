"""One supervised ``litestream restore -f`` child per DB.

Follow mode cannot resume after its process dies (the saved TXID is ahead of the daily
snapshot), so every (re)start is fresh: the child restores into a temporary path beside the copy,
checks integrity and writes its ``-txid`` sidecar; only then is the temporary file renamed over the
standby copy (atomic; readers keep the old copy until they reopen) and the child keeps applying
LTX files to it through its open file descriptor. A child that exits is restarted with capped
backoff; ``request_restart`` kills it for a fresh start (stall). It must never delete or truncate a
standby copy, and never start or rename anything for a fenced DB.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemons.restore_loop.litestream import (
    ChildLog,
    Litestream,
    LitestreamError,
    classify_failure,
    kill_process,
    start_pumps,
)
from daemons.restore_loop.state import RestoreTarget, fsync_dir, read_txid_file
from daemons.restore_loop.watched_file import WatchedFile
from shared.backoff import backoff_delay
from shared.clock import Clock

__all__ = ["Fenced", "Follower", "FollowerStartError", "quick_check", "remove_work_files"]

_GEN = itertools.count(1)
STABLE_AFTER_S = 300.0  # a child that followed this long resets the restart backoff
RESTART_GRACE_S = 2.0  # SIGTERM first: a child killed mid-apply can leave the copy torn


def quick_check(path: Path) -> str:
    """``PRAGMA quick_check`` on ``path`` opened read-only: 'ok' or the problems found."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    text = "; ".join(str(r[0]) for r in rows[:5])
    return "ok" if text == "ok" else text


class FollowerStartError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Fenced(Exception):
    """The DB is fenced (promotion in progress): nothing may be started or renamed."""


def remove_work_files(work_dir: Path, name: str, keep: set[Path] | None = None) -> None:
    """Delete this DB's temporary restores and sidecars in the work dir (never the copy). Work
    files are named ``<name>~...``; '~' cannot occur in a DB name, so no other DB's match."""
    keep = keep or set()
    try:
        entries = list(work_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry in keep or not entry.name.startswith(f"{name}~"):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()


class Follower:
    def __init__(
        self,
        target: RestoreTarget,
        litestream: Litestream,
        work_dir: Path,
        *,
        start_slots: asyncio.Semaphore,
        restore_timeout_s: float,
        backoff_max_s: float,
        log: Any,
        is_fenced: Callable[[str], bool],
        on_restart: Callable[[str, str], None],
        on_failure: Callable[[str, str], None],
        clock: Clock = time.time,
        on_suspect: Callable[[str], None] | None = None,
        interval_s: Callable[[], float] | None = None,
    ) -> None:
        self.target = target
        # The poll interval a fresh child gets (fast follow changes it; the child keeps its own).
        self.interval_s = interval_s or (lambda: target.follow_interval_s)
        self.child_interval_s: float | None = None
        self.litestream = litestream
        self.work_dir = work_dir
        self.start_slots = start_slots
        self.restore_timeout_s = restore_timeout_s
        self.backoff_max_s = backoff_max_s
        self.log = log.bind(db=target.name)
        self.is_fenced = is_fenced
        self.on_restart = on_restart
        self.on_failure = on_failure
        self.clock = clock
        self.on_suspect = on_suspect
        # Why the visible copy may be torn (quick_check failed after an unclean exit); cleared
        # when a fresh restore replaces it.
        self.suspect = ""
        self._killer: asyncio.Task[None] | None = None
        self.state = "idle"
        self.proc: asyncio.subprocess.Process | None = None
        self.output: Path | None = None
        self.sidecar: Path | None = None
        # The live child's sidecar, read again only when it changed (polled on the event loop).
        self._sidecar_file: WatchedFile[int] | None = None
        self.started_at: float | None = None
        self.last_error = ""
        self.consecutive_failures = 0
        self.first_attempt_done = asyncio.Event()
        self._restart_reason: str | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []
        self._last_txid: int | None = None
        self.child_log = ChildLog(self.log, target.name)

    # observations ----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def local_txid(self) -> int | None:
        """The TXID the copy holds (the live child's sidecar); the last good read if torn."""
        if self._sidecar_file is not None:
            value = self._sidecar_file.read()
            if value is not None:
                self._last_txid = value
        return self._last_txid

    # control ---------------------------------------------------------------------------------
    def request_restart(self, reason: str) -> None:
        """End the child (SIGTERM, SIGKILL after a short grace, which also ends a SIGSTOPped
        one); the loop starts fresh."""
        proc = self.proc
        if proc is None or proc.returncode is not None or self._stopping:
            return
        self._restart_reason = reason
        if self._killer is None or self._killer.done():
            self._killer = asyncio.ensure_future(kill_process(proc, grace_s=RESTART_GRACE_S))

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        proc = self.proc
        if proc is not None:
            await kill_process(proc, grace_s=2.0)
        await self._drain_pumps()
        self.state = "stopped"

    async def fence_stop(self) -> None:
        """Stop the child for a fence; the loop waits until the fence is lifted."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self._restart_reason = "fenced"
            await kill_process(proc, grace_s=2.0)

    # loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Supervise until stop(): start fresh, wait for the child to exit, back off, repeat."""
        try:
            while not self._stopping:
                if self.is_fenced(self.target.name):
                    self.state = "fenced"
                    self.first_attempt_done.set()
                    await self._sleep(0.5)
                    continue
                try:
                    await self._start_fresh()
                except Fenced:
                    continue
                except FollowerStartError as exc:
                    self.consecutive_failures += 1
                    self.last_error = str(exc)
                    self.state = "backoff"
                    self.on_failure(exc.reason, str(exc))
                    self.first_attempt_done.set()
                    await self._sleep(self._delay())
                    continue
                finally:
                    if self._stopping:
                        self.first_attempt_done.set()
                self.first_attempt_done.set()
                await self._await_exit()
                if self._stopping:
                    break
                await self._after_exit()
        finally:
            # Also when the loop dies of an unexpected error: the first cycle must not wait.
            self.first_attempt_done.set()
            if self.proc is not None:
                await asyncio.shield(kill_process(self.proc))
            await self._drain_pumps()

    async def _after_exit(self) -> None:
        proc = self.proc
        assert proc is not None
        reason = self._restart_reason or "exit"
        self._restart_reason = None
        ran_for = self.clock() - (self.started_at or self.clock())
        await self._drain_pumps()
        await self._check_copy(proc)
        if reason == "fenced":
            self.state = "fenced"
            return
        if reason == "exit":
            self.last_error = f"follower exited with code {proc.returncode}: " + (
                self.child_log.tail[-1] if self.child_log.tail else ""
            )
            self.log.warning(
                "follower exited; restarting fresh",
                code=proc.returncode,
                ran_for_s=round(ran_for, 1),
                reason=classify_failure(self.child_log.text()),
            )
            self.consecutive_failures = (
                0 if ran_for >= STABLE_AFTER_S else (self.consecutive_failures + 1)
            )
        else:
            self.log.warning("restarting follower fresh", reason=reason)
            self.consecutive_failures = 0
        self.on_restart(reason, self.last_error if reason == "exit" else reason)
        self.state = "restarting"
        if reason == "exit":
            await self._sleep(self._delay())

    async def _check_copy(self, proc: asyncio.subprocess.Process) -> None:
        """The child died while it may have been writing pages into the copy: verify it."""
        if not self.target.path.exists():
            return
        result = await asyncio.to_thread(quick_check, self.target.path)
        if result == "ok":
            return
        self.suspect = f"quick_check after the follower exited (code {proc.returncode}): {result}"
        self.log.error("standby copy suspect", detail=self.suspect[:300])
        if self.on_suspect is not None:
            self.on_suspect(self.suspect)

    def _delay(self) -> float:
        return backoff_delay(self.consecutive_failures, 1.0, self.backoff_max_s)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _await_exit(self) -> None:
        proc = self.proc
        assert proc is not None
        stop_wait = asyncio.ensure_future(self._stop_signal())
        exit_wait = asyncio.ensure_future(proc.wait())
        try:
            await asyncio.wait({stop_wait, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not exit_wait.done():
                exit_wait.cancel()

    async def _stop_signal(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def _drain_pumps(self) -> None:
        pumps, self._pumps = self._pumps, []
        if not pumps:
            return
        _done, pending = await asyncio.wait(pumps, timeout=2.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _start_fresh(self) -> None:
        target = self.target
        self.state = "waiting"
        async with self.start_slots:
            if self._stopping:
                raise Fenced()
            if self.is_fenced(target.name):
                raise Fenced()
            self.state = "restoring"
            gen = f"{int(self.clock() * 1000)}-{next(_GEN)}"
            tmp = self.work_dir / f"{target.name}~{gen}.db"
            sidecar = Path(f"{tmp}-txid")
            try:
                await asyncio.to_thread(
                    self.work_dir.mkdir, parents=True, exist_ok=True, mode=0o700
                )
            except OSError as exc:
                raise FollowerStartError("local", f"cannot create {self.work_dir}: {exc}") from None
            interval = self.interval_s()
            try:
                proc = await self.litestream.start_follower(target.path, tmp, interval)
            except LitestreamError as exc:
                raise FollowerStartError(exc.reason, str(exc)) from None
            self.proc = proc
            self.child_interval_s = interval
            self._restart_reason = None
            self.child_log.tail.clear()
            self._pumps = start_pumps(proc, self.child_log.feed)
            try:
                await self._wait_ready(proc, sidecar)
                await asyncio.to_thread(os.chmod, tmp, 0o600)
                # The fence check and the rename stay together on the event loop: no fence can
                # be acknowledged between them.
                if self.is_fenced(target.name) or self._stopping:
                    raise Fenced()
                os.replace(tmp, target.path)
                fsync_dir(target.path.parent)
            except BaseException as exc:
                await asyncio.shield(kill_process(proc))
                for leftover in (tmp, sidecar, Path(f"{tmp}.tmp")):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                if isinstance(exc, OSError):
                    # EROFS, EACCES, EXDEV, a directory in the way: retried with backoff.
                    raise FollowerStartError(
                        "local", f"cannot place the restore at {target.path}: {exc}"
                    ) from None
                raise
        self.output, self.sidecar = tmp, sidecar
        self._sidecar_file = WatchedFile(sidecar, read_txid_file)
        self._last_txid = None
        self.local_txid()
        remove_work_files(self.work_dir, target.name, keep={sidecar})
        self.started_at = self.clock()
        self.state = "following"
        self.last_error = ""
        self.suspect = ""
        self.log.info(
            "standby copy replaced by a fresh restore; following",
            txid=self._last_txid,
            pid=proc.pid,
            interval_s=interval,
        )

    async def _wait_ready(self, proc: asyncio.subprocess.Process, sidecar: Path) -> None:
        """Until the child wrote its sidecar (restored + integrity checked), exited, or ran out
        of restore_timeout_s."""
        deadline = time.monotonic() + self.restore_timeout_s
        exit_wait = asyncio.ensure_future(proc.wait())
        ready = WatchedFile(sidecar, read_txid_file)  # one stat a poll until it appears
        try:
            while True:
                if self._stopping:
                    raise Fenced()
                if ready.read() is not None:
                    return
                if exit_wait.done():
                    await self._drain_pumps()
                    text = self.child_log.text()
                    reason = classify_failure(text)
                    last = self.child_log.tail[-1] if self.child_log.tail else ""
                    raise FollowerStartError(
                        reason,
                        f"restore of {self.target.file} failed (code {proc.returncode}): {last}",
                    )
                if time.monotonic() > deadline:
                    raise FollowerStartError(
                        "timeout",
                        f"restore of {self.target.file} not done within "
                        f"{self.restore_timeout_s:g}s",
                    )
                await asyncio.wait({exit_wait}, timeout=0.1)
        finally:
            if not exit_wait.done():
                exit_wait.cancel()

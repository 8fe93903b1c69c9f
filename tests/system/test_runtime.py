"""The Daemon runtime in-process: failing cycles retry with capped backoff and never end the
loop, timeouts count as failures, stop waits for (or abandons) the in-flight cycle, cron
daemons run a missed fire time late rather than never, and heartbeat/health decisions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleet.config import RootConfig as FleetConfig
from shared.heartbeats import Heartbeat, assess, read_heartbeat
from shared.runtime import CycleResult, Daemon, DaemonRunner, backoff_delay, run_daemons
from shared.sections import FleetSection


def make_config(root: Path, **sweeper: object) -> FleetConfig:
    cfg = FleetConfig(fleet=FleetSection(root=root, host="t", stop_grace_s=0.5))
    for key, value in {"interval_s": 0.05, "backoff_max_s": 0.2, **sweeper}.items():
        setattr(cfg.claim_sweeper, key, value)
    return cfg


class FlakyDaemon(Daemon):
    name = "claim-sweeper"  # borrows that section for its interval/timeout settings
    calls: list[float]

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.calls = []

    async def cycle(self) -> CycleResult:
        self.calls.append(asyncio.get_running_loop().time())
        if len(self.calls) == 1:
            raise RuntimeError("dependency down")
        return CycleResult()


def test_backoff_doubles_caps_and_jitters() -> None:
    assert backoff_delay(1, 10, 600, rand=lambda: 0.5) == pytest.approx(10)
    assert backoff_delay(3, 10, 600, rand=lambda: 0.5) == pytest.approx(40)
    assert backoff_delay(30, 10, 600, rand=lambda: 0.5) == pytest.approx(600)
    assert backoff_delay(2, 10, 600, rand=lambda: 0.0) == pytest.approx(16)
    assert backoff_delay(2, 10, 600, rand=lambda: 1.0) == pytest.approx(24)
    # A cap below the interval never makes retries faster than the normal interval.
    assert backoff_delay(5, 60, 30, rand=lambda: 0.5) == pytest.approx(60)


async def test_failing_cycle_does_not_end_the_loop(tmp_path: Path) -> None:
    runner = DaemonRunner(FlakyDaemon, make_config(tmp_path), rand=lambda: 0.5)
    await runner.open(serve_metrics=False, with_outbox=False)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.loop(stop))
    daemon = runner.daemon
    assert isinstance(daemon, FlakyDaemon)
    for _ in range(200):
        if len(daemon.calls) >= 3:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    await runner.close()
    assert len(daemon.calls) >= 3, "the loop must go on after a failed cycle"
    samples = runner.metrics.registry.get_sample_value
    assert samples("fleet_cycles_total", {"daemon": "claim-sweeper", "outcome": "error"}) == 1
    assert samples("fleet_cycles_total", {"daemon": "claim-sweeper", "outcome": "ok"}) >= 2
    assert runner.failures == 0 and runner.last_ok_at is not None
    beat = read_heartbeat(tmp_path / "state/heartbeats", "claim-sweeper")
    assert beat is not None and beat.cycles >= 3 and beat.last_ok_at is not None


class SlowDaemon(Daemon):
    name = "claim-sweeper"
    finished = 0

    async def cycle(self) -> CycleResult:
        await asyncio.sleep(SlowDaemon.duration)
        SlowDaemon.finished += 1
        return CycleResult()

    duration = 0.0


async def test_cycle_timeout_counts_as_failure(tmp_path: Path) -> None:
    SlowDaemon.duration = 5.0
    runner = DaemonRunner(SlowDaemon, make_config(tmp_path, cycle_timeout_s=0.1))
    await runner.open(serve_metrics=False, with_outbox=False)
    assert await runner.run_cycle() is None
    await runner.close()
    assert (
        runner.metrics.registry.get_sample_value(
            "fleet_cycles_total", {"daemon": "claim-sweeper", "outcome": "timeout"}
        )
        == 1
    )


@pytest.mark.parametrize(("duration", "grace", "finished"), [(0.2, 2.0, 1), (3.0, 0.2, 0)])
async def test_stop_waits_for_in_flight_cycle_within_grace(
    tmp_path: Path, duration: float, grace: float, finished: int
) -> None:
    SlowDaemon.duration, SlowDaemon.finished = duration, 0
    cfg = make_config(tmp_path, cycle_timeout_s=10)
    cfg.fleet.stop_grace_s = grace
    runner = DaemonRunner(SlowDaemon, cfg)
    await runner.open(serve_metrics=False, with_outbox=False)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.loop(stop))
    await asyncio.sleep(0.05)  # the first cycle is in flight
    stop.set()
    await asyncio.wait_for(task, 10)
    await runner.close()
    assert SlowDaemon.finished == finished


class CronDaemon(Daemon):
    name = "claim-sweeper"
    schedule = "0 8 * * *"
    runs = 0

    @property
    def expected_interval_s(self) -> float:
        return 86400.0

    async def cycle(self) -> CycleResult:
        CronDaemon.runs += 1
        return CycleResult()


@pytest.mark.parametrize(
    ("now_hm", "last_ok_hours_ago", "due"),
    [
        ("08:05", 24.0, True),  # restarted at 08:05: today's 08:00 run is still sent
        ("08:05", 0.02, False),  # already ran at 08:04
        ("07:55", 23.0, False),  # not due yet
    ],
)
async def test_cron_runs_missed_fire_late_not_never(
    tmp_path: Path, now_hm: str, last_ok_hours_ago: float, due: bool
) -> None:
    from datetime import UTC, datetime

    from shared.heartbeats import write_heartbeat

    hh, mm = map(int, now_hm.split(":"))
    now = datetime(2026, 11, 23, hh, mm, tzinfo=UTC).timestamp()
    cfg = make_config(tmp_path, interval_s=86400.0)
    write_heartbeat(
        cfg.heartbeat_dir,
        Heartbeat(
            "claim-sweeper",
            "t",
            1,
            "0",
            "primary",
            now - last_ok_hours_ago * 3600,
            0.1,
            5,
            86400.0,
            now - 86400 * 3,
        ),
    )
    CronDaemon.runs = 0
    runner = DaemonRunner(CronDaemon, cfg, clock=lambda: now)
    await runner.open(serve_metrics=False, with_outbox=False)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.loop(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    await runner.close()
    assert CronDaemon.runs == (1 if due else 0)
    assert runner.next_due_at is not None and runner.next_due_at > now


def test_assess_health_decisions() -> None:
    beat = Heartbeat(
        "d",
        "h",
        1,
        "v",
        "primary",
        last_ok_at=1000.0,
        last_duration_s=0.1,
        cycles=3,
        expected_interval_s=60.0,
        started_at=900.0,
    )
    assert assess("d", beat, 1000 + 179).ok
    assert not assess("d", beat, 1000 + 181).ok
    assert not assess("d", None, 0).ok
    fresh = Heartbeat("d", "h", 1, "v", "primary", None, None, 0, 60.0, started_at=1000.0)
    assert assess("d", fresh, 1100).ok and not assess("d", fresh, 1200).ok
    cron = Heartbeat(
        "d", "h", 1, "v", "primary", None, None, 0, 86400.0, started_at=0.0, next_due_at=50_000.0
    )
    assert assess("d", cron, 49_000).ok  # healthy until its first run is due


async def test_refusal_exit_code(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, auto_release=True)
    cfg.fleet.role = "standby"
    from daemons.claim_sweeper.daemon import ClaimSweeper

    assert await run_daemons([ClaimSweeper], cfg) == 78


class BrokenLoopDaemon(Daemon):
    """Its cycle succeeds, but the runtime's bookkeeping around it then hits a bug."""

    name = "claim-sweeper"
    cycles_run = 0

    async def cycle(self) -> CycleResult:
        BrokenLoopDaemon.cycles_run += 1
        return CycleResult()

    @property
    def expected_interval_s(self) -> float:
        if BrokenLoopDaemon.cycles_run:
            raise RuntimeError("bug outside the cycle")
        return 60.0


async def test_a_crashed_loop_ends_the_process_nonzero(tmp_path: Path) -> None:
    """A daemon must never live on without cycling: the service manager restarts it."""
    cfg = make_config(tmp_path)
    cfg.claim_sweeper.metrics_port = 0
    code = await asyncio.wait_for(run_daemons([BrokenLoopDaemon], cfg), 10)
    assert code == 1 and BrokenLoopDaemon.cycles_run == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"last_ok_at": 1735689600000 * 1000.0},  # microseconds: far past year 9999
        {"last_ok_at": float("inf")},
        {"last_ok_at": "yesterday"},
        {"started_at": -5},
        {"expected_interval_s": 0},
        {"cycles": "many"},
        {"last_duration_s": float("nan")},
    ],
)
def test_a_bad_heartbeat_file_reads_as_unreadable_never_raises(
    tmp_path: Path, bad: dict[str, object]
) -> None:
    import json

    from shared.heartbeats import read_status

    beat = Heartbeat("d", "h", 1, "v", "primary", 1000.0, 0.1, 3, 60.0, 900.0).to_json()
    beat.update(bad)
    (tmp_path / "d.json").write_text(json.dumps(beat, allow_nan=True))
    assert read_heartbeat(tmp_path, "d") is None
    status = read_status(tmp_path, "d", 2000.0)
    assert not status.ok and status.reason == "unreadable heartbeat file"
    assert read_status(tmp_path, "missing", 2000.0).reason == "no heartbeat file"


def test_a_hung_heartbeat_write_counts_as_wedged(tmp_path: Path) -> None:
    """The heartbeat write runs in a thread after the cycle: if it hangs (a dead disk), the
    loop no longer cycles, so the runner must report itself wedged and stop WATCHDOG=1."""
    import time

    runner = DaemonRunner(FlakyDaemon, make_config(tmp_path, cycle_timeout_s=5))
    assert not runner.wedged()
    runner.write_started_mono = time.monotonic() - 10
    assert not runner.wedged(), "a slow write within the margin is not a wedge"
    runner.write_started_mono = time.monotonic() - 36
    assert runner.wedged()
    runner.write_started_mono = None
    runner.cycle_started_mono = time.monotonic() - 36
    assert runner.wedged()

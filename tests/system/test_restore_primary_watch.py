"""The primary watch against a real HTTP server on 127.0.0.1: up, one failure (still up), a
hang past the deadline twice (down), gone; the URL never in the error text."""

from __future__ import annotations

import pytest

from daemons.restore_loop.primary_watch import PrimaryWatch
from tests.fakes.http import FakeHTTPServer

pytestmark = pytest.mark.system


async def test_primary_watch_up_then_down_after_n_failures() -> None:
    server = FakeHTTPServer(lambda m, p, h, b: (200, {}, {"ok": True})).start()
    watch = PrimaryWatch(f"{server.base_url}/health", down_after=2, deadline_s=1.0)
    try:
        assert await watch.probe() is True and watch.up is True
        assert await watch.probe() is None  # no change
        server.fail(503, times=1)
        assert await watch.probe() is None and watch.up is True  # one failure is not down
        assert await watch.probe() is None and watch.failures == 0  # answered again
        server.hang(times=2)
        assert await watch.probe() is None
        assert await watch.probe() is False and watch.up is False  # deadline, twice
        assert "timeout" in watch.last_error
        server.stop()
        assert await watch.probe() is None and watch.up is False
        assert server.base_url not in watch.last_error  # the URL is never in the error
    finally:
        await watch.close()
        server.stop()

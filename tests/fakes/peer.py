"""A fake peer host's health endpoint on ``FakeHTTPServer``, scripted probe by probe.

``script("ok", "fail", ...)`` queues the answers to the next probes: ``ok`` is a fleet /health
answer (200, JSON with ``status`` and ``role``), ``fail`` a 503 that is not one, ``garbage`` a 200
HTML page. With ``hold=True`` a probe that finds the script empty waits (unanswered) until the
test scripts its answer or the server stops, so a test can step a daemon one probe at a time:
"request N+1 arrived" proves probe N was answered and handled. Otherwise the answer is
``default``. Faults (hang, reset, ...) come from the base class.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Literal

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakePeer", "Outcome"]

Outcome = Literal["ok", "fail", "garbage"]


class FakePeer(FakeHTTPServer):
    def __init__(
        self,
        *,
        role: str = "standby",
        host_name: str = "peerhost",
        default: Outcome = "ok",
        hold: bool = False,
    ) -> None:
        super().__init__()
        self.role = role
        self.host_name = host_name
        self.default: Outcome = default
        self.hold = hold
        self._script: deque[Outcome] = deque()
        self._cond = threading.Condition()
        self.answered: list[Outcome] = []

    @property
    def health_url(self) -> str:
        return f"{self.base_url}/health"

    def script(self, *outcomes: Outcome) -> None:
        with self._cond:
            self._script.extend(outcomes)
            self._cond.notify_all()

    def set_hold(self, hold: bool) -> None:
        with self._cond:
            self.hold = hold
            self._cond.notify_all()

    def _next(self) -> Outcome | None:
        with self._cond:
            while not self._script and self.hold:
                if self._stopping.is_set():
                    return None
                self._cond.wait(0.05)
            outcome = self._script.popleft() if self._script else self.default
            self.answered.append(outcome)
            return outcome

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if path != "/health":
            return 404, {}, "not found"
        outcome = self._next()
        if outcome is None:
            return 503, {}, "stopping"
        if outcome == "ok":
            return (
                200,
                {},
                {"status": "ok", "host": self.host_name, "role": self.role, "daemons": {}},
            )
        if outcome == "garbage":
            return 200, {"Content-Type": "text/html"}, "<html>502 Bad Gateway</html>"
        return 503, {"Content-Type": "text/plain"}, "service unavailable"

"""Is the primary alive? One GET of its heartbeat ``/health`` per supervision tick, under one
overall deadline. While it answers (any HTTP answer below 500 counts: the host is up and
serving), followers poll at the budget's slow intervals; after ``down_after`` failed probes in a
row it is down and every P0 follower switches to fast follow. It must never log the URL (it may
carry a token), and a dead, slow or hostile endpoint must never hold a tick past the deadline.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from shared.http import PeerError, request_with_deadline

__all__ = ["PrimaryWatch"]

MAX_BODY = 64 * 1024


@dataclass
class PrimaryWatch:
    url: str
    down_after: int
    deadline_s: float
    failures: int = 0
    #: None until the first probe; then whether the primary counts as up
    up: bool | None = None
    last_error: str = ""
    _client: Any = field(default=None, repr=False)

    async def probe(self) -> bool | None:
        """Probe once; return the new state when it changed, else None."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        try:
            answer = await request_with_deadline(
                self._client, "GET", self.url, deadline_s=self.deadline_s, max_body_bytes=MAX_BODY
            )
            ok = answer.status < 500
            self.last_error = "" if ok else f"HTTP {answer.status}"
        except PeerError as exc:
            ok, self.last_error = False, f"{exc.kind}: {exc.detail}"
        self.failures = 0 if ok else self.failures + 1
        before = self.up
        if ok:
            self.up = True
        elif self.failures >= self.down_after:
            self.up = False
        return self.up if self.up != before else None

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

"""A fake Paperless-ngx correspondents API on FakeHTTPServer: paginated
``GET /api/correspondents/``, ``Authorization: Token <t>`` required (401 otherwise).
``trickle_s`` sends every answer one byte per ``trickle_s`` seconds; ``results`` set to
anything but None replaces the ``results`` of every page (e.g. ``"null"`` for a JSON null);
``next_base`` set makes every ``next`` link point there instead (a server answering with links
to another origin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakePaperless"]


class FakePaperless(FakeHTTPServer):
    def __init__(
        self,
        correspondents: list[dict[str, Any]],
        *,
        token: str = "pl-token",
        page_size: int = 2,
        trickle_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.wants_query = True  # pages are ?page=N
        self.trickle_s = trickle_s
        self.results: Any = None  # set: every page's "results" is this ("null": JSON null)
        self.correspondents = correspondents
        self.token = token
        self.page_size = page_size
        self.next_base: str | None = None

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        if parts.path != "/api/correspondents/":
            return 404, {}, {"detail": "Not found."}
        if headers.get("authorization") != f"Token {self.token}":
            return 401, {}, {"detail": "Invalid token."}
        page = int(parse_qs(parts.query).get("page", ["1"])[0])
        start = (page - 1) * self.page_size
        chunk = self.correspondents[start : start + self.page_size]
        more = start + self.page_size < len(self.correspondents)
        base = self.next_base or self.base_url
        nxt = f"{base}/api/correspondents/?page={page + 1}" if more else None
        results: Any = chunk
        if self.results is not None:
            results = None if self.results == "null" else self.results
        return 200, {}, {"count": len(self.correspondents), "next": nxt, "results": results}

"""Paperless correspondents client: one paginated fetch per cycle, cached by the daemon.

Best-effort by design: any failure raises ``PaperlessError`` with a reason and the daemon falls
back to DB history: no answer within ``timeout_s`` (one deadline per request, from connect to
the last byte, ``shared.http``), an HTTP error, or an answer that is not a page (not JSON,
``results`` not a list, ``next`` not a URL). Never any other exception. Tokens and Cloudflare
Access secrets go in headers and are never logged.
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.http import PeerError, request_with_deadline

__all__ = ["PaperlessClient", "PaperlessError"]

MAX_PAGES = 50
MAX_PAGE_BYTES = 4 * 1024 * 1024


class PaperlessError(Exception):
    pass


class PaperlessClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        cf_id: str = "",
        cf_secret: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        if cf_id and cf_secret:
            headers["CF-Access-Client-Id"] = cf_id
            headers["CF-Access-Client-Secret"] = cf_secret
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers)

    async def correspondents(self) -> list[dict[str, Any]]:
        url: str | None = f"{self.base_url}/api/correspondents/?page_size=100"
        out: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            try:
                resp = await request_with_deadline(
                    self._client,
                    "GET",
                    url,
                    deadline_s=self.timeout_s,
                    max_body_bytes=MAX_PAGE_BYTES,
                )
            except PeerError as exc:
                raise PaperlessError(exc.detail) from None
            if resp.status != 200:
                raise PaperlessError(f"HTTP {resp.status}")
            try:
                data = resp.json()
            except ValueError:
                raise PaperlessError("answer is not JSON") from None
            results, nxt = _page(data)
            out.extend(r for r in results if isinstance(r, dict))
            # Follow `next` only on the same server: never let a response redirect our token.
            url = nxt if nxt is not None and nxt.startswith(self.base_url) else None
        return out

    async def close(self) -> None:
        await self._client.aclose()


def _page(data: Any) -> tuple[list[Any], str | None]:
    """(results, next URL) of one page; PaperlessError saying what is wrong with it."""
    if not isinstance(data, dict):
        raise PaperlessError("answer is not a JSON object")
    results, nxt = data.get("results"), data.get("next")
    if not isinstance(results, list):
        raise PaperlessError(f"results is not a list ({type(results).__name__})")
    if nxt is not None and not isinstance(nxt, str):
        raise PaperlessError(f"next is not a URL ({type(nxt).__name__})")
    return results, nxt

"""Paperless correspondents client: one paginated fetch per cycle, cached by the daemon.

Best-effort by design: any failure raises ``PaperlessError`` and the daemon falls back to DB
history. Tokens and Cloudflare Access secrets go in headers and are never logged.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["PaperlessClient", "PaperlessError"]

MAX_PAGES = 50


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
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers)

    async def correspondents(self) -> list[dict[str, Any]]:
        url: str | None = f"{self.base_url}/api/correspondents/?page_size=100"
        out: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            try:
                resp = await self._client.get(url)
            except httpx.HTTPError as exc:
                raise PaperlessError(type(exc).__name__) from None
            if resp.status_code != 200:
                raise PaperlessError(f"HTTP {resp.status_code}")
            try:
                data = resp.json()
                results = data["results"]
                nxt = data.get("next")
            except (ValueError, KeyError, TypeError):
                raise PaperlessError("unexpected response shape") from None
            out.extend(r for r in results if isinstance(r, dict))
            # Follow `next` only on the same server: never let a response redirect our token.
            url = nxt if isinstance(nxt, str) and nxt.startswith(self.base_url) else None
        return out

    async def close(self) -> None:
        await self._client.aclose()

"""Paperless correspondents client: one paginated fetch per cycle, cached by the daemon.

Best-effort by design: any failure raises ``PaperlessError`` with a reason and the daemon falls
back to DB history: no answer within ``timeout_s`` (one deadline per request, from connect to
the last byte, ``shared.http``), an HTTP error, or an answer that is not a page (not JSON,
``results`` not a list, ``next`` not a URL, or a ``next`` link to another origin). Never any
other exception. Tokens and Cloudflare Access secrets go in headers, only ever to the configured
origin (scheme, host and port: ``shared.urls``), and are never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.http import PeerError, request_with_deadline
from shared.urls import redact_url, same_origin_link

if TYPE_CHECKING:  # imported with the first request: an idle daemon never loads httpx
    import httpx

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
        self._headers = headers
        self._client: httpx.AsyncClient | None = None  # built at the first request

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s), headers=self._headers
            )
        return self._client

    async def correspondents(self) -> list[dict[str, Any]]:
        url: str | None = f"{self.base_url}/api/correspondents/?page_size=100"
        out: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            try:
                resp = await request_with_deadline(
                    self._http(),
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
            url = None if nxt is None else self._next_url(nxt)
        return out

    def _next_url(self, nxt: str) -> str:
        """``nxt`` as a URL on the configured origin; PaperlessError when it leaves it (a
        string prefix let ``http://host:30011`` and ``http://host:3001@elsewhere`` through):
        our token never follows a link elsewhere, and half a list is not taken for all."""
        url = same_origin_link(nxt, self.base_url + "/")
        if url is None:
            raise PaperlessError(
                f"next link points at another origin ({redact_url(nxt)}); not followed"
            )
        return url

    async def close(self) -> None:
        if self._client is not None:
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

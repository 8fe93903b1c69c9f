"""One outbound HTTP exchange under one overall deadline and a body limit.

httpx's timeouts are per phase and per read: a peer that trickles one byte a second never
trips a 15 s read timeout and holds the caller for as long as it likes. ``request_with_deadline``
bounds the whole exchange (connect, headers, body) with ``anyio.fail_after`` and streams the body
up to ``max_body_bytes``. Every failure is one ``PeerError`` whose ``kind`` says what happened
(``timeout``, ``connection``, ``too_large``) and whose text names neither the URL (it may carry
a token) nor any of the body. A caller's own cancellation is never turned into a PeerError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # httpx is imported by the caller that builds the client
    import httpx

__all__ = ["DEFAULT_MAX_BODY_BYTES", "PeerAnswer", "PeerError", "request_with_deadline"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

PeerErrorKind = Literal["timeout", "connection", "too_large"]


class PeerError(Exception):
    """The peer gave no usable answer in time. ``kind``: timeout | connection | too_large."""

    def __init__(self, kind: PeerErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class PeerAnswer:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError (never RecursionError) when it is not JSON."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deep") from None


async def request_with_deadline(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    deadline_s: float,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    **kwargs: Any,
) -> PeerAnswer:
    """``method url`` through ``client`` (kwargs as for ``client.stream``), done within
    ``deadline_s`` seconds from start to the last body byte. Raises PeerError."""
    import anyio
    import httpx

    try:
        with anyio.fail_after(deadline_s):
            async with client.stream(method, url, **kwargs) as resp:
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > max_body_bytes:
                        raise PeerError("too_large", f"answer over {max_body_bytes} bytes")
                return PeerAnswer(resp.status_code, resp.headers, bytes(body))
    except TimeoutError:
        raise PeerError("timeout", f"no complete answer within {deadline_s:g} s") from None
    except httpx.TimeoutException:
        raise PeerError("timeout", f"no answer within {deadline_s:g} s") from None
    except httpx.HTTPError as exc:
        raise PeerError("connection", type(exc).__name__) from None
    except OSError as exc:
        raise PeerError("connection", type(exc).__name__) from None

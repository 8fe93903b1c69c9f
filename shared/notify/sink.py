"""What a delivery channel must provide (``Sink``) and the one error every transport raises
(``SinkError``, with a ``permanent`` flag). Retrying is the sender's job, never a sink's.
"""

from __future__ import annotations

from typing import Protocol

from shared.notify.message import OutboxRow

__all__ = ["Sink", "SinkError"]


class SinkError(Exception):
    """A delivery failed. ``permanent``: retrying cannot help (the row goes dead).
    ``retry_after_s``: the service asked for this wait (HTTP 429 Retry-After)."""

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        retry_after_s: float | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    """A delivery channel an outbox row can name (``Message.sink``)."""

    name: str

    @property
    def available(self) -> bool:
        """False while unconfigured (no token): the sender holds its rows, it does not fail
        them."""
        ...

    async def send(self, row: OutboxRow) -> None:
        """Deliver ``row`` once or raise ``SinkError``."""
        ...

    async def close(self) -> None: ...

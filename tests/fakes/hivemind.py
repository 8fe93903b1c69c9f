"""A fake HiveMind HTTP API on ``FakeHTTPServer``: ``POST /api/messages`` with a JSON body
(ts, source, topic, severity, body, dedup_key) answers 201 and records the message.

With ``token`` set, requests must carry ``Authorization: Bearer <token>`` (else 401). Bodies
that are not a JSON object with the five message fields answer 400. Faults (429, 500,
garbage, reset, hang) come from the base class.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakeHiveMind"]

FIELDS = ("ts", "source", "topic", "severity", "body")


class FakeHiveMind(FakeHTTPServer):
    def __init__(self, token: str = "", *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.token = token
        self._messages: list[dict[str, Any]] = []
        self._hm_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/messages"

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._hm_lock:
            return list(self._messages)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if path != "/api/messages":
            return 404, {}, {"error": "not found"}
        if method != "POST":
            return 405, {}, {"error": "method not allowed"}
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, {"error": "unauthorized"}
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return 400, {}, {"error": "body is not JSON"}
        if not isinstance(data, dict) or any(not isinstance(data.get(f), str) for f in FIELDS):
            return 400, {}, {"error": "missing message fields"}
        with self._hm_lock:
            self._messages.append({**data, "idempotency_key": headers.get("idempotency-key")})
            message_id = len(self._messages)
        return 201, {}, {"id": message_id}

"""Slack incoming webhooks on ``FakeHTTPServer``, as Alertmanager's ``slack_configs`` post to
them: ``POST /hooks/<name>`` with a JSON payload is answered ``200 ok`` (Slack's answer);
anything else 404 ``no_service``. Every post is recorded raw (``requests``); ``payloads``
decodes the ones to one hook. Faults (500, 429, hang) come from the base class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakeSlackWebhook"]


class FakeSlackWebhook(FakeHTTPServer):
    def hook_url(self, name: str) -> str:
        return f"{self.base_url}/hooks/{name}"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if method == "POST" and path.startswith("/hooks/"):
            return 200, {"Content-Type": "text/plain"}, "ok"
        return 404, {"Content-Type": "text/plain"}, "no_service"

    def payloads(self, name: str | None = None) -> list[Any]:
        """The JSON bodies answered normally, to hook ``name`` (None: any), in arrival order
        (a body that is not JSON is recorded as None)."""
        return [
            req.json
            for req in self.requests
            if req.fault is None
            and req.method == "POST"
            and (req.path == f"/hooks/{name}" if name else req.path.startswith("/hooks/"))
        ]

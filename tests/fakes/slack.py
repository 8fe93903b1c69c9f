"""A fake Slack Web API (``chat.postMessage``, ``auth.test``) on ``FakeHTTPServer``.

Point ``SlackSection.base_url`` at ``fake.base_url`` (it ends in ``/api/``). Requests must carry
``Authorization: Bearer <token>`` (or a ``token`` form field) matching ``fake.token``, else the
answer is ``invalid_auth`` as real Slack gives it. Delivered messages are recorded in
``messages``; ``reject_channel`` makes a channel answer a Slack error such as
``channel_not_found``. Faults (429, 500, garbage, reset, hang) come from the base class.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http import FakeHTTPServer, Response, parse_body

__all__ = ["DEFAULT_TOKEN", "FakeSlack", "SlackMessage"]

DEFAULT_TOKEN = "xoxb-test-0000-fake"


@dataclass(frozen=True)
class SlackMessage:
    channel: str
    text: str
    ts: str
    extra: dict[str, Any] = field(default_factory=dict)  # every other argument sent


class FakeSlack(FakeHTTPServer):
    def __init__(self, token: str = DEFAULT_TOKEN, *, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self.token = token
        self._messages: list[SlackMessage] = []
        self._channel_errors: dict[str, str] = {}
        self._ts = itertools.count(1)
        self._slack_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{super().base_url}/api/"

    @property
    def messages(self) -> list[SlackMessage]:
        with self._slack_lock:
            return list(self._messages)

    def texts(self, channel: str | None = None) -> list[str]:
        return [m.text for m in self.messages if channel is None or m.channel == channel]

    def reject_channel(self, channel: str, error: str = "channel_not_found") -> None:
        """Posts to ``channel`` answer ``{"ok": false, "error": error}`` from now on."""
        with self._slack_lock:
            self._channel_errors[channel] = error

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if not path.startswith("/api/"):
            return 404, {}, "not found"
        api_method = path[len("/api/") :]
        parsed_json, form = parse_body(headers, body)
        args: dict[str, Any] = dict(form)
        if isinstance(parsed_json, dict):
            args.update(parsed_json)
        if not self._authorized(headers, args):
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        if api_method == "auth.test":
            return (
                200,
                {},
                {
                    "ok": True,
                    "url": "https://fake.slack.test/",
                    "team": "fake",
                    "user": "fleet-bot",
                    "team_id": "T0FAKE",
                    "user_id": "U0FAKE",
                },
            )
        if api_method == "chat.postMessage":
            return self._post_message(args)
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def _authorized(self, headers: Mapping[str, str], args: Mapping[str, Any]) -> bool:
        auth = headers.get("authorization", "")
        given = auth[len("Bearer ") :] if auth.startswith("Bearer ") else str(args.get("token", ""))
        return bool(self.token) and given == self.token

    def _post_message(self, args: dict[str, Any]) -> Response:
        channel = str(args.pop("channel", "") or "")
        text = str(args.pop("text", "") or "")
        args.pop("token", None)
        if not channel:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        with self._slack_lock:
            error = self._channel_errors.get(channel)
            if error:
                return 200, {}, {"ok": False, "error": error}
            if not text and not args.get("blocks") and not args.get("attachments"):
                return 200, {}, {"ok": False, "error": "no_text"}
            ts = f"1700000000.{next(self._ts):06d}"
            self._messages.append(SlackMessage(channel=channel, text=text, ts=ts, extra=args))
        return (
            200,
            {},
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"type": "message", "text": text, "ts": ts},
            },
        )

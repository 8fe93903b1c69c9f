"""``SlackSink``: chat.postMessage through slack-sdk, and the classification of Slack's
answers into ``SinkError`` reasons (what is permanent, what is worth retrying).

The call goes through slack-sdk's synchronous ``WebClient`` (urllib) in a worker thread
(``anyio.to_thread``) under one overall deadline (``anyio.fail_after``): the async client needs
aiohttp, which would cost every daemon ~10 MiB of memory for one message now and then. A call
that outlives the deadline is abandoned to its thread, which ends at the client's socket
timeout. It must never retry (slack-sdk's retry handlers are off: the outbox owns retries) and
never assume a Slack answer is a JSON object. slack-sdk is imported on first send, in the worker
thread; anyio on first send too.
"""

from __future__ import annotations

import http.client
import logging
from typing import Any

from shared.notify.message import OutboxRow
from shared.notify.sink import SinkError
from shared.sections import SlackSection

__all__ = ["SLACK_PERMANENT_ERRORS", "SlackSink"]

# Slack errors that no retry can fix. Auth errors are NOT here: a rotated token must hold
# messages until it is fixed, not kill them.
SLACK_PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_arguments",
        "user_not_found",
        "cannot_dm_bot",
        "restricted_action",
    }
)
SLACK_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "account_inactive"})
# slack-sdk's stand-in "error" for a body that was not JSON (it quotes the body: never logged).
NOT_JSON_PREFIX = "Received a response in a non-JSON format"
# The sync client logs an undecodable answer at ERROR, quoting its body; the outbox logs the
# failure itself ("notification failed", with the reason), so the client's own logger is mute.
_SDK_LOG = logging.getLogger("slack_sdk.fleet_sink")
_SDK_LOG.disabled = True


class SlackSink:
    """chat.postMessage through slack-sdk's WebClient in a worker thread; retries are the
    outbox's job."""

    name = "slack"

    def __init__(self, settings: SlackSection) -> None:
        self._token = settings.token.get_secret_value()
        self._base_url = (
            settings.base_url if settings.base_url.endswith("/") else settings.base_url + "/"
        )
        self._timeout = int(max(1, settings.timeout_s))
        self._client: Any = None

    @property
    def available(self) -> bool:
        return bool(self._token)

    def _get_client(self) -> Any:
        """The client, built on first use (in the worker thread: slack-sdk loads there)."""
        if self._client is None:
            from slack_sdk import WebClient

            self._client = WebClient(
                token=self._token,
                base_url=self._base_url,
                timeout=self._timeout,
                retry_handlers=[],
                logger=_SDK_LOG,
            )
        return self._client

    def _post(self, row: OutboxRow) -> None:
        """One chat.postMessage (blocking: runs in a worker thread); raises SinkError."""
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            self._get_client().chat_postMessage(channel=row.channel, text=row.text, **row.payload)
        except SlackApiError as exc:
            raise _slack_api_error(exc.response) from None
        except AttributeError as exc:
            # slack-sdk's validate() calls .get() on whatever the body parsed to: a JSON list
            # from a proxy ends here, not in SlackApiError.
            raise SinkError("bad_response", detail=f"not a Slack JSON answer ({exc})") from None
        except (OSError, http.client.HTTPException, SlackClientError, ValueError) as exc:
            # OSError: refused, reset, socket timeout (urllib's URLError is one too);
            # HTTPException: a truncated or garbled answer; ValueError: an undecodable body.
            raise SinkError("connection", detail=type(exc).__name__) from None

    async def send(self, row: OutboxRow) -> None:
        import anyio  # here, not at the top: a daemon that never sends Slack never loads it
        import anyio.to_thread

        try:
            with anyio.fail_after(self._timeout + 5):
                await anyio.to_thread.run_sync(self._post, row, abandon_on_cancel=True)
        except TimeoutError:
            raise SinkError("connection", detail="TimeoutError") from None

    async def close(self) -> None:
        self._client = None


def _slack_api_error(response: Any) -> SinkError:
    """Classify a failed Web API call. ``response`` is a SlackResponse whose data may be a
    dict (slack-sdk's own stand-in when the body was not JSON), a str or a list: never assume
    a dict."""
    raw_status = getattr(response, "status_code", None)
    if raw_status is None:
        raw_status = getattr(response, "status", None)
    status = raw_status if isinstance(raw_status, int) else 0
    data = getattr(response, "data", None)
    error = str(data.get("error", "") or "") if isinstance(data, dict) else ""
    if status == 429:
        headers = getattr(response, "headers", None) or {}
        return SinkError("rate_limited", retry_after_s=_retry_after(headers))
    if status >= 500:
        return SinkError("server_error", detail=f"HTTP {status}")
    if error in SLACK_PERMANENT_ERRORS:
        return SinkError("rejected", permanent=True, detail=error)
    if error in SLACK_AUTH_ERRORS:
        return SinkError("auth", detail=error)
    if not isinstance(data, dict) or not data or error.startswith(NOT_JSON_PREFIX):
        return SinkError("bad_response", detail=f"HTTP {status}, not a Slack JSON answer")
    return SinkError("api_error", detail=error or f"HTTP {status}")


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header (either spelling, list or scalar); None when absent
    or not a number."""
    try:
        for key in ("Retry-After", "retry-after"):
            if key in headers:
                value = headers[key]
                if isinstance(value, list):
                    value = value[0]
                return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
    return None

"""Logs are one JSON object per line with the standard keys; addresses are hashed and
secrets never appear, also through stdlib loggers."""

from __future__ import annotations

import io
import json
import logging

from pydantic import SecretStr

from shared.logging import configure_logging, get_logger, hash_email, redact_text


def capture() -> io.StringIO:
    buf = io.StringIO()
    configure_logging(host="h1", daemon="email-reactor", stream=buf)
    return buf


def records(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_lines_with_standard_keys() -> None:
    buf = capture()
    get_logger().info("cycle done", count=3)
    (rec,) = records(buf)
    assert rec["event"] == "cycle done" and rec["count"] == 3
    assert rec["daemon"] == "email-reactor" and rec["host"] == "h1" and rec["level"] == "info"
    assert str(rec["timestamp"]).endswith("Z")


def test_emails_hashed_and_secrets_redacted() -> None:
    buf = capture()
    get_logger().info(
        "mail from ceo@example.com about partner@example.org",
        sender="Partner@Example.org",
        token="xoxb-123456-abcdef",
        slack_token=SecretStr("xoxb-999999-zzz"),
        headers={"Authorization": "Bearer abcdefghijklmnop", "X-Note": "ok"},
        note="leaked xoxb-777777-qqq in text",
        token_file="/etc/alai-fleet/slack.token",
    )
    out = buf.getvalue()
    for secret in (
        "ceo@example.com",
        "partner@example.org",
        "Partner@Example.org",
        "xoxb-123456",
        "xoxb-999999",
        "abcdefghijklmnop",
        "xoxb-777777",
    ):
        assert secret not in out
    (rec,) = records(buf)
    assert rec["sender"] == hash_email("partner@example.org")
    assert hash_email("ceo@example.com") in str(rec["event"])
    assert rec["token_file"] == "/etc/alai-fleet/slack.token"
    assert rec["headers"] == {"Authorization": "[redacted]", "X-Note": "ok"}  # type: ignore[comparison-overlap]


def test_stdlib_loggers_are_json_and_redacted() -> None:
    buf = capture()
    logging.getLogger("some.library").warning("failed for bob@example.com")
    (rec,) = records(buf)
    assert rec["level"] == "warning" and "bob@example.com" not in buf.getvalue()
    assert rec["host"] == "h1"


def test_redact_text_is_stable() -> None:
    assert redact_text("a@example.com") == hash_email("A@example.com")
    assert len(hash_email("x@example.com")) == 8

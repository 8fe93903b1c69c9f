"""Alert policy for expired leases: pure functions of lease data, no I/O.

One alert per lease (its dedup key names the task, holder and the exact expiry, so a lease that
is re-claimed and expires again alerts again, while the same expiry never alerts twice).
"""

from __future__ import annotations

import hashlib

from shared.mission_control import ExpiredLease, UnreadableLease, format_iso
from shared.notify import Message
from shared.notify.escape import slack_text
from shared.timestamps import shown

__all__ = ["alert_due", "alert_message", "describe_age", "release_command", "unreadable_message"]


def release_command(task_id: int) -> str:
    """The operator's command for a stuck lease; it must run as written (no actor needed)."""
    return f"fleet mc claim-release {task_id} --force"


def alert_due(lease: ExpiredLease, alert_after_s: float) -> bool:
    return lease.expired_for_s >= alert_after_s


def describe_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"


def _title(title: str) -> str:
    """A task's first line for #ops (titles come from mail and other tools: escaped)."""
    first = next((line for line in title.splitlines() if line.strip()), "")
    return slack_text(first, 120) or "(untitled)"


def alert_message(lease: ExpiredLease, *, channel: str, host: str, released: bool) -> Message:
    title, holder = _title(lease.title), slack_text(lease.holder, 120)
    action = (
        "released by claim-sweeper"
        if released
        else f"still held; release with `{release_command(lease.id)}` if the holder is gone"
    )
    text = (
        f'[claim-sweeper@{host}] Task {lease.id} "{title}": lease of {holder} expired '
        f"{describe_age(lease.expired_for_s)} ago ({format_iso(lease.lease_until)}); {action}"
    )
    return Message(
        channel=channel,
        text=text,
        dedup_key=f"claim-expired:{lease.id}:{lease.holder}:{lease.raw_lease_until}",
        kind="alert",
        daemon="claim-sweeper",
    )


def _digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode("utf-8", "replace")).hexdigest()[:16]


def unreadable_message(lease: UnreadableLease, *, channel: str, host: str) -> Message:
    """One alert per task whose lease_until nobody can read (the dedup key names the exact
    value, so the same value never alerts twice and a rewritten one alerts again)."""
    title, holder = _title(lease.title), slack_text(lease.holder, 120)
    text = (
        f'[claim-sweeper@{host}] Task {lease.id} "{title}": lease of {holder} has an unreadable '
        f"lease_until {slack_text(shown(lease.raw_lease_until), 120)} "
        f"({slack_text(lease.reason, 200)}); it is never "
        f"released automatically; release with `{release_command(lease.id)}` if the holder "
        "is gone"
    )
    return Message(
        channel=channel,
        text=text,
        # hashed: the raw value is another tool's and may be any length
        dedup_key=f"claim-unreadable:{lease.id}:{lease.holder}:{_digest(lease.raw_lease_until)}",
        kind="alert",
        daemon="claim-sweeper",
    )

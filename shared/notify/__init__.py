"""Notifications: a durable outbox with dedup keys (a SQLite file per host, or one Postgres
table for the fleet), and the sender that drains it.

Daemons never talk to Slack directly: they ``enqueue`` a Message (a dedup key makes a repeat a
no-op) and an ``OutboxSender`` delivers it. Rows are claimed by compare-and-set with a lease, so
any number of senders (on one host, or on every host sharing a Postgres outbox) share it
without sending a row twice; a sender that dies mid-send leaves its row to be retried when
the lease lapses (the one duplicate a crash can cause). Policy lives in small functions of
data and ``now``: stale or silenced alerts collapse into one summary per channel
(``collapse``), bursts collapse, each channel is rate limited, and #ceo pushes are never
silenced. Intervals (the rate limit's minute, a silence's length) are measured on the
monotonic clock, so a wall-clock step never holds a push. Transports raise one ``SinkError``
with a ``permanent`` flag.
Nothing here may drop a message silently: every row ends as sent, collapsed (into a sent
summary) or dead (permanent error, counted and logged).

Modules: ``message`` (the plain data), ``collapse`` (the pure collapse plan), ``outbox`` (the
store's protocol and ``outbox_for``), ``outbox_sqlite`` and ``outbox_postgres`` (the stores)
with ``outbox_sql`` (the statements and operations both share),
``sink`` and ``slack`` (transports), ``sender`` (the delivery loop), ``metrics``.
"""

from shared.notify.collapse import summary_text
from shared.notify.message import MAX_SILENCE_S, Kind, Message, OutboxRow, Silence
from shared.notify.metrics import NotifyMetrics
from shared.notify.outbox import Outbox, OutboxStore, outbox_for
from shared.notify.sender import OutboxSender, retry_delay_s
from shared.notify.sink import Sink, SinkError
from shared.notify.slack import SlackSink

__all__ = [
    "MAX_SILENCE_S",
    "Kind",
    "Message",
    "NotifyMetrics",
    "Outbox",
    "OutboxRow",
    "OutboxSender",
    "OutboxStore",
    "Silence",
    "Sink",
    "SinkError",
    "SlackSink",
    "outbox_for",
    "retry_delay_s",
    "summary_text",
]

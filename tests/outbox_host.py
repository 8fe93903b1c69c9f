"""One "host" of the shared-outbox tests (run as ``python -m tests.outbox_host``; holds no
tests): loads the fleet config it is given (its own root, ``[notify] url`` on the shared
Postgres, the password from ``[notify] password_file``), opens the outbox the way the runner
does (``outbox_for``), waits for the go file, enqueues one push per key, then runs a real
``OutboxSender`` against the (fake) Slack of the config until no row of the outbox is pending.

argv: CONFIG GO_FILE HOST KEY... ; prints one JSON line: {"host", "enqueued": [keys it stored]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from shared.config import load_config
from shared.logging import get_logger
from shared.notify import Message, OutboxSender, SlackSink, outbox_for

DEADLINE_S = 60.0


async def main(config_path: str, go_file: str, host: str, keys: list[str]) -> None:
    config = load_config(config_path)
    outbox = await outbox_for(config.notify).open()
    sender = OutboxSender(
        outbox, {"slack": SlackSink(config.slack)}, config.notify, log=get_logger(), owner=host
    )
    try:
        print(json.dumps({"host": host, "ready": True}), flush=True)
        deadline = time.monotonic() + DEADLINE_S
        while not Path(go_file).exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go file")
            await asyncio.sleep(0.01)
        enqueued = [
            key
            for key in keys
            if await outbox.enqueue(
                Message(channel="#ceo", text=f"incident {key}", dedup_key=key, kind="push")
            )
        ]
        while time.monotonic() < deadline:
            counts = await outbox.counts()
            if not counts.get("pending") and not counts.get("sending"):
                break
            if not await sender.step():
                await asyncio.sleep(0.05)
        print(json.dumps({"host": host, "enqueued": enqueued}), flush=True)
    finally:
        await sender.close()
        await outbox.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))

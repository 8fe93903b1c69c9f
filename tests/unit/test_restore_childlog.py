"""How restore-loop runs litestream's children: their environment (Go on one CPU), and their
output in the daemon's log: errors and warnings always reach it; the progress line litestream
prints for every LTX file it applies is logged at debug, and with debug off it is only kept in
the tail (not parsed: ~1 line a second per busy DB)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemons.restore_loop import litestream
from daemons.restore_loop.litestream import ChildLog, parse_logfmt

APPLIED = 'time=2026-12-02T10:00:00Z level=INFO msg="follow: applied updates" txid=000000000000002a'
ERROR = 'time=2026-12-02T10:00:01Z level=ERROR msg="follow: poll failed" error="dial tcp: refused"'
INFO = 'time=2026-12-02T10:00:02Z level=INFO msg="entering follow mode" txid=000000000000002a'


def capture(level: int) -> tuple[Any, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def keep(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        seen.append({"method": method, **event})
        raise structlog.DropEvent

    log = structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[keep],
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
    return log, seen


def test_progress_lines_are_skipped_with_debug_off_errors_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []

    def counting_parse(line: str) -> dict[str, str]:
        parsed.append(line)
        return parse_logfmt(line)

    monkeypatch.setattr(litestream, "parse_logfmt", counting_parse)
    log, seen = capture(logging.INFO)
    child = ChildLog(log, "alpha")
    for line in (APPLIED, ERROR, APPLIED, INFO):
        child.feed(line + "\n")
    assert parsed == [ERROR, INFO]  # the progress lines were not parsed
    assert [(e["method"], e["msg"]) for e in seen] == [
        ("warning", "follow: poll failed"),
        ("info", "entering follow mode"),
    ]
    assert seen[0]["error"] == "dial tcp: refused" and seen[0]["db"] == "alpha"
    assert child.text().splitlines() == [APPLIED, ERROR, APPLIED, INFO]  # the tail keeps all


def test_progress_lines_are_logged_at_debug_when_debug_is_on() -> None:
    log, seen = capture(logging.DEBUG)
    ChildLog(log, "alpha").feed(APPLIED)
    assert [(e["method"], e["msg"], e["txid"]) for e in seen] == [
        ("debug", "follow: applied updates", "000000000000002a")
    ]


def test_children_run_go_on_one_cpu_unless_gomaxprocs_is_set(tmp_path: Path) -> None:
    binary, config = tmp_path / "litestream", tmp_path / "litestream.yml"
    ls = litestream.Litestream(binary, config, call_timeout_s=5, log=None, env={"HOME": "/h"})
    assert ls.child_env() == {"HOME": "/h", "GOMAXPROCS": "1"}
    mine = litestream.Litestream(
        binary, config, call_timeout_s=5, log=None, env={"GOMAXPROCS": "4"}
    )
    assert mine.child_env()["GOMAXPROCS"] == "4"  # the operator's choice (fleet.env) wins

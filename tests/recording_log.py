"""A logger stand-in that records (level, event, fields) for assertions in in-process tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordingLog"]


@dataclass
class RecordingLog:
    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _log(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, **kw)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [kw for _level, ev, kw in self.records if ev == event]

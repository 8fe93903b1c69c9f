"""Unit tests are pure: no child processes and no network sockets. This guard makes a test
that starts either fail at once, so a system test cannot hide among the quick ones (the
event loop's own self-pipe is an AF_UNIX socketpair and stays allowed)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


class NotAUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _pure(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def no_process(*_args: Any, **_kwargs: Any) -> Any:
        raise NotAUnitTest("a unit test started a process: move it to tests/system/")

    real_connect = socket.socket.connect
    real_bind = socket.socket.bind

    def guarded(real: Any) -> Any:
        def call(self: socket.socket, address: Any) -> Any:
            if self.family in (socket.AF_INET, socket.AF_INET6):
                raise NotAUnitTest("a unit test used the network: move it to tests/system/")
            return real(self, address)

        return call

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "bind", guarded(real_bind))
    yield

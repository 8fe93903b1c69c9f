"""A healthchecks.io-style ping receiver on ``FakeHTTPServer``: ``/ping/<uuid>`` records a
success, ``/ping/<uuid>/fail`` a failure, both answered ``200 OK`` as healthchecks does.
Faults (500, hang, reset) come from the base class."""

from __future__ import annotations

from collections.abc import Mapping

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakePingReceiver"]


class FakePingReceiver(FakeHTTPServer):
    def check_url(self, uuid: str) -> str:
        return f"{self.base_url}/ping/{uuid}"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if method in ("GET", "POST", "HEAD") and path.startswith("/ping/"):
            return 200, {"Content-Type": "text/plain"}, "OK"
        return 404, {}, "not found"

    def kinds(self, uuid: str) -> list[str]:
        """``success`` / ``fail`` per answered ping to ``uuid``, in arrival order."""
        out = []
        for req in self.requests:
            if req.fault is not None:
                continue
            if req.path == f"/ping/{uuid}":
                out.append("success")
            elif req.path == f"/ping/{uuid}/fail":
                out.append("fail")
        return out

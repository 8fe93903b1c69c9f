"""A fake Ollama (``GET /api/tags``) or OpenAI-compatible MLX server (``GET /v1/models``) on
``FakeHTTPServer``, for the ollama-health tests and bench.

``models`` is what the server lists; faults (500, garbage, slow, reset, hang, stop/start for
connection refused) come from the base class. It answers only 127.0.0.1 and never calls out.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakeOllama"]

DEFAULT_MODELS = ("llama3.1:8b", "qwen2.5-coder:32b")


class FakeOllama(FakeHTTPServer):
    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        *,
        kind: str = "ollama",
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host=host)
        self.kind = kind
        self._models = list(models)
        self._models_lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        with self._models_lock:
            return list(self._models)

    @models.setter
    def models(self, names: Sequence[str]) -> None:
        with self._models_lock:
            self._models = list(names)

    @property
    def health_path(self) -> str:
        return "/v1/models" if self.kind == "openai" else "/api/tags"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if method != "GET":
            return 405, {}, {"error": "method not allowed"}
        if self.kind == "ollama" and path == "/api/tags":
            return (
                200,
                {},
                {
                    "models": [
                        {"name": m, "model": m, "size": 4_920_753_328, "digest": "0" * 64}
                        for m in self.models
                    ]
                },
            )
        if self.kind == "openai" and path == "/v1/models":
            return (
                200,
                {},
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "mlx"}
                        for m in self.models
                    ],
                },
            )
        return 404, {}, "404 page not found"

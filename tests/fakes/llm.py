"""A fake OpenAI-compatible chat completions server (the MLX classifier) on FakeHTTPServer.

The answer for a request comes from ``answer_for(user_text)`` (default: YES when the email
mentions an invoice, contract, proposal or partnership, else NO). An answer of ``None`` is a
reasoning model's reply (``content: null``); any other string is sent verbatim, so tests can
return garbage. ``latency_s`` delays every answer (benchmarks); ``trickle_s`` sends every answer
one byte per ``trickle_s`` seconds (the 1 byte/s classifier); ``hold()`` keeps every answer
back until ``release()`` (a test then acts while the daemon waits for its answers, e.g. takes
a lock before the daemon writes its decisions). Faults come from the base.
``obeying_answer`` is a classifier that falls for prompt injection (issue 13).
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from tests.fakes.http import FakeHTTPServer, Response

__all__ = ["FakeLLM", "default_answer", "obeying_answer"]

REVENUE_WORDS = ("invoice", "contract", "proposal", "partnership", "quote", "purchase order")


def default_answer(user_text: str) -> str | None:
    lowered = user_text.lower()
    return "YES" if any(w in lowered for w in REVENUE_WORDS) else "NO"


_OBEYED = re.compile(r"answer\W{0,8}yes")


def obeying_answer(user_text: str) -> str | None:
    """A naive model that obeys instructions it reads outside the email fence. It reads the
    way a tokenizer does: invisible characters (controls, format characters, bidi controls)
    do not count, width variants are the same letters (NFKC), case does not matter. The fence
    ends at the first ``EMAIL>>>`` it sees after ``<<<EMAIL``; an "answer YES" after that is
    an instruction it follows. Otherwise the email is not revenue mail: NO."""
    seen = "".join(
        ch for ch in user_text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf")
    )
    seen = unicodedata.normalize("NFKC", seen).casefold()
    start = seen.find("<<<email")
    end = seen.find("email>>>", start + len("<<<email")) if start >= 0 else -1
    outside = seen[end + len("email>>>") :] if end >= 0 else ""
    return "YES" if _OBEYED.search(outside) else "NO"


class FakeLLM(FakeHTTPServer):
    def __init__(
        self,
        answer_for: Callable[[str], str | None] = default_answer,
        *,
        latency_s: float = 0.0,
        model: str | None = None,
        status: int = 200,
        trickle_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.trickle_s = trickle_s
        self.answer_for = answer_for
        self.latency_s = latency_s
        self.model = model  # when set, any other model name gets 404 (the gemma-4 incident)
        self.status = status  # e.g. 401 for a wrong key
        self.calls: list[dict[str, Any]] = []
        self._calls_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        """Answer nothing until ``release()`` (requests are still recorded as they arrive)."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def stop(self) -> None:
        self._gate.set()  # a held answer must not keep a handler thread from finishing
        super().stop()

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        if path != "/v1/chat/completions" or method != "POST":
            return 404, {}, {"error": "not found"}
        try:
            req = json.loads(body)
        except ValueError:
            return 400, {}, {"error": "bad json"}
        with self._calls_lock:
            self.calls.append(req)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._gate.wait(timeout=600)
            if self.latency_s:
                time.sleep(self.latency_s)
            if self.status != 200:
                return self.status, {}, {"error": {"message": "Repository Not Found"}}
            if self.model is not None and req.get("model") != self.model:
                return 404, {}, {"error": {"message": "model not found"}}
            messages = req.get("messages", [])
            user = next((m["content"] for m in messages if m.get("role") == "user"), "")
            system = next((m["content"] for m in messages if m.get("role") == "system"), "")
            if "previous answer was not valid" in system:
                user += "\n[STRICT]"  # lets a script answer the stricter retry differently
            answer = self.answer_for(user)
            message: dict[str, Any] = {"role": "assistant", "content": answer}
            if answer is None:
                message["reasoning"] = "Let me think about whether this is revenue..."
            return (
                200,
                {},
                {
                    "id": "cmpl-fake",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
                },
            )
        finally:
            with self._calls_lock:
                self.in_flight -= 1

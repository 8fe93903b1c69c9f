"""HTTP/1.1 on the wire for the fleet's own small servers: parsing a request head within fixed
size limits, and encoding a response.

Only what a metrics or health endpoint needs: GET and HEAD without a body are the normal case;
a request that declares a body gets its answer after the body is discarded (at most
``MAX_BODY_BYTES``). Anything ambiguous (folded or malformed header lines, several differing
Content-Length values, a Transfer-Encoding, a bare CR or LF, an unknown HTTP version) is refused
with an error status and the connection closed, so no request can be read two ways. It must
never do I/O, never decode more than ``MAX_HEAD_BYTES`` of a head, and never echo what a client
sent into an answer or an exception text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = [
    "HEAD_END",
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_HEAD_LINE",
    "HeadError",
    "Request",
    "Response",
    "parse_head",
    "text_response",
]

HEAD_END = b"\r\n\r\n"
MAX_HEAD_LINE = 4096  # request line / one header field; our paths are short
MAX_HEAD_BYTES = 16 * 1024  # the whole head, request line to the empty line
MAX_HEADERS = 64
MAX_BODY_BYTES = 64 * 1024  # a body we read and discard; a larger one gets 413 and a close

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}


class HeadError(Exception):
    """A request head we refuse; ``status`` is the answer (the connection is closed after)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query
    version: tuple[int, int]
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body_length: int = 0

    @property
    def path(self) -> str:
        """The target up to ``?`` (never normalised: ``/a/../b`` is not ``/b``)."""
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 always closes."""
        if self.version < (1, 1):
            return False
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "close" not in tokens


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, *, keep_alive: bool, head_only: bool = False) -> bytes:
        """Status line, headers and (unless ``head_only``) the body, ready to write."""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [
            f"HTTP/1.1 {self.status} {phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def text_response(status: int, text: str | None = None, **headers: str) -> Response:
    """A short plain-text answer (the status phrase when ``text`` is None)."""
    body = (text if text is not None else HTTPStatus(status).phrase) + "\n"
    return Response(status, body.encode("utf-8"), headers=dict(headers))


def parse_head(head: bytes) -> Request:
    """The request in ``head`` (everything before the empty line, without it). Raises
    HeadError for anything outside the limits or not unambiguous HTTP/1.x."""
    if len(head) > MAX_HEAD_BYTES:
        raise HeadError(431, "request head too large")
    lines = head.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise HeadError(400, "bare CR or LF in the head")
    request_line, fields = lines[0], lines[1:]
    if len(request_line) > MAX_HEAD_LINE:
        raise HeadError(414, "request line too long")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HeadError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HeadError(400, "malformed method")
    if version not in _VERSIONS:
        known = version.startswith(b"HTTP/") and version[5:8].replace(b".", b"").isdigit()
        raise HeadError(505 if known else 400, "unsupported HTTP version")
    if not target.startswith(b"/") or any(c <= 0x20 or c >= 0x7F for c in target):
        raise HeadError(400, "malformed request target")
    if len(fields) > MAX_HEADERS:
        raise HeadError(431, "too many header fields")
    headers: dict[str, str] = {}
    lengths: set[bytes] = set()
    for line in fields:
        if len(line) > MAX_HEAD_LINE:
            raise HeadError(431, "header field too long")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses obs-fold and "Name :"
            raise HeadError(400, "malformed header field")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key == "content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if "transfer-encoding" in headers:
        raise HeadError(501, "transfer-encoding not supported")
    body_length = 0
    if lengths:
        if len(lengths) != 1 or not all(v.isdigit() and len(v) <= 18 for v in lengths):
            raise HeadError(400, "malformed content-length")
        body_length = int(lengths.pop())
    return Request(
        method=method.decode("ascii"),
        target=target.decode("ascii"),
        version=_VERSIONS[version],
        headers=headers,
        body_length=body_length,
    )

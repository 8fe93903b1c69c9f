"""``shared.http_wire``: what request heads are accepted, what is refused and with which status
(so no request can be read two ways), and how answers are encoded. The server that uses it is
exercised over real sockets in tests/system/test_http_site.py."""

from __future__ import annotations

import pytest

from shared.http_wire import (
    MAX_HEAD_BYTES,
    MAX_HEAD_LINE,
    MAX_HEADERS,
    HeadError,
    Response,
    parse_head,
    text_response,
)


def test_a_plain_get_is_parsed_with_lower_case_headers_and_its_query_kept_apart() -> None:
    req = parse_head(b"GET /health?file=/etc/passwd HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2")
    assert req.method == "GET" and req.version == (1, 1)
    assert req.path == "/health" and req.target == "/health?file=/etc/passwd"
    assert req.headers == {"host": "x", "x-a": "1, 2"}
    assert req.body_length == 0 and req.keep_alive


def test_paths_are_never_normalised() -> None:
    assert parse_head(b"GET /health/../state/role HTTP/1.1").path == "/health/../state/role"


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"GET / HTTP/1.1", True),
        (b"GET / HTTP/1.1\r\nConnection: close", False),
        (b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE", False),
        (b"GET / HTTP/1.0", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive", False),
    ],
)
def test_keep_alive_follows_the_version_and_the_connection_header(head: bytes, keep: bool) -> None:
    assert parse_head(head).keep_alive is keep


def test_a_declared_body_length_is_reported() -> None:
    assert parse_head(b"POST /x HTTP/1.1\r\nContent-Length: 12").body_length == 12
    assert parse_head(b"POST /x HTTP/1.1\r\nContent-Length: 5, 5").body_length == 5


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /\r\n", 400),  # bare CR/LF inside the head
        (b"GET / HTTP/1.1\nHost: x", 400),
        (b"GET /", 400),
        (b"GET  / HTTP/1.1", 400),
        (b"G(T / HTTP/1.1", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET / FTP/1.0", 400),
        (b"GET http://example.com/ HTTP/1.1", 400),
        (b"GET /a\x7fb HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\n folded: value", 400),
        (b"GET / HTTP/1.1\r\nName : value", 400),
        (b"GET / HTTP/1.1\r\nno-colon", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -1", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 0x10", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 501),
        (b"GET /" + b"a" * MAX_HEAD_LINE + b" HTTP/1.1", 414),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_LINE, 431),
        (b"GET / HTTP/1.1" + b"\r\nX: y" * (MAX_HEADERS + 1), 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 4000, 431),
    ],
)
def test_ambiguous_or_oversized_heads_are_refused(head: bytes, status: int) -> None:
    with pytest.raises(HeadError) as exc:
        parse_head(head)
    assert exc.value.status == status
    assert b"example.com" not in str(exc.value).encode()  # never echoes the request


def test_the_whole_head_limit_holds() -> None:
    with pytest.raises(HeadError) as exc:
        parse_head(b"x" * (MAX_HEAD_BYTES + 1))
    assert exc.value.status == 431


def test_an_answer_carries_its_length_and_the_connection_decision() -> None:
    raw = Response(200, b"hello", "text/plain", {"Cache-Control": "no-store"}).encode(
        keep_alive=True
    )
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"Content-Length: 5" in lines and b"Connection: keep-alive" in lines
    assert b"Cache-Control: no-store" in lines and body == b"hello"


def test_a_head_answer_has_the_get_length_and_no_body() -> None:
    raw = Response(200, b"hello").encode(keep_alive=False, head_only=True)
    assert raw.endswith(b"\r\n\r\n") and b"Content-Length: 5" in raw
    assert b"Connection: close" in raw and b"hello" not in raw


def test_text_answers_default_to_the_status_phrase() -> None:
    assert text_response(405, Allow="GET, HEAD").body == b"Method Not Allowed\n"
    assert text_response(404, "not found").headers == {}

"""The prober against fake Ollama / MLX servers on 127.0.0.1: healthy, 500, invalid JSON,
slow beyond the timeout, connection refused, accept-then-hang, Tailscale fallback, and all hosts
probed at once (a cycle lasts about one timeout however many hosts hang); and, against raw
servers sending scripted bytes, what its own HTTP/1.1 (h11) must get right: chunked and
close-ended bodies, oversized answers, a trickling or endless head, garbage, redirects, TLS
with an untrusted certificate, IPv6, and closing the connection when cut short."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from daemons.ollama_health.probe import MAX_BODY_BYTES, Prober, parse_models
from daemons.ollama_health.table import HostSpec
from tests.conftest import free_port
from tests.fakes.http import FakeHTTPServer, Response
from tests.fakes.ollama import FakeOllama
from tests.fakes.raw_http import RawHTTPServer

TIMEOUT_S = 0.4


def spec(name: str, url: str, tailscale_url: str | None = None, kind: str = "ollama") -> HostSpec:
    return HostSpec(
        name=name,
        url=url,
        tailscale_url=tailscale_url,
        health_path="/v1/models" if kind == "openai" else "/api/tags",
        timeout_s=TIMEOUT_S,
        role="",
        kind=kind,
    )


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    p = Prober()
    yield p
    await p.close()


async def test_healthy(fake: FakeOllama, prober: Prober) -> None:
    result = await prober.probe_host(spec("anvil", fake.base_url))
    assert result.ok and result.via == "url" and result.error is None
    assert result.models == ("llama3.1:8b", "qwen2.5-coder:32b")
    assert result.latency_s is not None and result.latency_s >= 0
    req = fake.requests[0]
    assert (req.method, req.path) == ("GET", "/api/tags")
    assert req.headers["user-agent"].startswith("alai-fleet-ollama-health")
    assert req.headers["host"] == f"127.0.0.1:{fake.port}"
    assert req.headers["accept"] == "application/json"
    assert req.headers["connection"] == "close"  # a fresh connection per probe
    # The query string of the health path is sent as is.
    query = dataclasses.replace(spec("anvil", fake.base_url), health_path="/api/tags?v=1")
    assert (await prober.probe_host(query)).ok
    assert (fake.requests[1].path, fake.requests[1].query) == ("/api/tags", {"v": ["1"]})


async def test_openai_kind_mlx_server(prober: Prober) -> None:
    with FakeOllama(["mlx-community/Qwen2.5-Coder-32B-Instruct-4bit"], kind="openai") as mlx:
        result = await prober.probe_host(spec("forge-mlx", mlx.base_url, kind="openai"))
        assert result.ok and result.models == ("mlx-community/Qwen2.5-Coder-32B-Instruct-4bit",)
        assert mlx.requests[0].path == "/v1/models"
        # An Ollama-shaped answer is not a healthy OpenAI server, and vice versa.
        assert not (await prober.probe_host(spec("x", mlx.base_url, kind="ollama"))).ok


@pytest.mark.parametrize(
    ("inject", "needle"),
    [
        (lambda f: f.fail(500, body={"error": "model runner crashed"}), "HTTP 500"),
        (lambda f: f.fail(404), "HTTP 404"),
        (
            lambda f: f.garbage(content_type="application/json", body=b'{"models": [{"na'),
            "invalid JSON",
        ),
        (lambda f: f.garbage(), "invalid JSON"),
        # Nested too deep for the JSON decoder (RecursionError): a bad answer, not a crash.
        (lambda f: f.garbage(content_type="application/json", body=b"[" * 200_000), "invalid"),
        (lambda f: f.fail(200, body={"error": "loading"}), "no 'models' list"),
        (lambda f: f.fail(200, body=[1, 2]), "no 'models' list"),
        (lambda f: f.slow(TIMEOUT_S * 5), "no answer within 400 ms"),
        (lambda f: f.hang(), "no answer within 400 ms"),  # accept, read, never answer
        # One byte every 50 ms: the head never completes, no read ever times out.
        (lambda f: f.trickle(0.05), "no answer within 400 ms"),
        # Redirects are not followed (the Location would answer 200).
        (lambda f: f.fail(302, headers={"Location": f.base_url + "/api/tags"}), "HTTP 302"),
        (lambda f: f.fail(308, headers={"Location": f.base_url + "/api/tags"}), "HTTP 308"),
        (lambda f: f.reset(), "connection"),
        (lambda f: f.close(), "connection closed without a valid HTTP answer"),
    ],
)
async def test_faults_are_unhealthy_with_a_reason(
    fake: FakeOllama, prober: Prober, inject: object, needle: str
) -> None:
    inject(fake)  # type: ignore[operator]
    result = await prober.probe_host(spec("forge", fake.base_url))
    assert not result.ok and result.via is None and result.models == ()
    assert result.error is not None and needle in result.error, result.error
    # The next probe (no fault left) is healthy again: nothing sticks in the client.
    assert (await prober.probe_host(spec("forge", fake.base_url))).ok


async def test_connection_refused(fake: FakeOllama, prober: Prober) -> None:
    fake.stop()
    result = await prober.probe_host(spec("forge", fake.base_url))
    assert not result.ok and result.error == "connection refused"
    fake.start()  # same port
    assert (await prober.probe_host(spec("forge", fake.base_url))).ok


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:114340", "invalid URL (host or port)"),  # port out of range
        ("ftp://127.0.0.1:21", "invalid URL (not http:// or https://)"),
        ("http:///api", "invalid URL (no host)"),
    ],
)
async def test_bad_urls_are_failed_probes_not_raises(prober: Prober, url: str, needle: str) -> None:
    """URLs the table should have refused: the probe reports them instead of failing the
    cycle, without quoting the URL (it may carry a secret)."""
    result = await prober.probe_host(spec("forge", url))
    assert not result.ok and result.error == needle


async def test_oversized_answer_is_cut_off(fake: FakeOllama, prober: Prober) -> None:
    fake.garbage(content_type="application/json", body=b"[" + b"0," * 2_200_000 + b"0]")
    result = await prober.probe_host(spec("forge", fake.base_url))
    assert not result.ok and result.error is not None and "larger than" in result.error


async def test_tailscale_fallback_and_url_preference(prober: Prober) -> None:
    with FakeOllama(["lan-model"]) as lan, FakeOllama(["ts-model"]) as ts:
        both = spec("anvil", lan.base_url, ts.base_url)
        result = await prober.probe_host(both)
        assert result.ok and result.via == "url" and result.models == ("lan-model",)
        # Both are probed at once, not one after the other.
        assert ts.wait_for_requests(1, timeout=5)
        lan.hang()
        result = await prober.probe_host(both)
        assert result.ok and result.via == "tailscale" and result.models == ("ts-model",)
        lan.stop()
        result = await prober.probe_host(both)
        assert result.ok and result.via == "tailscale"
        ts.fail(503)
        result = await prober.probe_host(both)
        assert not result.ok and result.error == "url: connection refused; tailscale: HTTP 503"


async def test_all_hosts_probed_at_once(prober: Prober) -> None:
    """Six hanging hosts and a dead one: every request is in flight before the first timeout
    fires, so a cycle lasts one timeout, not seven."""
    fakes = [FakeOllama() for _ in range(7)]
    for f in fakes:
        f.start()
    try:
        for f in fakes[:6]:
            f.hang()
        dead = f"http://127.0.0.1:{free_port()}"
        hosts = [spec(f"h{i}", f.base_url) for i, f in enumerate(fakes)]
        hosts.append(spec("dead", dead))
        results = await prober.probe_all(hosts)
        assert sorted(results) == sorted(h.name for h in hosts)
        assert [results[f"h{i}"].ok for i in range(7)] == [False] * 6 + [True]
        assert results["dead"].error == "connection refused"
        arrivals = sorted(f.requests[0].at for f in fakes)
        assert arrivals[-1] - arrivals[0] < TIMEOUT_S, "probes ran one after another"
    finally:
        for f in fakes:
            f.stop()


def test_parse_models_shapes() -> None:
    assert parse_models("ollama", b'{"models": [{"name": "a"}, {"model": "b"}, "c", 5]}') == (
        "a",
        "b",
        "c",
    )
    assert parse_models("openai", b'{"data": [{"id": "m"}]}') == ("m",)
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_models("ollama", b"\xff")
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_models("ollama", b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(ValueError, match="no 'data' list"):
        parse_models("openai", b'{"models": []}')


# Raw servers: the bytes on the wire ------------------------------------------------------------

MODELS_JSON = json.dumps({"models": [{"name": "llama3.1:8b"}, {"name": "qwen3:30b"}]}).encode()
INVALID = "connection closed without a valid HTTP answer"
TOO_LARGE = f"answer larger than {MAX_BODY_BYTES} bytes"


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunks(*pieces: bytes, last: bool = True) -> bytes:
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
    return body + (b"0\r\n\r\n" if last else b"")


OK_JSON = "HTTP/1.1 200 OK", "Content-Type: application/json"
CHUNKED = (*OK_JSON, "Transfer-Encoding: chunked")
MIB = b" " * (1024 * 1024)


@pytest.mark.parametrize(
    "answer",
    [
        [head(*CHUNKED), chunks(MODELS_JSON[:9], MODELS_JSON[9:30], MODELS_JSON[30:])],
        # The chunked body in separate writes, the head apart from it.
        [head(*CHUNKED), chunks(MODELS_JSON[:20], last=False), chunks(MODELS_JSON[20:])],
        # Neither Content-Length nor chunked: the body ends when the server closes.
        [head(*OK_JSON), MODELS_JSON[:15], MODELS_JSON[15:]],
        [head("HTTP/1.0 200 OK", "Content-Type: application/json"), MODELS_JSON],
        # A 100 Continue before the answer is skipped.
        [
            head("HTTP/1.1 100 Continue"),
            head(*OK_JSON, f"Content-Length: {len(MODELS_JSON)}"),
            MODELS_JSON,
        ],
    ],
    ids=["chunked", "chunked-split", "ended-by-close", "http-1.0", "100-continue"],
)
async def test_bodies_framed_every_way_are_read(prober: Prober, answer: list[bytes]) -> None:
    with RawHTTPServer(answer, then="close") as raw:
        result = await prober.probe_host(spec("anvil", raw.base_url + "/"))
        assert result.ok, result.error
        assert result.models == ("llama3.1:8b", "qwen3:30b")
        line, headers = raw.request_headers()
        assert line == "GET //api/tags HTTP/1.1"  # base URL ending in "/" + path, as given
        assert headers["host"] == f"127.0.0.1:{raw.port}"
        assert headers["connection"] == "close"
        assert headers["accept"] == "application/json"
        assert headers["user-agent"].startswith("alai-fleet-ollama-health")
        assert "proxy-authorization" not in headers


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        # Declared too large: refused at the head, the rest never comes (it would time out).
        ([head(*OK_JSON, f"Content-Length: {MAX_BODY_BYTES + 1}"), b'{"models": ['], TOO_LARGE),
        # Chunked past the limit, never ended: cut at the limit, not at the deadline.
        ([head(*CHUNKED), chunks(MIB, MIB, MIB, MIB, b"[1]", last=False)], TOO_LARGE),
        # Ended by close, past the limit, never closed.
        ([head(*OK_JSON), MIB * 4, b"12345"], TOO_LARGE),
        # Not HTTP: a blank line ends a "head" h11 cannot parse.
        ([b"hello, this is not HTTP\r\n\r\n"], INVALID),
        ([b"HTTP/1.1 2OO OK\r\n\r\n"], INVALID),
        # A head that never ends, larger than the head limit: refused before the deadline.
        ([b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 40_000], INVALID),
        # Interim answers without end: together they are the head, held to the same limit.
        ([head("HTTP/1.1 100 Continue") * 2_000], INVALID),
    ],
    ids=["declared", "chunked", "close-ended", "garbage", "bad-status", "endless-head", "1xx"],
)
async def test_answers_cut_off_before_the_deadline(
    prober: Prober, answer: list[bytes], needle: str
) -> None:
    """The server keeps the connection open after these: only the prober's own limits can end
    the probe before the deadline (its error would then be "no answer within")."""
    with RawHTTPServer(answer, then="hang") as raw:
        result = await prober.probe_host(spec("anvil", raw.base_url))
        assert not result.ok and result.error == needle
        assert raw.wait_for_client_closes(1, timeout=5)  # and the connection is closed


@pytest.mark.parametrize(
    "answer",
    [
        [b"SSH-2.0-OpenSSH_9.6\r\n"],  # something else on the port, then close
        [head(*OK_JSON, "Content-Length: 100"), MODELS_JSON[:10]],  # body cut short
        [head(*CHUNKED), chunks(MODELS_JSON[:10], last=False)],  # chunked, cut short
        [b"HTTP/1.1 200 OK\r\nContent-Type: appl"],  # head cut short
    ],
    ids=["not-http", "short-body", "short-chunked", "short-head"],
)
async def test_eof_before_a_complete_answer(prober: Prober, answer: list[bytes]) -> None:
    with RawHTTPServer(answer, then="close") as raw:
        result = await prober.probe_host(spec("anvil", raw.base_url))
        assert not result.ok and result.error == INVALID


async def test_trickling_head_hits_the_deadline(prober: Prober) -> None:
    """A valid answer one byte every 20 ms (over 4 s in all): no read ever waits long, the
    whole exchange is what is bounded."""
    answer = [head(*OK_JSON, f"Content-Length: {len(MODELS_JSON)}"), MODELS_JSON]
    with RawHTTPServer(answer, trickle_s=0.02, then="hang") as raw:
        result = await prober.probe_host(spec("anvil", raw.base_url))
        assert not result.ok and result.error == "no answer within 400 ms"


async def test_redirect_is_not_followed(fake: FakeOllama, prober: Prober) -> None:
    with FakeOllama() as target:
        fake.fail(301, headers={"Location": target.base_url + "/api/tags"})
        result = await prober.probe_host(spec("anvil", fake.base_url))
        assert not result.ok and result.error == "HTTP 301"
        assert target.requests == []


async def test_ipv6_literal_host(prober: Prober) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
        with RawHTTPServer([b""], host="::1"):
            pass
    except OSError:
        pytest.skip("no IPv6 loopback here")
    answer = [head(*OK_JSON, f"Content-Length: {len(MODELS_JSON)}"), MODELS_JSON]
    with RawHTTPServer(answer, host="::1") as raw:
        assert raw.base_url == f"http://[::1]:{raw.port}"
        result = await prober.probe_host(spec("anvil", raw.base_url))
        assert result.ok, result.error
        assert raw.request_headers()[1]["host"] == f"[::1]:{raw.port}"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (no CA in any trust store)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_https_with_an_untrusted_certificate_fails(
    fake: FakeOllama, prober: Prober, self_signed: tuple[Path, Path]
) -> None:
    """An https:// URL is verified against the default trust store, which is loaded at the
    first https:// URL only (http:// hosts never load it, nor make a TLS connection)."""
    cert, key = self_signed
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    answer = [head(*OK_JSON, f"Content-Length: {len(MODELS_JSON)}"), MODELS_JSON]
    assert (await prober.probe_host(spec("anvil", fake.base_url))).ok
    assert prober._tls is None  # no https host yet: no trust store loaded
    with RawHTTPServer(answer, tls=server_tls) as raw:
        url = raw.base_url.replace("http://", "https://")
        result = await prober.probe_host(spec("anvil", url))
        assert not result.ok
        assert (
            result.error == "connect failed (TLS certificate not trusted: self-signed certificate)"
        )
        assert raw.heads == []  # nothing sent over the untrusted connection
        assert prober._tls is not None and prober._tls.cert_store_stats()["x509_ca"] > 0
        # Trusting that certificate (and only in this test), the same URL answers: TLS is
        # spoken with the right server name, the Host header carries the port.
        trusting = Prober()
        trusting._tls = ssl.create_default_context(cafile=str(cert))
        result = await trusting.probe_host(spec("anvil", url))
        assert result.ok, result.error
        assert raw.request_headers()[1]["host"] == f"127.0.0.1:{raw.port}"
        # A plain http:// probe of the TLS port gets no TLS: the server sees no handshake.
        plain = await prober.probe_host(spec("anvil", raw.base_url))
        assert not plain.ok and plain.error is not None
        assert len(raw.heads) == 1


async def test_cut_short_probes_close_their_connection(prober: Prober) -> None:
    """The Tailscale probe is cancelled when the LAN answer wins, and a probe past its
    deadline is abandoned: the server sees both connections closed."""
    with RawHTTPServer([], then="hang") as ts:

        def lan_answer(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
            ts.wait_for_heads(1, timeout=5)  # the Tailscale request is in flight first
            return 200, {}, {"models": [{"name": "lan-model"}]}

        with FakeHTTPServer(lan_answer) as lan:
            result = await prober.probe_host(spec("anvil", lan.base_url, ts.base_url))
            assert result.ok and result.via == "url" and result.models == ("lan-model",)
            assert len(ts.heads) == 1
            assert ts.wait_for_client_closes(1, timeout=5)
        result = await prober.probe_host(spec("anvil", ts.base_url))
        assert not result.ok and result.error == "no answer within 400 ms"
        assert ts.wait_for_client_closes(2, timeout=5)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 whose connects never complete: a listener that accepts nothing,
    its one-place accept queue already taken, so the kernel drops every further SYN."""
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        yield int(listener.getsockname()[1])


async def test_a_black_holed_address_does_not_hide_the_next(
    prober: Prober, black_hole: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name with two addresses (IPv6 and IPv4, say), the first one black-holed: the second
    is tried when the first has not connected within a moment (happy eyeballs, as httpx did
    through anyio), not after the whole deadline is spent on the first."""
    answer = [head(*OK_JSON, f"Content-Length: {len(MODELS_JSON)}"), MODELS_JSON]
    with RawHTTPServer(answer) as raw:
        dead = spec("forge", f"http://127.0.0.1:{black_hole}")
        result = await prober.probe_host(dead)
        assert not result.ok and result.error == "no answer within 400 ms"  # it is dead
        addresses = [("127.0.0.1", black_hole), ("127.0.0.1", raw.port)]
        names: list[str] = []

        async def resolve(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
            names.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in addresses]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
        both = dataclasses.replace(spec("forge", f"http://forge.test:{raw.port}"), timeout_s=10.0)
        result = await prober.probe_host(both)
        assert names == ["forge.test"]
        assert result.ok, result.error
        assert raw.request_headers()[1]["host"] == f"forge.test:{raw.port}"

"""The prober against fake Ollama / MLX servers on 127.0.0.1: healthy, 500, invalid JSON,
slow beyond the timeout, connection refused, accept-then-hang, Tailscale fallback, and all hosts
probed at once (a cycle lasts about one timeout however many hosts hang)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from daemons.ollama_health.probe import Prober, parse_models
from daemons.ollama_health.table import HostSpec
from tests.conftest import free_port
from tests.fakes.ollama import FakeOllama

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


async def test_unexpected_error_is_a_failed_probe_not_a_raise(prober: Prober) -> None:
    """A URL the table should have refused (port out of range) fails inside httpx with an
    error that is not an HTTPError; the probe reports it instead of failing the cycle."""
    result = await prober.probe_host(spec("forge", "http://127.0.0.1:114340"))
    assert not result.ok and result.error is not None and "probe error" in result.error


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


async def test_http_hosts_load_no_trust_store(fake: FakeOllama, prober: Prober) -> None:
    """http:// hosts share one client whose TLS context trusts no CA (it never makes a TLS
    connection); an https:// host gets a client with the default trust store, built then."""
    assert (await prober.probe_host(spec("anvil", fake.base_url))).ok
    plain = prober._client_for(fake.base_url)
    assert prober._client_for("http://127.0.0.1:9") is plain
    assert prober._tls is None  # no https host yet: no trust store loaded
    tls = prober._client_for("HTTPS://127.0.0.1:9")
    assert tls is not plain and prober._client_for("https://127.0.0.1:10") is tls

    def trusted_cas(client: object) -> int:
        context = client._transport._pool._ssl_context  # type: ignore[attr-defined]
        return int(context.cert_store_stats()["x509_ca"])

    assert trusted_cas(plain) == 0
    assert trusted_cas(tls) > 0

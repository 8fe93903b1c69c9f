"""Slow and odd peers of the email-reactor, against fakes on 127.0.0.1: an LLM or Paperless that
answers one byte a second never tripped httpx's per-read timeouts (0 of 3 mails decided in 75 s,
``on_unreachable`` never reached), and Paperless answering ``results: null`` raised TypeError
every cycle. Now every request has one overall deadline, a peer that misses it is a transient
failure (counted toward ``on_unreachable``), and a malformed answer is a failure with a reason.

The clients are driven in-process first (each call bounded by a guard far above its deadline,
so a regression fails instead of hanging), then the whole reactor as `fleet run` processes."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemons.email_reactor.llm import LLMClient, LLMError
from daemons.email_reactor.paperless import PaperlessClient, PaperlessError
from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.email_fixtures import (
    CASES,
    CORRESPONDENTS,
    PARTNERS,
    add_bulk,
    create_inbox,
    fixture_answer,
)
from tests.fakes.llm import FakeLLM
from tests.fakes.paperless import FakePaperless
from tests.heartbeat_support import metric_value

pytestmark = pytest.mark.system

GUARD_S = 60.0  # bounds a regression (a client that waits for the whole trickle), never a pass
MESSAGES = [{"role": "user", "content": "hello"}]


async def ask(llm: FakeLLM, timeout_s: float = 30.0) -> Any:
    client = LLMClient(llm.url, "m", timeout_s=timeout_s, max_tokens=8)
    try:
        return await asyncio.wait_for(client.ask(MESSAGES, 0.1), GUARD_S)
    finally:
        await client.close()


async def correspondents(paperless: FakePaperless, timeout_s: float = 30.0) -> Any:
    client = PaperlessClient(paperless.base_url, token=paperless.token, timeout_s=timeout_s)
    try:
        return await asyncio.wait_for(client.correspondents(), GUARD_S)
    finally:
        await client.close()


async def test_a_trickling_llm_misses_its_deadline_as_a_transient_failure() -> None:
    with FakeLLM(fixture_answer, trickle_s=1.0) as llm, pytest.raises(LLMError) as err:
        await ask(llm, timeout_s=1.0)
    assert err.value.kind == "transient" and "within 1 s" in str(err.value)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # RecursionError before
        (b'{"choices": null}', "application/json"),
        (b'{"choices": [{"message": {"content": ["YES"]}}]}', "application/json"),
        (b"<html>502</html>", "text/html"),
    ],
    ids=["nested", "choices-null", "content-list", "html"],
)
async def test_a_malformed_llm_answer_is_malformed_never_an_exception(
    body: bytes, content_type: str
) -> None:
    with FakeLLM(fixture_answer) as llm:
        llm.garbage(body=body, content_type=content_type)
        reply = await ask(llm)
    assert reply.answer is None


async def test_an_oversized_llm_answer_is_a_transient_failure() -> None:
    with FakeLLM(fixture_answer) as llm:
        llm.garbage(body=b'"' + b"x" * (5 * 1024 * 1024) + b'"', content_type="application/json")
        with pytest.raises(LLMError) as err:
            await ask(llm)
    assert err.value.kind == "transient" and "bytes" in str(err.value)


async def test_a_trickling_paperless_misses_its_deadline() -> None:
    with (
        FakePaperless(CORRESPONDENTS, trickle_s=1.0) as paperless,
        pytest.raises(PaperlessError, match="within 1 s"),
    ):
        await correspondents(paperless, timeout_s=1.0)


@pytest.mark.parametrize(
    ("results", "reason"),
    [
        ("null", "results is not a list"),
        ({"id": 1}, "results is not a list"),
        (7, "results is not a list"),
    ],
    ids=["null", "object", "number"],
)
async def test_paperless_results_of_the_wrong_type_are_an_error_with_a_reason(
    results: Any, reason: str
) -> None:
    with FakePaperless(CORRESPONDENTS) as paperless:
        paperless.results = results
        with pytest.raises(PaperlessError, match=reason):
            await correspondents(paperless)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([{"results": []}], "not a JSON object"),
        ({"results": [], "next": 5}, "next is not a URL"),
        (b"[" * 100_000, "not JSON"),
        (b"<html>login</html>", "not JSON"),
    ],
    ids=["list", "next-number", "nested", "html"],
)
async def test_paperless_answers_that_are_not_a_page_are_an_error_with_a_reason(
    body: Any, reason: str
) -> None:
    with FakePaperless(CORRESPONDENTS) as paperless:
        paperless.fail(200, body=body, headers={"Content-Type": "application/json"})
        with pytest.raises(PaperlessError, match=reason):
            await correspondents(paperless)


async def test_paperless_still_pages_through_a_good_answer() -> None:
    with FakePaperless(CORRESPONDENTS) as paperless:
        got = await correspondents(paperless)
    assert [c["name"] for c in got] == [c["name"] for c in CORRESPONDENTS]


# --- the reactor as processes ---------------------------------------------------------------


def decisions(root: Path) -> dict[int, tuple[str, str, str]]:
    path = root / "databases/email-inbox.db"
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT email_id, action, reason, source FROM reactor_decisions")
        got = {int(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows.fetchall()}
    conn.close()
    return got


def llm_attempts(root: Path) -> dict[int, tuple[int, str]]:
    with sqlite3.connect(root / "databases/email-inbox.db") as conn:
        rows = conn.execute("SELECT email_id, attempts, last_error FROM reactor_llm_attempts")
        got = {int(r[0]): (int(r[1]), str(r[2])) for r in rows.fetchall()}
    conn.close()
    return got


def once(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    res = run_fleet(["run", "email-reactor", "--once"], env, cwd, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    return res


@pytest.fixture
def env(fleet_env: dict[str, str], fleet_root: Path) -> dict[str, str]:
    (fleet_root / "config").mkdir()
    (fleet_root / "config/strategic-partners.json").write_text(json.dumps(PARTNERS))
    return {
        **fleet_env,
        # A cycle that waits for a trickle is cancelled here and the run exits 1: the bound
        # of a failure, far above what a passing cycle (deadlines of 2 s) takes.
        "FLEET_EMAIL_REACTOR__CYCLE_TIMEOUT_S": "40",
        "FLEET_EMAIL_REACTOR__DIGEST_TIME": "23:59",
        "FLEET_EMAIL_REACTOR__TIMEZONE": "UTC",
        "FLEET_EMAIL_REACTOR__DIGEST_MIN_AGE_H": "1000",
    }


def test_a_one_byte_per_second_llm_reaches_on_unreachable(
    env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    ids = add_bulk(fleet_root / "databases/email-inbox.db", 3, subject_for=lambda i: "Contract")
    with FakeLLM(fixture_answer, trickle_s=1.0) as llm:
        env = {
            **env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "2",
            "FLEET_EMAIL_REACTOR__LLM_MAX_ATTEMPTS": "2",
        }
        once(env, tmp_path)
        assert decisions(fleet_root) == {}, "a missed deadline leaves the mail undecided"
        attempts = llm_attempts(fleet_root)
        assert {i: a for i, (a, _e) in attempts.items()} == {i: 1 for i in ids}
        assert all("within 2 s" in e for _a, e in attempts.values()), attempts
        once(env, tmp_path)
    got = decisions(fleet_root)
    assert {got[i] for i in ids} == {("llm_yes", "llm_unavailable", "llm")}


def test_a_trickling_paperless_falls_back_to_db_history(
    env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    chosen = [c for c in CASES if c.name in ("partner exact", "db history", "paperless by domain")]
    ids = create_inbox(fleet_root / "databases/email-inbox.db", chosen)
    with (
        FakeLLM(fixture_answer) as llm,
        FakePaperless(CORRESPONDENTS, trickle_s=1.0) as paperless,
    ):
        res = once(
            {
                **env,
                "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
                "FLEET_EMAIL_REACTOR__PAPERLESS_URL": paperless.base_url,
                "FLEET_EMAIL_REACTOR__PAPERLESS_TOKEN": paperless.token,
                "FLEET_EMAIL_REACTOR__PAPERLESS_TIMEOUT_S": "2",
            },
            tmp_path,
        )
    got = decisions(fleet_root)
    assert got[ids["partner exact"]] == ("linked", "strategic_partner", "override")
    assert got[ids["db history"]] == ("linked", "known_contact", "db")
    assert got[ids["paperless by domain"]] == ("llm_no", "llm_no", "llm")
    assert "paperless lookup failed" in res.stdout and "within 2 s" in res.stdout


def test_paperless_results_null_is_counted_and_mail_is_still_decided(
    env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    chosen = [c for c in CASES if c.name in ("partner exact", "db history")]
    ids = create_inbox(fleet_root / "databases/email-inbox.db", chosen)
    port = free_port()
    with FakeLLM(fixture_answer) as llm, FakePaperless(CORRESPONDENTS) as paperless:
        paperless.results = "null"
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "email-reactor"],
            env={
                **env,
                "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
                "FLEET_EMAIL_REACTOR__PAPERLESS_URL": paperless.base_url,
                "FLEET_EMAIL_REACTOR__PAPERLESS_TOKEN": paperless.token,
                "FLEET_EMAIL_REACTOR__METRICS_PORT": str(port),
                "NOTIFY_SOCKET": notify_socket.path,
            },
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert notify_socket.wait_for("READY=1", timeout=30), notify_socket.messages

            def errors() -> float:
                _status, body = http_get(f"http://127.0.0.1:{port}/metrics")
                return metric_value(body, "fleet_email_paperless_errors_total") or 0.0

            assert wait_until(lambda: len(decisions(fleet_root)) == 2, timeout=60)
            assert wait_until(lambda: errors() >= 1, timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
    assert proc.returncode == 0, out[-3000:] + err
    got = decisions(fleet_root)
    assert got[ids["partner exact"]] == ("linked", "strategic_partner", "override")
    assert got[ids["db history"]] == ("linked", "known_contact", "db")
    assert "results is not a list" in out
    assert "Traceback" not in out + err and "TypeError" not in out + err

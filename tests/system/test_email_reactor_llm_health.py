"""The founding incident's second half, as real `fleet run email-reactor --once` processes: a
classifier that answers malformed every time (a reasoning model's <think> preamble) silently
filed every unknown sender as llm_no. Now the share of malformed answers over the last hour
above ``malformed_alert_share`` (with at least ``malformed_alert_min_answers`` answers) gives
one #ops alert per incident, and one recovery message when it falls back. Each run is a new
process, so the window and the open incident must survive restarts."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.email_fixtures import add_bulk
from tests.fakes.llm import FakeLLM
from tests.prometheus_support import promtool

pytestmark = pytest.mark.system

THINKING = "<think>The sender asks about pricing, which could be revenue...</think>\nYES"
MODEL = "example-org/<reasoner>-R1 & co"  # untrusted text: must reach Slack escaped


class Script:
    """What the fake classifier answers: malformed (a reasoning preamble) or well-formed."""

    def __init__(self) -> None:
        self.malformed = True

    def __call__(self, user_text: str) -> str | None:
        if self.malformed or "BAD" in user_text:
            return THINKING
        return "NO"


def once(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    res = run_fleet(["run", "email-reactor", "--once"], env, cwd, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    return res


def ops_rows(root: Path, prefix: str) -> list[tuple[str, str, str]]:
    """(channel, kind, text) of the outbox rows whose dedup key starts with ``prefix``."""
    path = root / "state/outbox.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT channel, kind, text FROM outbox WHERE dedup_key LIKE ? ORDER BY id",
            (f"{prefix}%",),
        ).fetchall()
    conn.close()
    return [(str(c), str(k), str(t)) for c, k, t in rows]


def decided_malformed(root: Path) -> int:
    with sqlite3.connect(root / "databases/email-inbox.db") as conn:
        n = conn.execute(
            "SELECT count(*) FROM reactor_decisions WHERE reason = 'llm_malformed'"
        ).fetchone()[0]
    conn.close()
    return int(n)


@pytest.fixture
def env(fleet_env: dict[str, str]) -> dict[str, str]:
    return {
        **fleet_env,
        "FLEET_EMAIL_REACTOR__LLM_MODEL": MODEL,
        "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "30",
        "FLEET_EMAIL_REACTOR__DIGEST_TIME": "23:59",
        # far from digest_time whatever the hour (the digest is not under test here)
        "FLEET_EMAIL_REACTOR__TIMEZONE": "UTC",
        "FLEET_EMAIL_REACTOR__DIGEST_MIN_AGE_H": "1000",
    }


def test_malformed_answers_alert_ops_once_and_recover_once(
    env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    inbox = fleet_root / "databases/email-inbox.db"
    script = Script()
    with FakeLLM(script) as llm:
        env = {**env, "FLEET_EMAIL_REACTOR__LLM_URL": llm.url}
        # 2 emails, each asked twice (the strict retry): 4 answers < min_answers 5, no page
        add_bulk(inbox, 2)
        once(env, tmp_path)
        assert decided_malformed(fleet_root) == 2
        assert ops_rows(fleet_root, "llm-malformed:") == []
        # 4 more: 12 answers in the hour, all malformed -> one #ops alert
        add_bulk(inbox, 4)
        once(env, tmp_path)
        alerts = ops_rows(fleet_root, "llm-malformed:")
        assert len(alerts) == 1, alerts
        channel, kind, text = alerts[0]
        assert (channel, kind) == ("#ops", "alert")
        assert "100%" in text and "12 of 12" in text, text
        assert "example-org/&lt;reasoner&gt;-R1 &amp; co" in text, text
        assert "<reasoner>" not in text
        assert "YES or NO" in text and "llm_malformed" in text, text
        # still malformed, in a new process: the incident is open, nothing new
        add_bulk(inbox, 3)
        once(env, tmp_path)
        assert len(ops_rows(fleet_root, "llm-malformed:")) == 1
        assert ops_rows(fleet_root, "llm-recovered:") == []
        assert decided_malformed(fleet_root) == 9
        # the model is fixed: 18 malformed answers so far, 20 good ones bring the share
        # to 18/38 < 0.5 -> one recovery message
        script.malformed = False
        add_bulk(inbox, 20)
        once(env, tmp_path)
        recovered = ops_rows(fleet_root, "llm-recovered:")
        assert len(recovered) == 1, recovered
        assert recovered[0][0] == "#ops"
        assert "18 of 38" in recovered[0][2], recovered[0][2]
        add_bulk(inbox, 5)
        once(env, tmp_path)
        assert len(ops_rows(fleet_root, "llm-recovered:")) == 1
        assert len(ops_rows(fleet_root, "llm-malformed:")) == 1
        assert decided_malformed(fleet_root) == 9
        assert len(llm.calls) == 9 * 2 + 25


def test_a_malformed_share_below_the_threshold_never_alerts(
    env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    inbox = fleet_root / "databases/email-inbox.db"
    script = Script()
    script.malformed = False
    with FakeLLM(script) as llm:
        env = {**env, "FLEET_EMAIL_REACTOR__LLM_URL": llm.url}
        # 3 of 10 emails malformed twice: 6 malformed of 13 answers (46 %) per run
        for _ in range(2):
            add_bulk(inbox, 10, subject_for=lambda i: "BAD question" if i < 3 else "Question")
            once(env, tmp_path)
        assert decided_malformed(fleet_root) == 6
        assert len(llm.calls) == 26
    assert ops_rows(fleet_root, "llm-malformed:") == []
    assert ops_rows(fleet_root, "llm-recovered:") == []


def test_the_threshold_is_configurable(
    env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    """The same 46 % share pages once the operator lowers malformed_alert_share to 0.4."""
    inbox = fleet_root / "databases/email-inbox.db"
    script = Script()
    script.malformed = False
    with FakeLLM(script) as llm:
        env = {
            **env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__MALFORMED_ALERT_SHARE": "0.4",
        }
        add_bulk(inbox, 10, subject_for=lambda i: "BAD question" if i < 3 else "Question")
        once(env, tmp_path)
    alerts = ops_rows(fleet_root, "llm-malformed:")
    assert len(alerts) == 1 and "6 of 13" in alerts[0][2], alerts


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of the first ``name`` sample whose labels contain ``labels``."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if not line.startswith("#") and head.split("{")[0] == name and labels in head:
            return float(value)
    return None


def test_a_running_daemon_exports_the_share_and_alerts_once_per_incident(
    env: dict[str, str], fleet_root: Path, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """One long-running process: the gauge follows the window, the metrics lint clean, and
    the incident opens and closes once each while cycles keep running."""
    inbox = fleet_root / "databases/email-inbox.db"
    script = Script()
    port = free_port()
    add_bulk(inbox, 3)  # 6 malformed answers
    with FakeLLM(script) as llm:
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "email-reactor"],
            env={
                **env,
                "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
                "NOTIFY_SOCKET": notify_socket.path,
                "FLEET_EMAIL_REACTOR__METRICS_PORT": str(port),
                "FLEET_EMAIL_REACTOR__INTERVAL_S": "0.2",
            },
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert notify_socket.wait_for("READY=1", timeout=30), notify_socket.messages

            def scrape() -> str:
                status, body = http_get(f"http://127.0.0.1:{port}/metrics")
                assert status == 200
                return body

            share = "fleet_email_llm_malformed_share"
            assert wait_until(lambda: sample(scrape(), share) == 1.0, timeout=60), scrape()
            text = scrape()
            assert sample(text, "fleet_email_llm_requests_total", 'outcome="malformed"') == 6
            lint = promtool("check", "metrics", stdin=text)
            assert lint.returncode == 0, lint.stdout + lint.stderr
            assert wait_until(lambda: len(ops_rows(fleet_root, "llm-malformed:")) == 1, 30)
            script.malformed = False
            add_bulk(inbox, 10)  # 6 of 16 answers malformed: back below 0.5
            assert wait_until(lambda: sample(scrape(), share) == 6 / 16, timeout=60), scrape()
            assert wait_until(lambda: len(ops_rows(fleet_root, "llm-recovered:")) == 1, 30)
            cycles = 'outcome="ok"'
            done = sample(scrape(), "fleet_cycles_total", cycles) or 0.0
            # a few more cycles change nothing
            assert wait_until(
                lambda: (sample(scrape(), "fleet_cycles_total", cycles) or 0) >= done + 3, 30
            )
            assert len(ops_rows(fleet_root, "llm-malformed:")) == 1
            assert len(ops_rows(fleet_root, "llm-recovered:")) == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0

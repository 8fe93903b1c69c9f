"""The keyed address hash across real processes: the first `fleet run` makes
<root>/state/log-hash.key (0600), a restart keeps it, the email-reactor audit log's ``sender``
is the keyed hash (not the bare sha256 a dictionary reverses), and `fleet email hash ADDRESS`
prints exactly what the audit shows, for grepping it."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest

from tests.conftest import run_fleet
from tests.email_fixtures import add_bulk
from tests.fakes.llm import FakeLLM
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.system


def _audit(root: Path) -> dict[int, str]:
    path = root / "state/email-reactor/audit.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {int(x["email_id"]): str(x["sender"]) for x in lines}


def test_audit_senders_are_keyed_stable_across_restarts_and_greppable(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    key_file = fleet_root / "state" / "log-hash.key"
    address = "sender0@unknown0.example.net"
    early = run_fleet(["email", "hash", address], fleet_env, tmp_path)
    assert early.returncode == 1 and "no log-hash key" in early.stderr, early.stderr
    assert not key_file.exists(), "`fleet email hash` never makes the key"

    inbox = fleet_root / "databases" / "email-inbox.db"
    with FakeLLM(lambda _text: "NO") as llm, FakeSlack() as slack:
        env = {
            **fleet_env,
            "FLEET_EMAIL_REACTOR__LLM_URL": llm.url,
            "FLEET_EMAIL_REACTOR__LLM_TIMEOUT_S": "30",
            "FLEET_EMAIL_REACTOR__METRICS_PORT": "0",
            "FLEET_SLACK__BASE_URL": slack.base_url,
            "FLEET_SLACK__TOKEN": slack.token,
        }
        first_ids = add_bulk(inbox, 2)
        first = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=120)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key_text = key_file.read_text()
        # a restart: the same senders write again, under the same key
        second_ids = add_bulk(inbox, 2)
        second = run_fleet(["run", "email-reactor", "--once"], env, tmp_path, timeout=120)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr
    assert key_file.read_text() == key_text, "the key is made once"

    audit = _audit(fleet_root)
    assert set(first_ids + second_ids) <= set(audit)
    key = bytes.fromhex(key_text.strip())
    keyed = hmac.new(key, address.encode(), hashlib.sha256).hexdigest()[:8]
    bare = hashlib.sha256(address.encode()).hexdigest()[:8]
    assert audit[first_ids[0]] == audit[second_ids[0]] == keyed != bare
    assert audit[first_ids[1]] != keyed, "another sender, another hash"
    shown = run_fleet(["email", "hash", address.upper()], fleet_env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == keyed
    raw = (fleet_root / "state/email-reactor/audit.jsonl").read_text()
    assert bare not in raw and "@" not in raw


def test_a_key_file_others_can_read_stops_the_daemon(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    env = {**fleet_env, "FLEET_CLAIM_SWEEPER__METRICS_PORT": "0"}
    ok = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert ok.returncode == 0, ok.stderr
    key_file = fleet_root / "state" / "log-hash.key"
    key_file.chmod(0o644)
    res = run_fleet(["run", "claim-sweeper", "--once"], env, tmp_path)
    assert res.returncode == 78
    assert f"{key_file}: has mode 0644" in res.stderr
    assert key_file.read_text().strip() not in res.stdout + res.stderr
    hashed = run_fleet(["email", "hash", "a@example.com"], env, tmp_path)
    assert hashed.returncode == 78 and "mode 0644" in hashed.stderr

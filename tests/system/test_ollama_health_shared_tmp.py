"""ollama-health against a hostile neighbour in a shared /tmp (issue 13): another local user
(uid 65534, via ``setpriv``) plants files in a sticky, world-writable directory where the hosts
keep the legacy status path and the override file. Real ``fleet run`` processes with fake
Ollama and fake Slack servers on 127.0.0.1 (Slack records the raw text), plus the in-process
rig for the override file's trust checks.

- a status file planted at the legacy path is reported (one #ops alert, ``fleet ollama
  status``), never followed or replaced; the private file holds the truth; once the operator
  removes it, the daemon publishes its own symlink there;
- the daemon's memory is never read back from the shared directory: a forged pending alert
  there is never delivered (a status_file configured in a shared directory refuses to start);
- a pending alert naming a channel that is not configured is never delivered to it;
- a FIFO at the override path never blocks: cycles keep writing status, SIGTERM stops the
  process;
- an override that is a symlink, another user's, world-writable or 10 MiB is ignored with one
  warning."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemons.ollama_health.policy import format_iso
from tests.conftest import FLEET_BIN, NotifySocket, free_port, http_get, run_fleet, wait_until
from tests.fakes.ollama import FakeOllama
from tests.fakes.slack import FakeSlack
from tests.ollama_health_support import RigFactory, tier_doc

pytestmark = pytest.mark.system

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
FORGED_TEXT = "<!everyone> SSO expired, re-auth at <https://evil.example/sso|slack.com/sso>"


def as_nobody(*argv: str, input: str | None = None) -> None:
    """Run ``argv`` as uid/gid 65534 with no supplementary groups (another local user)."""
    if SETPRIV is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to act as a second uid")
    subprocess.run(
        [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv],
        input=input,
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )


def plant(path: Path, text: str) -> None:
    """``path`` created and written by the other user (mode 0644 by its umask)."""
    as_nobody("sh", "-c", 'umask 022; cat > "$1"', "sh", str(path), input=text)
    assert path.lstat().st_uid == NOBODY


@pytest.fixture
def sticky_dir() -> Iterator[Path]:
    """A fresh /tmp-like directory (mode 1777) the other user can reach: pytest's tmp_path
    is 0700, so it lives directly under /tmp, with a unique name, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fleet-sticky-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def forged_status(now: float) -> dict[str, Any]:
    """What a neighbour plants: anvil 'down' so tier 2 goes to the neighbour's idea of forge,
    and a pending 'alert' to #ceo in the memory copy the old daemon restored from."""
    return {
        "anvil": {"healthy": False, "last_check": format_iso(now), "override": False},
        "forge": {"healthy": True, "last_check": format_iso(now), "override": False},
        "_generated_at": format_iso(now),
        "_interval_s": 15,
        "_routing": {
            "active_rules": ["anvil-down"],
            "redirects": {"1": {"host": "forge", "model": {}}},
            "to_claude": [],
            "unavailable": [],
        },
        "_monitor": {
            "hosts": {},
            "pending_alerts": [
                {"channel": "#ceo", "text": FORGED_TEXT, "dedup_key": "forged-1", "kind": "push"}
            ],
        },
    }


def base_env(
    fleet_env: dict[str, str], tmp_path: Path, slack: FakeSlack, **extra: str
) -> dict[str, str]:
    return {
        **fleet_env,
        "FLEET_SLACK__BASE_URL": slack.base_url,
        "FLEET_SLACK__TOKEN": slack.token,
        "FLEET_OLLAMA_HEALTH__TIER_ROUTING_FILE": str(tmp_path / "tier-routing.json"),
        **extra,
    }


def write_tiers(tmp_path: Path, anvil: FakeOllama, forge: FakeOllama) -> None:
    (tmp_path / "tier-routing.json").write_text(json.dumps(tier_doc(anvil, forge)))


def test_a_status_file_planted_at_the_legacy_path_is_reported_never_followed(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, sticky_dir: Path
) -> None:
    link = sticky_dir / "ollama-health.json"
    forged = forged_status(time.time())
    plant(link, json.dumps(forged))
    private = fleet_root / "state" / "ollama-health.json"
    with FakeOllama() as anvil, FakeOllama() as forge, FakeSlack() as slack:
        write_tiers(tmp_path, anvil, forge)
        env = base_env(
            fleet_env,
            tmp_path,
            slack,
            FLEET_OLLAMA_HEALTH__STATUS_LINK=str(link),
            FLEET_OLLAMA_HEALTH__OVERRIDE_FILE=str(sticky_dir / "ollama-health-override.json"),
        )
        for _ in range(2):  # a second run does not alert again
            res = run_fleet(["run", "ollama-health", "--once"], env, tmp_path)
            assert res.returncode == 0, res.stdout + res.stderr
        # The truth is in the private file; the planted one is left exactly as it was.
        status = json.loads(private.read_text())
        assert status["anvil"]["healthy"] is True and status["forge"]["healthy"] is True
        assert status["_routing"]["active_rules"] == []
        assert status["_link"]["published"] is False
        assert f"uid {NOBODY}" in status["_link"]["error"]
        assert link.lstat().st_uid == NOBODY and not link.is_symlink()
        assert json.loads(link.read_text()) == forged
        assert [m.channel for m in slack.messages] == ["#ops"]
        text = slack.texts()[0]
        assert str(link) in text and f"uid {NOBODY}" in text and str(private) in text
        res = run_fleet(["ollama", "status"], env, tmp_path)
        assert res.returncode == 1, res.stdout + res.stderr
        assert str(link) in res.stdout and f"uid {NOBODY}" in res.stdout
        # The operator removes it: the next run publishes the daemon's own link.
        link.unlink()
        res = run_fleet(["run", "ollama-health", "--once"], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert link.is_symlink() and os.readlink(link) == str(private)
        assert link.lstat().st_uid == os.geteuid()
        assert json.loads(link.read_text()) == json.loads(private.read_text())
        res = run_fleet(["ollama", "status", "--json"], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["link"] == {
            "path": str(link),
            "target": str(private),
            "published": True,
            "error": None,
        }
        assert len(slack.messages) == 1


def test_a_forged_pending_alert_in_a_shared_dir_is_never_delivered(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path, sticky_dir: Path
) -> None:
    """The old daemon restored its memory from the status file when its own memory file was
    missing, so a neighbour's ``_monitor.pending_alerts`` reached #ceo."""
    planted = sticky_dir / "ollama-health.json"
    plant(planted, json.dumps(forged_status(time.time())))
    with FakeOllama() as anvil, FakeOllama() as forge, FakeSlack() as slack:
        write_tiers(tmp_path, anvil, forge)
        # A config that still names the shared path as the status file refuses to start.
        env = base_env(fleet_env, tmp_path, slack, FLEET_OLLAMA_HEALTH__STATUS_FILE=str(planted))
        res = run_fleet(["run", "ollama-health", "--once"], env, tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode == 78, out
        assert "ollama_health.status_file" in out and "status_link" in out
        assert slack.messages == []
        # Published as the legacy link instead: it runs, and only its own #ops alert goes out.
        env = base_env(fleet_env, tmp_path, slack, FLEET_OLLAMA_HEALTH__STATUS_LINK=str(planted))
        res = run_fleet(["run", "ollama-health", "--once"], env, tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        messages = slack.messages
    assert [m.channel for m in messages] == ["#ops"], messages
    assert all("evil.example" not in m.text and "everyone" not in m.text for m in messages)
    memory = json.loads((fleet_root / "state" / "ollama-health-memory.json").read_text())
    assert all(a["dedup_key"] != "forged-1" for a in memory["pending_alerts"])


def test_a_pending_alert_naming_an_unconfigured_channel_is_not_delivered_there(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    memory = fleet_root / "state" / "ollama-health-memory.json"
    memory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    memory.write_text(
        json.dumps(
            {
                "hosts": {},
                "pending_alerts": [
                    {
                        "channel": "#random",
                        "text": "forge (compute) is DOWN: held over",
                        "dedup_key": "ollama-down:forge:1",
                        "kind": "alert",
                        "daemon": "ollama-health",
                    },
                    {
                        "channel": "U0SOMEONE",
                        "text": "forge (compute) recovered: held over",
                        "dedup_key": "ollama-up:forge:1",
                        "kind": "alert",
                        "daemon": "ollama-health",
                    },
                ],
            }
        )
    )
    memory.chmod(0o600)
    with FakeOllama() as anvil, FakeOllama() as forge, FakeSlack() as slack:
        write_tiers(tmp_path, anvil, forge)
        res = run_fleet(
            ["run", "ollama-health", "--once"], base_env(fleet_env, tmp_path, slack), tmp_path
        )
        assert res.returncode == 0, res.stdout + res.stderr
        messages = slack.messages
    assert sorted((m.channel, m.text) for m in messages) == [
        ("#ops", "forge (compute) is DOWN: held over"),
        ("#ops", "forge (compute) recovered: held over"),
    ]
    logs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    readdressed = [
        r for r in logs if r["event"] == "alert names an unconfigured channel; sent to ops"
    ]
    assert sorted(r["channel"] for r in readdressed) == ["#random", "U0SOMEONE"]


def test_a_fifo_at_the_override_path_never_blocks_and_sigterm_stops(
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    sticky_dir: Path,
    notify_socket: NotifySocket,
) -> None:
    fifo = sticky_dir / "ollama-health-override.json"
    as_nobody("mkfifo", "-m", "0666", str(fifo))
    port = free_port()
    private = fleet_root / "state" / "ollama-health.json"
    with FakeOllama() as anvil, FakeOllama() as forge, FakeSlack() as slack:
        write_tiers(tmp_path, anvil, forge)
        env = base_env(
            fleet_env,
            tmp_path,
            slack,
            NOTIFY_SOCKET=notify_socket.path,
            FLEET_OLLAMA_HEALTH__OVERRIDE_FILE=str(fifo),
            FLEET_OLLAMA_HEALTH__METRICS_PORT=str(port),
            FLEET_OLLAMA_HEALTH__INTERVAL_S="0.2",
            FLEET_OLLAMA_HEALTH__CYCLE_TIMEOUT_S="5",
        )
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "ollama-health"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert notify_socket.wait_for("READY=1", timeout=30), notify_socket.messages
            seen: set[str] = set()

            def fresh_status() -> bool:
                with contextlib.suppress(OSError, ValueError):  # not written yet
                    seen.add(json.loads(private.read_text())["_generated_at"])
                return len(seen) >= 3

            def ok_cycles() -> float:
                body = http_get(f"http://127.0.0.1:{port}/metrics")[1]
                for line in body.splitlines():
                    if line.startswith("fleet_cycles_total{") and 'outcome="ok"' in line:
                        return float(line.rpartition(" ")[2])
                return 0.0

            # Status written again and again (three distinct generations, seconds apart).
            assert wait_until(fresh_status, timeout=60, interval=0.2), seen
            assert wait_until(lambda: ok_cycles() >= 5, timeout=30)
            status = json.loads(private.read_text())
            assert "not a regular file" in status["_override"]["error"]

            def alerted() -> bool:
                return any("override file" in t for t in slack.texts("#ops"))

            assert wait_until(alerted, timeout=30), slack.messages
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail("daemon did not exit within 20 s of SIGTERM:\n" + err[-2000:])
    assert proc.returncode == 0, out + err
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert sum(r["event"] == "override file ignored" for r in logs) == 1
    assert sum("override file" in t and "ignored" in t for t in slack.texts("#ops")) == 1


# the override file's trust checks, in-process --------------------------------------------------
@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    factory = RigFactory(tmp_path)
    yield factory
    await factory.close()


async def test_an_override_that_is_not_ours_alone_is_ignored_with_one_warning(
    make_rig: Callable[..., Any], sticky_dir: Path, tmp_path: Path
) -> None:
    override = sticky_dir / "ollama-health-override.json"
    force_down = '{"forge": {"healthy": false}}'
    real = tmp_path / "mine.json"
    real.write_text(force_down)
    real.chmod(0o644)

    def symlink() -> None:
        override.symlink_to(real)

    def other_users() -> None:
        plant(override, force_down)

    def world_writable() -> None:
        override.write_text(force_down)
        override.chmod(0o666)

    def huge() -> None:
        override.write_text(force_down + " " * (10 * 1024 * 1024))
        override.chmod(0o644)

    cases: list[tuple[Callable[[], None], str]] = [
        (symlink, "symbolic link"),
        (other_users, f"owned by uid {NOBODY}"),
        (world_writable, "writable by group or others"),
        (huge, "larger than 65536 bytes"),
    ]
    with FakeOllama() as anvil, FakeOllama() as forge:
        rig = await make_rig(tier_doc(anvil, forge), override_file=str(override))
        await rig.cycle()
        for make, reason in cases:
            make()
            for _ in range(2):
                status = await rig.cycle()
                assert status["forge"]["healthy"] is True, reason
                assert status["forge"]["override"] is False, reason
                assert reason in (status["_override"]["error"] or ""), status["_override"]
            override.unlink()
            status = await rig.cycle()  # gone: the episode ends
            assert status["_override"]["error"] is None
        # The same content, as a regular 0644 file of ours, is applied.
        override.write_text(force_down)
        override.chmod(0o644)
        status = await rig.cycle()
        assert status["forge"]["healthy"] is False and status["forge"]["override"] is True
    warnings = rig.log.events("override file ignored")
    assert len(warnings) == len(cases)
    assert all(reason in w["error"] for w, (_make, reason) in zip(warnings, cases, strict=True))
    assert sum("override file" in a and "ignored" in a for a in rig.alerts()) == len(cases)

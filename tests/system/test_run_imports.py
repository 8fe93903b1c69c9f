"""`fleet run NAME` as a real process stays light (issue 15): it never imports click nor httpx's
command-line tool, a daemon with nothing to send over HTTP never imports httpx, and
ollama-health, which probes its hosts with h11, never imports httpx, httpcore or anyio; the
forms the fast path does not take (help, typos, unknown daemons) still get click's answers; a
bad key still exits 78 naming it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FLEET_BIN, NotifySocket, free_port, run_fleet
from tests.fakes.ollama import FakeOllama

pytestmark = pytest.mark.system

IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+\d+ \|\s*(\S+)")


def imported(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, set[str]]:
    """Exit code and every module `fleet ARGS` imported (``python -X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(FLEET_BIN), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, set(IMPORT_LINE.findall(proc.stderr))


@pytest.mark.parametrize(
    ("name", "port_key"),
    [
        ("claim-sweeper", "FLEET_CLAIM_SWEEPER__METRICS_PORT"),
        ("email-reactor", "FLEET_EMAIL_REACTOR__METRICS_PORT"),
        ("heartbeat", "FLEET_HEARTBEAT__METRICS_PORT"),
    ],
)
def test_a_daemon_cycle_imports_neither_click_nor_an_unused_httpx(
    name: str, port_key: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**fleet_env, port_key: str(free_port()), "FLEET_HEARTBEAT__HEALTH_PORT": "0"}
    code, modules = imported(["run", name, "--once"], env, tmp_path)
    assert "shared.runtime" in modules, f"{name} did not start (exit {code})"
    assert "click" not in modules
    assert "httpx" not in modules  # no peer, ping, mail or Slack message: nothing to send


def test_httpx_cli_is_not_imported_where_httpx_is(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **fleet_env,
        "FLEET_HEARTBEAT__METRICS_PORT": str(free_port()),
        "FLEET_HEARTBEAT__HEALTH_PORT": "0",
        "FLEET_HEARTBEAT__PEERS": '[{"name": "forge", "url": "http://127.0.0.1:9/health"}]',
    }
    _code, modules = imported(["run", "heartbeat", "--once"], env, tmp_path)
    assert "httpx" in modules  # it probed the (dead) peer
    # httpx._main is listed (its import is refused at once); what it would load is not
    assert not {"click", "pygments"} & modules


def test_ollama_health_probes_without_httpx(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """The long-running daemon, READY and past its first cycle (the fake has answered two
    probes), has loaded h11 for its probes and none of httpx, httpcore, anyio or what httpx
    brings along."""
    log = tmp_path / "importtime.log"
    with FakeOllama() as anvil, log.open("w") as stderr:
        env = {
            **fleet_env,
            "NOTIFY_SOCKET": notify_socket.path,
            "FLEET_OLLAMA_HEALTH__METRICS_PORT": str(free_port()),
            "FLEET_OLLAMA_HEALTH__INTERVAL_S": "0.2",
            "FLEET_OLLAMA_HEALTH__HOSTS": json.dumps({"anvil": {"url": anvil.base_url}}),
        }
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", str(FLEET_BIN), "run", "ollama-health"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=stderr,  # a file: importtime's lines would fill a pipe nobody reads yet
        )
        try:
            assert notify_socket.wait_for("READY=1", timeout=30), notify_socket.messages
            assert anvil.wait_for_requests(2, timeout=30)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    modules = set(IMPORT_LINE.findall(log.read_text()))
    assert "daemons.ollama_health.probe" in modules and "h11" in modules
    assert not {"httpx", "httpcore", "anyio", "idna", "certifi", "sniffio"} & modules


def test_forms_the_fast_path_leaves_to_click(fleet_env: dict[str, str], tmp_path: Path) -> None:
    helped = run_fleet(["run", "--help"], fleet_env, tmp_path)
    assert helped.returncode == 0 and "--dry-run" in helped.stdout
    unknown = run_fleet(["run", "no-such-daemon"], fleet_env, tmp_path)
    assert unknown.returncode == 64 and "claim-sweeper" in unknown.stderr
    both = run_fleet(["run", "claim-sweeper", "--all"], fleet_env, tmp_path)
    assert both.returncode == 64 and "NAME or --all" in both.stderr
    typo = run_fleet(["run", "claim-sweeper", "--onse"], fleet_env, tmp_path)
    assert typo.returncode == 64 and "--onse" in typo.stderr


@pytest.mark.parametrize("section", ["claim_sweeper", "email_reactor"])
def test_a_bad_key_exits_78_naming_it(
    section: str, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """In the running daemon's own section, and in another daemon's: the whole file is
    validated by every `fleet run NAME`."""
    config = tmp_path / "fleet.toml"
    config.write_text(f"[{section}]\nno_such_key = 1\n")
    for form in (["--config", str(config)], [f"--config={config}"]):
        proc = run_fleet(["run", "claim-sweeper", "--once", *form], fleet_env, tmp_path)
        assert proc.returncode == 78, proc.stderr
        assert f"{section}.no_such_key" in proc.stderr

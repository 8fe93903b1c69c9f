"""Promotion epochs between two real hosts: both start as primary (each its own fleet root and
`fleet run heartbeat` watching the other), with different epochs. The older host learns the
newer epoch from its peer's /health: its writer daemons refuse to start (exit 78 naming the
peer and the command to run), its /health says ``fenced``, and the two-primaries alert names it
as the host that must stand down. The newer host's writers start.

Every step waits for the state it asserts; the deadlines only bound a failure."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from shared.epochs import Epoch, begin_epoch, read_epoch, read_peer_epochs, write_epoch
from tests.conftest import run_fleet, wait_until
from tests.heartbeat_support import HeartbeatProcess, only_enabled, outbox_rows, write_config

pytestmark = pytest.mark.system

DEADLINE_S = 60.0


def _host(tmp_path: Path, fleet_env: dict[str, str], name: str) -> tuple[Path, dict[str, str]]:
    root = tmp_path / name / "root"
    (root / "state").mkdir(parents=True)
    (root / "state/role").write_text("primary\n")
    env = only_enabled(fleet_env, "heartbeat")
    env["FLEET_FLEET__ROOT"] = str(root)
    env["FLEET_FLEET__HOST"] = name
    return root, env


def _sweeper(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    run_env = only_enabled(env, "claim-sweeper")
    run_env["FLEET_CLAIM_SWEEPER__AUTO_RELEASE"] = "true"
    run_env.pop("FLEET_CONFIG", None)
    res = run_fleet(["run", "claim-sweeper", "--once"], run_env, cwd)
    return res.returncode, res.stdout + res.stderr


def test_two_primaries_the_older_epoch_stands_down(
    fleet_env: dict[str, str], tmp_path: Path
) -> None:
    anvil_root, anvil_env = _host(tmp_path, fleet_env, "anvil")
    forge_root, forge_env = _host(tmp_path, fleet_env, "forge")
    write_epoch(anvil_root / "state/role", Epoch(1, "anvil", 1_700_000_000.0))
    # FORGE was promoted after ANVIL: begin_epoch numbers past everything this host has seen.
    write_epoch(forge_root / "state/role", Epoch(1, "anvil", 1_700_000_000.0))
    forge_epoch = begin_epoch(forge_root / "state/role", "forge", 1_700_000_100.0)
    assert forge_epoch.number == 2 and read_epoch(forge_root / "state/role") == forge_epoch
    assert stat.S_IMODE((forge_root / "state/epoch").stat().st_mode) == 0o600

    # Before any peer was seen, both hosts' writers may start.
    code, out = _sweeper(anvil_env, tmp_path)
    assert code == 0, out

    anvil = HeartbeatProcess(anvil_env, tmp_path, tmp_path / "anvil.toml")
    forge = HeartbeatProcess(forge_env, tmp_path, tmp_path / "forge.toml")
    hb = {"interval_s": 0.2}
    for this, other, name in ((anvil, forge, "forge"), (forge, anvil, "anvil")):
        peer = {"name": name, "url": other.url("/health"), "interval_s": 0.1, "timeout_s": 10}
        write_config(Path(this.env["FLEET_CONFIG"]), heartbeat=hb, peers=[peer])
    with anvil, forge:
        assert wait_until(
            lambda: "forge" in read_peer_epochs(anvil_root / "state/role"), timeout=DEADLINE_S
        ), anvil.stop()
        seen = read_peer_epochs(anvil_root / "state/role")["forge"]
        assert seen.epoch == forge_epoch and seen.role == "primary"
        assert stat.S_IMODE((anvil_root / "state/peer-epochs.json").stat().st_mode) == 0o600

        # The older host's writers refuse, naming the peer, its epoch and what to run.
        code, out = _sweeper(anvil_env, tmp_path)
        assert code == 78, out
        assert "peer forge is primary under epoch 2" in out and "fleet dr failback" in out
        # The newer host's writers start.
        assert wait_until(
            lambda: "anvil" in read_peer_epochs(forge_root / "state/role"), timeout=DEADLINE_S
        )
        code, out = _sweeper(forge_env, tmp_path)
        assert code == 0, out

        # /health: ANVIL says fenced (still role primary), FORGE says ok with its epoch.
        def anvil_fenced() -> bool:
            status, body = anvil.health()
            return status == 200 and body is not None and body["status"] == "fenced"

        assert wait_until(anvil_fenced, timeout=DEADLINE_S), anvil.health()
        _, body = anvil.health()
        assert body is not None and body["role"] == "primary" and body["epoch"]["number"] == 1
        assert "forge" in body["fenced"]
        status, _ = anvil.health("/health/fleet")
        assert status == 503
        _, forge_body = forge.health()
        assert forge_body is not None and forge_body["epoch"]["number"] == 2
        assert forge_body["status"] != "fenced"

        # Both hosts' two-primaries alerts name ANVIL as the one to stand down.
        for root in (anvil_root, forge_root):

            def alerted(r: Path = root) -> bool:
                return any("TWO PRIMARIES" in m["text"] for m in outbox_rows(r))

            assert wait_until(alerted, timeout=DEADLINE_S), outbox_rows(root)
            text = next(m["text"] for m in outbox_rows(root) if "TWO PRIMARIES" in m["text"])
            assert "anvil MUST STAND DOWN" in text and "forge holds the newer epoch" in text

        # ANVIL stands down: a standby's fencing is the role rule's again (auto_release off).
        (anvil_root / "state/role").write_text("standby\n")
        res = run_fleet(
            ["run", "claim-sweeper", "--once"],
            {**only_enabled(anvil_env, "claim-sweeper"), "FLEET_CONFIG": ""},
            tmp_path,
        )
        assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads((anvil_root / "state/peer-epochs.json").read_text())
    assert record["forge"]["epoch"]["host"] == "forge"

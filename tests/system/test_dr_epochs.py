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


def test_a_running_writer_stops_writing_once_a_newer_primary_is_seen(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    """A host back from a crash starts its writers before its heartbeat has probed the peer:
    they start (nothing newer is known yet), and must stop writing at the next cycle after the
    newer epoch is recorded, not at their next restart."""
    import subprocess
    import time
    from datetime import UTC, datetime, timedelta

    from shared.epochs import PeerEpoch, record_peer_epoch
    from shared.roles import Role
    from tests.conftest import FLEET_BIN, free_port, http_get
    from tests.heartbeat_support import metric_value
    from tests.mc_backends import McBackend

    port = free_port()
    role_file = fleet_root / "state/role"
    role_file.parent.mkdir(parents=True, exist_ok=True)
    role_file.write_text("primary\n")
    write_epoch(role_file, Epoch(1, "anvil", 1_700_000_000.0))
    backend = McBackend.sqlite(fleet_root / "databases/mission-control.db")
    past = (datetime.now(UTC) - timedelta(hours=2)).timestamp()
    with backend.store(clock=lambda: past) as mc:
        before = mc.create_task("stuck before the fence").id
        after = mc.create_task("stuck after the fence").id
        mc.claim(before, "pi-orch", "s1", ttl_minutes=10)
    env = {
        **only_enabled(fleet_env, "claim-sweeper"),
        **backend.select_env,
        "FLEET_CLAIM_SWEEPER__AUTO_RELEASE": "true",
        "FLEET_CLAIM_SWEEPER__INTERVAL_S": "0.2",
        "FLEET_CLAIM_SWEEPER__BACKOFF_MAX_S": "0.5",
        "FLEET_CLAIM_SWEEPER__METRICS_PORT": str(port),
        "FLEET_FLEET__HOST": "anvil",
    }
    log = tmp_path / "sweeper.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(FLEET_BIN), "run", "claim-sweeper"], env=env, cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        # Not fenced yet: it is a working writer (the expired lease is released).
        assert wait_until(lambda: backend.lease(before)[0] is None, timeout=DEADLINE_S), (
            log.read_text()
        )
        # The heartbeat (here: the test) records FORGE's newer epoch.
        forge = PeerEpoch("forge", Role.PRIMARY, Epoch(2, "forge", 1_700_000_100.0), time.time())
        assert record_peer_epoch(role_file, forge)
        assert wait_until(
            lambda: "peer forge is primary under epoch 2" in log.read_text(), DEADLINE_S
        )
        # From then on it writes nothing: a lease that expires now stays where it is.
        with backend.store(clock=lambda: past) as mc:
            mc.claim(after, "pi-orch", "s2", ttl_minutes=10)

        def errors() -> float:
            text = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            labels = {"daemon": "claim-sweeper", "outcome": "error"}
            return metric_value(text, "fleet_cycles_total", **labels) or 0

        # Two more (fenced, failed) cycles after the claim, and the lease is still held.
        seen = errors()
        assert wait_until(lambda: errors() >= seen + 2, timeout=DEADLINE_S), log.read_text()
        assert proc.poll() is None, "a fenced writer stays up (its /health and metrics report it)"
        assert backend.lease(after)[0] == "pi-orch:s2", log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

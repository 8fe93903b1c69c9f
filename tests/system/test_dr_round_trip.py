"""The full DR round trip on one machine with two fleet roots (ANVIL, FORGE), real litestream on
Azurite, real restore-loop and heartbeat processes, and a writer on each era's primary stamping
its rows with its host:

ANVIL primary -> crash (writer and replicate SIGKILLed) -> `fleet restore promote --all` on
FORGE (epoch 1) -> FORGE replicates under epoch-1/ and takes writes -> ANVIL returns: fenced
(its writers refuse) -> `fleet dr failback` on ANVIL (its DBs set aside, restore-loop rebuilds
them from epoch 1) -> planned `fleet dr switchover --to anvil` (FORGE then ANVIL; epoch 2) ->
writes on ANVIL under epoch-2/.

At the end every DB on ANVIL holds exactly: a prefix of ANVIL's era-1 rows (the crash's RPO,
measured in rows), then every FORGE row, then every later ANVIL row; the switchover lost none.

Every step waits for the state it asserts; the deadlines only bound a failure."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.epochs import read_epoch, read_peer_epochs
from tests.conftest import NotifySocket, free_port, run_fleet, wait_until
from tests.fakes.azurite import AZURITE_KEY, Azurite
from tests.fakes.litestream_primary import Primary, Standby, count_rows, litestream_bin
from tests.heartbeat_support import HeartbeatProcess, only_enabled, write_config

pytestmark = pytest.mark.system

DEADLINE_S = 180.0
NAMES = ["alpha", "beta"]

WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    tag, stop_file, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    conns = [sqlite3.connect(p, timeout=10, isolation_level=None) for p in paths]
    for c in conns:
        c.execute("PRAGMA busy_timeout=10000")
    n = 0
    while n < 100000:
        try:
            open(stop_file).close()
            break
        except OSError:
            pass
        for c in conns:
            c.execute("INSERT INTO t(ts, payload) VALUES (?, ?)", (time.time(), f"{tag}-{n}"))
        n += 1
        time.sleep(0.05)
    """
)


class Writer:
    def __init__(self, tag: str, paths: list[Path], work: Path) -> None:
        self.stop_file = work / f"{tag}.stop"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, tag, str(self.stop_file), *map(str, paths)]
        )

    def stop(self) -> None:
        self.stop_file.touch()
        self.proc.wait(timeout=30)

    def crash(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def payloads(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [str(r[0]) for r in conn.execute("SELECT payload FROM t ORDER BY id")]
    finally:
        conn.close()


def replicate(configs: list[Path], env: dict[str, str], log: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for config in configs:
        with log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [str(litestream_bin()), "replicate", "-config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    return procs


def stop(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        proc.wait(timeout=30)


def test_crash_failover_failback_and_switchover_round_trip(
    fleet_env: dict[str, str], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    azurite = Azurite(tmp_path / "azurite").start()
    procs: list[subprocess.Popen[bytes]] = []
    others: list[object] = []
    try:
        azurite.create_container("backups")
        anvil_root, forge_root = tmp_path / "anvil" / "root", tmp_path / "forge" / "root"
        # ANVIL's DBs live in anvil_root/primary (the Primary harness's directory)
        primary = Primary(anvil_root.parent / "root", NAMES, abs_endpoint=azurite.endpoint)
        anvil_db = primary.db_dir
        primary.create()
        (anvil_root / "state").mkdir(parents=True, exist_ok=True)
        (anvil_root / "state/role").write_text("primary\n")
        primary.write_tier_table(anvil_root / "config/databases.toml")
        base = {**fleet_env, "LITESTREAM_AZURE_ACCOUNT_KEY": AZURITE_KEY}
        anvil_env = {
            **base,
            "FLEET_FLEET__ROOT": str(anvil_root),
            "FLEET_FLEET__HOST": "anvil",
            "FLEET_RESTORE_LOOP__STANDBY_DIR": str(anvil_db),
        }
        forge_env = {**base, "FLEET_FLEET__ROOT": str(forge_root), "FLEET_FLEET__HOST": "forge"}

        # Era 1: ANVIL primary (epoch 0, plain replica path), FORGE follows.
        primary.start_replicate()
        anvil1 = Writer("anvil", [anvil_db / f"{n}.db" for n in NAMES], tmp_path)
        forge = Standby(forge_env, forge_root, tmp_path, primary)
        forge.env.update(forge_env)
        forge.start(notify_socket.path, free_port())
        for name in NAMES:
            assert wait_until(lambda n=name: count_rows(forge.copy(n)) >= 40, timeout=DEADLINE_S)

        # Heartbeat on both hosts, each watching the other.
        hb_anvil = HeartbeatProcess(
            only_enabled(anvil_env, "heartbeat"), tmp_path, tmp_path / "a.toml"
        )
        hb_forge = HeartbeatProcess(
            only_enabled(forge_env, "heartbeat"), tmp_path, tmp_path / "f.toml"
        )
        for this, other, name in ((hb_anvil, hb_forge, "forge"), (hb_forge, hb_anvil, "anvil")):
            peer = {"name": name, "url": other.url("/health"), "interval_s": 0.2, "timeout_s": 5}
            write_config(
                Path(this.env["FLEET_CONFIG"]), heartbeat={"interval_s": 0.2}, peers=[peer]
            )
        hb_forge.start()
        others.append(hb_forge)

        # Crash ANVIL: writer and replicate killed mid-stream.
        anvil1.crash()
        stop(primary.replicates, signal.SIGKILL)
        primary.replicates = []
        era1 = {n: payloads(anvil_db / f"{n}.db") for n in NAMES}

        res = run_fleet(
            ["restore", "promote", "--all", "--ack-timeout", "60"], forge.env, tmp_path, timeout=300
        )
        assert res.returncode == 0, res.stdout + res.stderr
        forge.stop()
        epoch1 = read_epoch(forge_root / "state/role")
        assert epoch1 is not None and epoch1.number == 1 and epoch1.host == "forge"
        lost_rows = {}
        for name in NAMES:
            promoted = payloads(forge.copy(name))
            assert promoted == era1[name][: len(promoted)], f"{name}: not a prefix of ANVIL"
            lost_rows[name] = len(era1[name]) - len(promoted)

        # Era 2: FORGE replicates under epoch-1/ and takes writes.
        res = run_fleet(
            ["litestream", "config", "--role", "primary", "--out", str(forge_root / "config")],
            forge.env,
            tmp_path,
        )
        assert res.returncode == 0, res.stderr
        assert "epoch-1" in res.stdout
        forge_configs = sorted((forge_root / "config").glob("litestream-p*.yml"))
        assert forge_configs and all("epoch-1/" in p.read_text() for p in forge_configs)
        procs += replicate(forge_configs, forge.env, tmp_path / "forge-replicate.log")
        forge_writer = Writer("forge", [forge.copy(n) for n in NAMES], tmp_path)

        # ANVIL returns still saying primary: heartbeat learns FORGE's epoch, writers refuse.
        hb_anvil.start()
        others.append(hb_anvil)
        assert wait_until(
            lambda: "forge" in read_peer_epochs(anvil_root / "state/role"), timeout=DEADLINE_S
        )
        sweeper = {**only_enabled(anvil_env, "claim-sweeper"), "FLEET_CONFIG": ""}
        sweeper["FLEET_CLAIM_SWEEPER__AUTO_RELEASE"] = "true"
        refused = run_fleet(["run", "claim-sweeper", "--once"], sweeper, tmp_path)
        assert refused.returncode == 78 and "fleet dr failback" in refused.stdout + refused.stderr

        # Failback: ANVIL stands down, keeps its own DBs aside, follows epoch 1.
        res = run_fleet(["dr", "failback", "--json"], anvil_env, tmp_path, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        run = json.loads(res.stdout)
        assert run["done"] == ["check", "demote", "stop-writers", "set-aside", "follow"]
        kept = Path(run["details"]["set-aside"]["kept_in"])
        assert (kept / "alpha.db").exists() and not (anvil_db / "alpha.db").exists()
        assert "epoch-1/" in (anvil_root / "config/litestream-restore.yml").read_text()
        again = run_fleet(["dr", "failback", "--json"], anvil_env, tmp_path, timeout=120)
        assert json.loads(again.stdout)["done"] == []  # resumable: nothing twice
        anvil_rl = subprocess.Popen(
            [str(Path(sys.executable).parent / "fleet"), "run", "restore-loop"],
            env={
                **forge.env,
                **anvil_env,
                "NOTIFY_SOCKET": notify_socket.path,
                "FLEET_RESTORE_LOOP__METRICS_PORT": str(free_port()),
            },
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(anvil_rl)  # type: ignore[arg-type]

        def anvil_has_forge_rows() -> bool:
            return all(
                any(p.startswith("forge-") for p in payloads(anvil_db / f"{n}.db"))
                if (anvil_db / f"{n}.db").exists()
                else False
                for n in NAMES
            )

        assert wait_until(anvil_has_forge_rows, timeout=DEADLINE_S)

        # Planned switchover back to ANVIL: FORGE first (stops its writer: ours stands in for
        # the fleet's writer daemons, which the step SIGTERMs), then ANVIL.
        forge_writer.stop()
        res = run_fleet(
            ["dr", "switchover", "--to", "anvil", "--json", "--timeout", "120"],
            forge.env,
            tmp_path,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        old_side = json.loads(res.stdout)
        assert old_side["done"] == ["demote", "stop-writers", "replicated"]
        assert all(v["equal"] for v in old_side["details"]["replicated"].values())
        forge_final = {n: payloads(forge.copy(n)) for n in NAMES}
        assert wait_until(
            lambda: read_peer_epochs(anvil_root / "state/role")["forge"].role == "standby",
            timeout=DEADLINE_S,
        )
        res = run_fleet(
            ["dr", "switchover", "--to", "anvil", "--json"], anvil_env, tmp_path, timeout=300
        )
        assert res.returncode == 0, res.stdout + res.stderr
        new_side = json.loads(res.stdout)
        assert new_side["done"] == ["old-primary-down", "promote", "verify", "replicate-config"]
        assert new_side["details"]["verify"]["rows_lost"] == 0
        epoch2 = read_epoch(anvil_root / "state/role")
        assert epoch2 is not None and epoch2.number == 2 and epoch2.host == "anvil"
        for name in NAMES:  # the planned switchover lost nothing
            assert payloads(anvil_db / f"{name}.db") == forge_final[name]
        stop(procs[-1:])  # ANVIL's restore-loop (fenced by the promotion) stops
        stop(procs[:-1])  # FORGE's replicate

        # Era 3: ANVIL replicates under epoch-2/ and writes.
        anvil_configs = [Path(p) for p in new_side["details"]["replicate-config"]["written"]]
        assert anvil_configs and all("epoch-2/" in p.read_text() for p in anvil_configs)
        procs = replicate(anvil_configs, anvil_env, tmp_path / "anvil-replicate.log")
        anvil3 = Writer("anvil3", [anvil_db / f"{n}.db" for n in NAMES], tmp_path)
        assert wait_until(
            lambda: all(
                sum(p.startswith("anvil3-") for p in payloads(anvil_db / f"{n}.db")) >= 20
                for n in NAMES
            ),
            timeout=DEADLINE_S,
        )
        anvil3.stop()
        for name in NAMES:
            rows = payloads(anvil_db / f"{name}.db")
            a1 = [p for p in rows if p == "seed" or p.startswith("anvil-")]
            f2 = [p for p in rows if p.startswith("forge-")]
            a3 = [p for p in rows if p.startswith("anvil3-")]
            assert rows[: len(a1)] == a1 == era1[name][: len(a1)]
            assert len(era1[name]) - len(a1) == lost_rows[name]
            assert f2 == [p for p in forge_final[name] if p.startswith("forge-")]
            assert rows == a1 + f2 + a3 and a3 == [f"anvil3-{i}" for i in range(len(a3))]
        print(f"crash failover rows lost (RPO in rows at 20 rows/s): {lost_rows}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        for hb in others:
            hb.stop()  # type: ignore[attr-defined]
        azurite.stop()

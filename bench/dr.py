"""DR figures from one run, on real litestream replicating to Azurite (abs), N P0 DBs written at
10 tx/s each, every row carrying its commit time:

1. ``fleet dr drill`` on the standby (restore-loop following): wall time for N P0 DBs, and the
   promote it rehearses (restore + integrity checks), while the primary keeps writing.
2. Crash failover: writer and `litestream replicate` SIGKILLed; `fleet restore promote --all`
   (wall RTO measured from outside, from the kill to the command's exit) beside raw
   `litestream restore -f` followers (1 s, the same replicas, the same run) stopped at the kill
   plus the same wall time; RPO from rows for both: rows lost, and seconds (the primary's newest
   commit minus the copy's).
3. Planned switchover (a second pair, same Azurite): `fleet dr switchover --to forge` on the old
   primary (writers stopped, replicas checked equal), then on forge: wall time and rows lost
   (the target is 0).

    .venv/bin/python bench/dr.py            # 17 P0 DBs
    .venv/bin/python bench/dr.py --quick    # 5 DBs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.restore_probes import read_rows, summary, wait_for  # noqa: E402
from daemons.restore_loop.follower import quick_check  # noqa: E402
from daemons.restore_loop.litestream import find_litestream  # noqa: E402
from tests.fakes.azurite import Azurite  # noqa: E402
from tests.fakes.litestream_primary import AZURITE_KEY, Primary, Standby  # noqa: E402

FLEET = Path(sys.executable).parent / "fleet"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fleet(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, Any, str]:
    """Run ``fleet ARGS --json``; (wall seconds, parsed stdout or None, stderr tail)."""
    started = time.monotonic()
    try:
        res = subprocess.run(
            [str(FLEET), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        return time.monotonic() - started, None, "timed out after 900 s"
    wall = time.monotonic() - started
    try:
        data = json.loads(res.stdout) if res.stdout.strip().startswith("{") else None
    except ValueError:
        data = None
    return wall, data, (res.stdout + res.stderr)[-600:] if res.returncode else ""


def env_for(base: dict[str, str], root: Path, host: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("FLEET_", "NOTIFY_SOCKET"))}
    env.update(
        {
            "FLEET_FLEET__ROOT": str(root),
            "FLEET_FLEET__HOST": host,
            "LITESTREAM_AZURE_ACCOUNT_KEY": AZURITE_KEY,
            "PYTHONUNBUFFERED": "1",
            "FLEET_SLACK__BASE_URL": "http://127.0.0.1:9/api/",
        }
    )
    return env


def raw_followers(
    config: Path, out: Path, dbs: list[Path], env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    head = [str(find_litestream("")), "restore", "-config", str(config), "-f"]
    head += ["-follow-interval", "1s", "-o"]
    return [
        subprocess.Popen(
            [*head, str(out / db.name), str(db)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for db in dbs
    ]


def lost(copy: Path, primary_rows: list[tuple[int, float]]) -> dict[str, Any]:
    rows = read_rows(copy)
    rpo = primary_rows[-1][1] - rows[-1][1] if rows and primary_rows else float("nan")
    return {
        "lost": len(primary_rows) - len(rows),
        "rpo_s": max(0.0, rpo),
        "prefix": rows == primary_rows[: len(rows)],
        "quick_check": quick_check(copy),
    }


def crash_and_drill(work: Path, azurite: Azurite, n: int) -> dict[str, Any]:
    names = [f"db{i:02d}" for i in range(n)]
    primary = Primary(work / "anvil", names, abs_endpoint=azurite.endpoint, container="drill")
    azurite.create_container("drill")
    primary.create()
    primary.start_replicate()
    primary.start_writer(rate_per_s=10, max_s=3600)
    root = work / "forge" / "root"
    env = env_for(dict(os.environ), root, "forge")
    standby = Standby(env, root, work, primary, tiers=("P0",))
    standby.env.update(env)
    out: dict[str, Any] = {"dbs": n}
    raw: list[subprocess.Popen[bytes]] = []
    try:
        standby.start("", free_port())
        assert wait_for(lambda: all(standby.copy(x).exists() for x in names), 300)
        time.sleep(5)  # a few seconds of steady following before the drill
        # the drill with the production timeouts (the test harness's are short)
        drill_env = {
            **standby.env,
            "FLEET_RESTORE_LOOP__CALL_TIMEOUT_S": "10",
            "FLEET_RESTORE_LOOP__RESTORE_TIMEOUT_S": "600",
        }
        wall, report, err = fleet(["dr", "drill", "--json"], drill_env, work)
        dbs = (report or {}).get("dbs", [])
        out["drill_restore_s"] = summary([float(d["restore_s"]) for d in dbs if d.get("restore_s")])
        out["drill_check_s"] = summary([float(d["check_s"]) for d in dbs if d.get("check_s")])
        out["drill_problems"] = {
            d["db"]: str(d.get("problem"))[:160]
            for d in (report or {}).get("dbs", [])
            if not d.get("ok")
        }
        out["drill_wall_s"] = wall
        out["drill_passed"] = bool(report and report.get("passed"))
        out["drill_rehearsal_s"] = report.get("rehearsal_wall_s") if report else None
        out["drill_error"] = err
        out["drill_failed_criteria"] = [
            c["key"] for c in (report or {}).get("criteria", []) if c.get("ok") is False
        ]
        out["drill_dbs_ok"] = sum(1 for d in (report or {}).get("dbs", []) if d.get("ok"))
        # the raw baseline for the crash, started after the drill (which runs beside restore-loop
        # alone, as on the standby), on the same replicas
        raw = raw_followers(
            root / "config/litestream-restore.yml",
            work / "raw",
            [standby.copy(x) for x in names],
            standby.env,
        )
        assert wait_for(lambda: all((work / "raw" / f"{x}.db").exists() for x in names), 300)
        time.sleep(10)  # steady following on both standbys before the crash
        # crash
        assert primary.writer is not None
        primary.writer.send_signal(signal.SIGKILL)
        for proc in primary.replicates:
            proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        primary.writer.wait()
        primary.writer = None
        wall, report, err = fleet(["restore", "promote", "--all", "--json"], standby.env, work)
        rto = time.monotonic() - killed
        out["promote_rto_s"], out["promote_cli_s"], out["promote_error"] = rto, wall, err
        # the raw baseline gets the same time after the crash, then is stopped
        for proc in raw:
            proc.send_signal(signal.SIGTERM)
        for proc in raw:
            proc.wait(timeout=30)
        raw = []
        fleet_rows, raw_rows = [], []
        for x in names:
            source = primary.rows(x)
            src = [(int(i), float(t)) for i, t, _p in source]
            fleet_rows.append(lost(standby.copy(x), src))
            raw_rows.append(lost(work / "raw" / f"{x}.db", src))
        for label, rows in (("fleet", fleet_rows), ("raw", raw_rows)):
            out[f"{label}_rows_lost"] = summary([float(r["lost"]) for r in rows])
            out[f"{label}_rpo_s"] = summary([r["rpo_s"] for r in rows])
            out[f"{label}_all_prefix"] = all(r["prefix"] for r in rows)
            out[f"{label}_quick_check_ok"] = all(r["quick_check"] == "ok" for r in rows)
    finally:
        for proc in raw:
            proc.kill()
        if standby.proc is not None:
            standby.stop()
        primary.close()
    return out


def switchover(work: Path, azurite: Azurite, n: int) -> dict[str, Any]:
    names = [f"db{i:02d}" for i in range(n)]
    anvil_root = work / "anvil2" / "root"
    primary = Primary(anvil_root, names, abs_endpoint=azurite.endpoint, container="switch")
    azurite.create_container("switch")
    primary.create()
    (anvil_root / "state").mkdir(parents=True, exist_ok=True)
    (anvil_root / "state/role").write_text("primary\n")
    primary.write_tier_table(anvil_root / "config/databases.toml")
    anvil_env = env_for(dict(os.environ), anvil_root, "anvil")
    anvil_env["FLEET_RESTORE_LOOP__STANDBY_DIR"] = str(primary.db_dir)
    forge_root = work / "forge2" / "root"
    forge_env = env_for(dict(os.environ), forge_root, "forge")
    primary.start_replicate()
    primary.start_writer(rate_per_s=10, max_s=3600)
    standby = Standby(forge_env, forge_root, work, primary, tiers=("P0",))
    standby.env.update(forge_env)
    out: dict[str, Any] = {}
    try:
        standby.start("", free_port())
        assert wait_for(lambda: all(len(read_rows(standby.copy(x))) > 20 for x in names), 300)
        started = time.monotonic()
        primary.stop_writer()  # stands in for the fleet's writer daemons, which the step stops
        wall_old, _old, err_old = fleet(
            ["dr", "switchover", "--to", "forge", "--json"], anvil_env, work
        )
        wall_new, new, err_new = fleet(
            ["dr", "switchover", "--to", "forge", "--old-primary-down", "--json"],
            standby.env,
            work,
        )
        out["switchover_s"] = time.monotonic() - started
        out["old_side_s"], out["new_side_s"] = wall_old, wall_new
        out["errors"] = (err_old + err_new)[-800:]
        lost_rows = []
        for x in names:
            source = [(int(i), float(t)) for i, t, _p in primary.rows(x)]
            lost_rows.append(lost(standby.copy(x), source)["lost"])
        out["rows_lost_total"] = sum(lost_rows)
        out["rows_lost_max"] = max(lost_rows)
        out["verified"] = bool(new and new["details"]["verify"]["rows_lost"] == 0)
    finally:
        if standby.proc is not None:
            standby.stop()
        primary.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 DBs instead of 17")
    parser.add_argument("--dbs", type=int, default=None)
    args = parser.parse_args()
    n = args.dbs or (5 if args.quick else 17)
    work = Path(tempfile.mkdtemp(prefix="bench-dr-"))
    azurite = Azurite(work / "azurite").start()
    try:
        crash = crash_and_drill(work, azurite, n)
        planned = switchover(work, azurite, n)
    finally:
        azurite.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"crash_and_drill": crash, "switchover": planned}, indent=2, default=str))
    f, r = crash["fleet_rows_lost"], crash["raw_rows_lost"]
    print(f"\n{n} P0 DBs, 10 tx/s each, Azurite")
    print(
        f"drill: {crash['drill_wall_s']:.1f} s wall ({crash['drill_rehearsal_s']} s rehearsed "
        f"promote; per-DB restore median {crash['drill_restore_s']['median']:.1f} s, max "
        f"{crash['drill_restore_s']['max']:.1f} s), {crash['drill_dbs_ok']}/{n} DBs verified,"
        f" passed={crash['drill_passed']}"
        f" (failed criteria: {crash['drill_failed_criteria'] or 'none'}; the bench runs no"
        " heartbeat and no routing table, so alert_path and routing fail by design)"
    )
    print(
        f"crash failover: fleet promote RTO {crash['promote_rto_s']:.1f} s (CLI "
        f"{crash['promote_cli_s']:.1f} s); rows lost fleet median {f['median']:.0f} / max "
        f"{f['max']:.0f}, raw followers median {r['median']:.0f} / max {r['max']:.0f}; RPO s "
        f"fleet p95 {crash['fleet_rpo_s']['p95']:.2f}, raw p95 {crash['raw_rpo_s']['p95']:.2f}"
    )
    ratio = (f["median"] / r["median"]) if r["median"] else float("nan")
    print(f"rows lost ratio fleet/raw (median): {ratio:.2f}")
    print(
        f"planned switchover: {planned['switchover_s']:.1f} s (old side "
        f"{planned['old_side_s']:.1f} s, new side {planned['new_side_s']:.1f} s), rows lost "
        f"{planned['rows_lost_total']} (target 0), verified={planned['verified']}"
    )


if __name__ == "__main__":
    main()

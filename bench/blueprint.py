"""blueprint-watchdog performance: the nightly scan of a generated tree of 10,000 markdown
files (2,000 of them blueprints, DEPLOY-MAPs or ZAKON rules) against a bare ``os.walk`` that
lists the same tree, and the cold start of the ``zakon validate`` gate (process start to exit,
through the generated gate script hooks run) against a bare interpreter and the click +
pydantic path (``fleet zakon stats``), all in one run.

    .venv/bin/python bench/blueprint.py [--quick]

Targets (issue): scan < 2 s, `fleet zakon validate` cold start < 200 ms. Prints figures;
asserts nothing. Writes only under a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemons.blueprint_watchdog.inspection import ScanSettings, inspect_tree  # noqa: E402
from daemons.blueprint_watchdog.schema import DEFAULT_DOC_TYPES  # noqa: E402

FLEET = Path(sys.executable).parent / "fleet"
SECTIONS = ("Purpose", "Architecture", "Deploy", "Rollback", "Verification")


def blueprint(index: int) -> str:
    verified = datetime.now(UTC).date() - timedelta(days=index % 60)
    sections = SECTIONS if index % 7 else SECTIONS[:4]
    body = "\n".join(f"## {s}\n\n{'Some prose about it. ' * 20}\n" for s in sections)
    return f"# Service {index}\n\nLast-Verified: {verified.isoformat()}\n\n{body}"


def generate(root: Path, total: int, matching: int) -> None:
    """``total`` markdown files in a 3-level tree; ``matching`` of them are documents the scan
    reads (70% blueprints, 20% DEPLOY-MAPs, 10% ZAKON rules, a quarter of those registered)."""
    filler = "# Notes\n\n" + "Plain markdown that no glob matches. " * 30 + "\n"
    zakon = matching // 10
    maps = matching // 5
    blueprints = matching - zakon - maps
    registry = []
    for i in range(blueprints):
        d = root / f"projects/p{i % 40}/svc{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "BUILD-BLUEPRINT.md").write_text(blueprint(i))
    for i in range(maps):
        d = root / f"projects/p{i % 40}/svc{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "DEPLOY-MAP.md").write_text(blueprint(i + 1))
    rules = root / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for i in range(zakon):
        path = rules / f"zakon-rule-{i}.md"
        path.write_text(f"# Rule {i}\n\nText.\n")
        if i % 4 == 0:
            registry.append(
                {
                    "zakon_id": f"rule-{i}",
                    "file_path": str(path),
                    "mc_task": None,
                    "ceo_approved_token": "GRANDFATHERED-PRE-2026-05-12",
                    "status": "legacy-pre-registry",
                }
            )
    (rules / "zakon-registry.json").write_text(json.dumps({"version": "1.0", "registry": registry}))
    for i in range(total - matching):
        d = root / f"docs/d{i % 50}/s{(i // 50) % 20}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"note-{i}.md").write_text(filler)


def bare_walk(root: Path) -> int:
    count = 0
    for _dirpath, _dirs, files in os.walk(root):
        count += sum(1 for f in files if f.endswith(".md"))
    return count


def timed(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cold_start(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=30,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 files, fewer runs")
    args = parser.parse_args()
    total, matching = (2_000, 400) if args.quick else (10_000, 2_000)
    scan_runs, start_runs = (3, 5) if args.quick else (5, 20)
    with tempfile.TemporaryDirectory(prefix="bp-bench") as tmp:
        root = Path(tmp) / "root"
        t0 = time.perf_counter()
        generate(root, total, matching)
        print(
            f"generated {total} markdown files ({matching} matching) in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        settings = ScanSettings(
            roots=(root,),
            doc_types=DEFAULT_DOC_TYPES,
            registry_file=root / "rules/zakon-registry.json",
            mission_control_db=None,
            exclude_dirs=(".git", "node_modules"),
        )
        walk_s, walked = timed(lambda: bare_walk(root), scan_runs)
        scan_s, report = timed(
            lambda: inspect_tree(settings, now=time.time(), host="bench"), scan_runs
        )
        summary = report.summary()  # type: ignore[attr-defined]
        print(f"baseline os.walk listing {walked} .md files: {walk_s * 1000:.0f} ms")
        print(
            f"scan ({summary['total']} documents read and judged, "
            f"{summary['noncompliant']} non-compliant): {scan_s * 1000:.0f} ms "
            f"= {scan_s / walk_s:.1f}x the bare walk (target < 2000 ms)"
        )

        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
        env.update({"FLEET_FLEET__ROOT": str(root), "HOME": tmp})  # for `fleet zakon stats`
        # The gates read only their system config: the generated gate script fixes it.
        config = Path(tmp) / "etc/fleet.toml"
        config.parent.mkdir()
        config.write_text(f'[fleet]\nroot = "{root}"\n')
        script = Path(tmp) / "fleet-gate"
        subprocess.run(
            [str(FLEET), "blueprint", "gate-script", "--config", str(config), "--out", str(script)],
            env=env,
            stdout=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
        target = str(root / "rules/zakon-rule-0.md")
        cold_start([str(script), "zakon", "validate", target], env, 2)  # warm the page cache
        bare = cold_start([sys.executable, "-c", "pass"], env, start_runs)
        gate = cold_start([str(script), "zakon", "validate", target], env, start_runs)
        click_path = cold_start([str(FLEET), "zakon", "stats"], env, start_runs)
        print(f"baseline python -c pass: {bare * 1000:.0f} ms")
        print(
            f"zakon validate gate (gate script) cold start: {gate * 1000:.0f} ms "
            f"= {gate / bare:.1f}x bare python (target < 200 ms)"
        )
        print(
            f"fleet zakon stats (click + pydantic config path, for contrast): "
            f"{click_path * 1000:.0f} ms "
            f"= {click_path / gate:.1f}x the gate"
        )


if __name__ == "__main__":
    main()

"""`fleet litestream config` / `lint`: the litestream 0.5 YAML for both hosts from one tier table,
checked by the real litestream binary, and the lint of the old (0.3/0.4-style) config."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from daemons.restore_loop.catalog import load_tier_table
from daemons.restore_loop.litestream import find_litestream
from daemons.restore_loop.litestream_yaml import (
    lint_config,
    parse_restore_config,
    render_primary,
    render_standby,
)
from tests.conftest import run_fleet

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "databases.example.toml"

# The shape of the seed's litestream.yml (0.3/0.4 era), with example hosts.
OLD_STYLE = """\
dbs:
  - path: /srv/system/databases/mission-control.db
    replicas:
      - name: mc-abs
        type: abs
        endpoint: https://backups.example.com
        bucket: system-db-backups
        path: litestream/mission-control
        retention: 168h # 7 days
        retention-check-interval: 1h
        sync-interval: 1s
  - path: /srv/system/databases/invoices.db
    replicas:
      - type: abs
        bucket: system-db-backups
        path: litestream/invoices
        account-key: notARealKeyButLiteral==
      - type: file
        path: /mnt/backup/invoices
  - path: /srv/system/databases/tasks.db
    monitor-delay-interval: 10s
"""


def test_old_style_config_lint_names_every_problem() -> None:
    findings = {(f.path, f.severity): f.message for f in lint_config(OLD_STYLE)}
    mc = "dbs[/srv/system/databases/mission-control.db]"
    inv = "dbs[/srv/system/databases/invoices.db]"
    assert "snapshot.retention" in findings[(f"{mc}.replicas[0].retention", "warning")]
    assert (f"{mc}.replicas[0].retention-check-interval", "warning") in findings
    assert (f"{mc}.replicas", "warning") in findings  # deprecated list form
    assert (f"{mc}.replicas[0].name", "warning") in findings
    assert "exactly one" in findings[(f"{inv}.replicas", "error")]
    assert "plain text" in findings[(f"{inv}.replicas[0].account-key", "warning")]
    assert ("dbs[/srv/system/databases/tasks.db]", "error") in findings  # no replica
    assert ("dbs[/srv/system/databases/tasks.db].monitor-delay-interval", "warning") in findings
    assert lint_config("dbs: [")[0].severity == "error"


def test_generated_configs_are_lint_clean_and_complete(tmp_path: Path) -> None:
    table = load_tier_table(EXAMPLE)
    standby = render_standby(table, ["P0", "P1"], tmp_path / "standby")
    assert lint_config(standby.text) == []
    dbs = parse_restore_config(standby.text)
    assert len(dbs) == 59 and all(d.path.parent == tmp_path / "standby" for d in dbs)
    assert "prompt-cache.db" not in {d.file for d in dbs}
    doc = yaml.safe_load(standby.text)
    assert "snapshot" not in doc  # restore only
    assert all("sync-interval" not in d["replica"] for d in doc["dbs"])
    mc = next(d for d in doc["dbs"] if d["path"].endswith("/mc.db"))
    assert mc["replica"]["path"] == "litestream/mc-db"
    assert "${" in mc["replica"]["account-key"]

    primary = render_primary(table, tmp_path / "primary")
    assert [f.name for f in primary] == [
        "litestream-p0-critical.yml",
        "litestream-p0-financial.yml",
        "litestream-p1.yml",
        "litestream-p2.yml",
    ]
    total = 0
    for f in primary:
        assert lint_config(f.text) == []
        doc = yaml.safe_load(f.text)
        total += len(doc["dbs"])
        retention = {"p0-critical": "168h", "p0-financial": "720h", "p1": "72h", "p2": "24h"}
        assert doc["snapshot"]["retention"] == retention[f.retention_class]
        for d in doc["dbs"]:
            name = Path(d["path"]).name
            expected = {"flywheel.db": "30s", "hivemind-archive.db": "10s"}.get(name)
            if f.retention_class == "p2":
                expected = "10s"
            assert d["replica"]["sync-interval"] == (expected or "1s"), name
    assert total == 69
    # Same replica path for a DB on both hosts: the standby reads what the primary writes.
    prim_paths = {
        Path(d["path"]).name: d["replica"]["path"]
        for f in primary
        for d in yaml.safe_load(f.text)["dbs"]
    }
    for d in yaml.safe_load(standby.text)["dbs"]:
        assert prim_paths[Path(d["path"]).name] == d["replica"]["path"]


def test_real_litestream_accepts_the_generated_configs(tmp_path: Path) -> None:
    table = load_tier_table(EXAMPLE)
    binary = str(find_litestream(""))
    files = [render_standby(table, ["P0", "P1"], tmp_path), *render_primary(table, tmp_path)]
    for generated in files:
        path = tmp_path / generated.name
        path.write_text(generated.text)
        out = subprocess.run(
            [binary, "databases", "-config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            env={"LITESTREAM_AZURE_ACCOUNT": "acct", "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 0, out.stdout + out.stderr
        listed = [line for line in out.stdout.splitlines()[1:] if line.strip()]
        assert len(listed) == len(generated.databases), generated.name


@pytest.mark.system
def test_cli_config_and_lint(fleet_env: dict[str, str], tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    args = ["litestream", "config", "--tables", str(EXAMPLE), "--db-dir", str(tmp_path / "db")]
    standby = run_fleet([*args, "--role", "standby"], fleet_env, tmp_path)
    assert standby.returncode == 0, standby.stderr
    assert len(parse_restore_config(standby.stdout)) == 59
    # The cost goes to stderr so stdout stays a valid YAML file.
    assert "LIST requests/day" in standby.stderr and "EUR/month" in standby.stderr
    # Intervals come from the default budget: the example table's standby stays under 1/20 of
    # the 15.9 M LIST/day that fixed 1 s / 15 s intervals cost (issue 16's 800,000).
    assert "P0: 17 DBs, follow interval " in standby.stderr
    polling = re.search(r"standby polling .*?: ([\d,]+) LIST requests/day", standby.stderr)
    assert polling is not None, standby.stderr
    assert int(polling.group(1).replace(",", "")) <= 800_000
    primary = run_fleet([*args, "--role", "primary", "--out", str(out_dir)], fleet_env, tmp_path)
    assert primary.returncode == 0, primary.stderr
    names = sorted(p.name for p in out_dir.iterdir())
    assert "litestream-p0-financial.yml" in names
    assert (out_dir / "litestream-p1.yml").stat().st_mode & 0o777 == 0o600
    # On the primary the replicate services come from `fleet units generate`, hardened like
    # every fleet unit, one per retention class.
    root = Path(fleet_env["FLEET_FLEET__ROOT"])
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config/databases.toml").write_text(EXAMPLE.read_text())
    units_dir = tmp_path / "units"
    gen = run_fleet(
        ["units", "generate", "--target", "all", "--mode", "system", "--out", str(units_dir)],
        fleet_env,
        tmp_path,
    )
    assert gen.returncode == 0, gen.stderr
    unit_names = sorted(p.name for p in units_dir.iterdir())
    assert "alai-fleet-litestream-p0-financial.service" in unit_names
    assert "no.alai.fleet.litestream-p0-financial.plist" in unit_names
    unit = (units_dir / "alai-fleet-litestream-p1.service").read_text()
    assert "replicate -config" in unit and "EnvironmentFile=" in unit and "KEY" not in unit
    assert "ProtectSystem=strict" in unit and "Restart=on-failure" in unit

    old = tmp_path / "old.yml"
    old.write_text(OLD_STYLE)
    lint = run_fleet(["litestream", "lint", str(old), "--json"], fleet_env, tmp_path)
    assert lint.returncode == 1
    assert any(f["severity"] == "error" for f in json.loads(lint.stdout))
    clean = run_fleet(
        ["litestream", "lint", str(out_dir / "litestream-p1.yml")], fleet_env, tmp_path
    )
    assert clean.returncode == 0 and "clean" in clean.stdout
    missing = run_fleet(["litestream", "lint", str(tmp_path / "nope.yml")], fleet_env, tmp_path)
    assert missing.returncode == 78
    no_table = run_fleet(
        ["litestream", "config", "--role", "standby", "--tables", str(tmp_path / "x.toml")],
        fleet_env,
        tmp_path,
    )
    assert no_table.returncode == 78 and "tier table not found" in no_table.stderr

"""A garbled role file, through real ``fleet`` processes: daemons refuse with 78 naming the file
and quoting what it holds, check-config and unit generation refuse too, ``fleet status`` shows
the error instead of a role, and ``fleet role set`` (the one writer) repairs it. The full
20-variant fuzz of the reader is tests/unit/test_roles.py; here a sample, including a FIFO
that must not block anybody."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.system


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _dir(p: Path) -> None:
    p.mkdir()


SAMPLE: list[tuple[str, Callable[[Path], None], str]] = [
    ("typo", _write(b"stanby\n"), "'stanby\\n'"),
    ("bom", _write(b"\xef\xbb\xbfstandby\n"), "\\ufeffstandby"),
    ("nul", _write(b"standby\x00"), "standby\\x00"),
    ("empty", _write(b""), "is empty"),
    ("fifo", _fifo, "a FIFO"),
    ("directory", _dir, "a directory"),
]


@pytest.mark.parametrize(
    ("make", "quoted"), [(m, q) for _i, m, q in SAMPLE], ids=[i for i, _m, _q in SAMPLE]
)
def test_daemons_and_check_config_refuse_a_garbled_role_file(
    fleet_env: dict[str, str],
    fleet_root: Path,
    tmp_path: Path,
    make: Callable[[Path], None],
    quoted: str,
) -> None:
    role_file = fleet_root / "state" / "role"
    role_file.parent.mkdir(parents=True)
    make(role_file)
    for args in (["run", "claim-sweeper", "--once"], ["run", "heartbeat"], ["run", "--all"]):
        res = run_fleet(args, fleet_env, tmp_path, timeout=60)
        assert res.returncode == 78, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stdout + res.stderr
        refusal = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        reasons = [r.get("reason", "") for r in refusal if r.get("event") == "refusing to start"]
        assert reasons, res.stdout
        assert str(role_file) in reasons[0] and quoted in reasons[0]
    checked = run_fleet(["check-config"], fleet_env, tmp_path, timeout=60)
    assert checked.returncode == 78, checked.stdout + checked.stderr
    assert str(role_file) in checked.stderr and quoted in checked.stderr
    shown = run_fleet(["role", "show"], fleet_env, tmp_path, timeout=60)
    assert shown.returncode == 78 and quoted in shown.stderr
    assert not (fleet_root / "databases" / "mission-control.db").exists(), "nothing ran"


def test_status_and_units_show_the_error_and_role_set_repairs_it(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    role_file = fleet_root / "state" / "role"
    role_file.parent.mkdir(parents=True)
    role_file.write_bytes(b"\xef\xbb\xbfstanby\x00")

    status = run_fleet(["status"], fleet_env, tmp_path)
    assert status.returncode == 78, status.stdout + status.stderr
    first = status.stdout.splitlines()[0]
    assert first.startswith("role: ERROR: role file") and "\\ufeffstanby\\x00" in first
    as_json = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert as_json.returncode == 78
    rows = json.loads(as_json.stdout)
    assert rows and all(r["role"] is None for r in rows)
    assert str(role_file) in as_json.stderr

    out = tmp_path / "units"
    units = run_fleet(
        ["units", "generate", "--target", "systemd", "--mode", "user", "--out", str(out)],
        fleet_env,
        tmp_path,
    )
    assert units.returncode == 78, units.stdout + units.stderr
    assert str(role_file) in units.stderr and "Traceback" not in units.stderr
    assert not out.exists() or not any(out.iterdir()), "no unit generated from a garbled role"

    fixed = run_fleet(["role", "set", "standby"], fleet_env, tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert role_file.read_bytes() == b"standby\n"
    status = run_fleet(["status", "--json"], fleet_env, tmp_path)
    assert {r["role"] for r in json.loads(status.stdout)} == {"standby"}
    units = run_fleet(
        ["units", "generate", "--target", "systemd", "--mode", "user", "--out", str(out)],
        fleet_env,
        tmp_path,
    )
    assert units.returncode == 0, units.stdout + units.stderr
    generated = {p.name for p in out.iterdir()}
    assert "alai-fleet-restore-loop.service" in generated
    assert "alai-fleet-email-reactor.service" not in generated  # the primary's, not here


def test_role_set_over_a_directory_reports_instead_of_crashing(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    (fleet_root / "state" / "role").mkdir(parents=True)
    res = run_fleet(["role", "set", "primary"], fleet_env, tmp_path)
    assert res.returncode == 1
    assert "cannot write the role file" in res.stderr and "Traceback" not in res.stderr

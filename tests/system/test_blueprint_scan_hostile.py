"""The nightly blueprint scan against a hostile tree (issue 13): a symlink out of the root to a
secret is not followed and nothing of the secret reaches the report or an alert; a link to
/proc/self, a directory whose listing fails and files another user cannot read are findings,
never a crash. Real `fleet run blueprint-watchdog --once` / `fleet blueprint scan`
subprocesses; Slack is the local fake recording raw message text."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.notify.escape import slack_text
from tests.conftest import FLEET_BIN, run_fleet
from tests.fakes import FakeSlack
from tests.unit.test_blueprint_fixture_tree import blueprint_text, build_compliant_tree, write

pytestmark = pytest.mark.system

SECRET = "sk-live-FAKE-0123456789abcdef"


def slack_env(env: dict[str, str], slack: FakeSlack) -> dict[str, str]:
    return {**env, "FLEET_SLACK__BASE_URL": slack.base_url, "FLEET_SLACK__TOKEN": slack.token}


def every_output(root: Path, *texts: str) -> dict[str, bytes]:
    """Everything a run leaves behind: process output, the report, the outbox and HiveMind
    databases (raw bytes, WAL included), logs."""
    found = {f"output{i}": t.encode() for i, t in enumerate(texts)}
    for sub in ("state", "databases", "logs"):
        base = root / sub
        if base.exists():
            for path in base.rglob("*"):
                if path.is_file() and path.name != "mission-control.db":
                    found[str(path)] = path.read_bytes()
    return found


def test_a_secret_behind_a_symlink_never_reaches_the_report_or_alerts(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    build_compliant_tree(fleet_root)
    secrets = tmp_path / "home/.config/secrets"
    token = write(secrets / "api.md", f"## Purpose\nLast-Verified: {SECRET}\n{SECRET}\n")
    write(secrets / "svc/BUILD-BLUEPRINT.md", f"Last-Verified: {SECRET}\n")
    leak = fleet_root / "projects/leak"
    leak.mkdir(parents=True)
    (leak / "BUILD-BLUEPRINT.md").symlink_to(token)
    (fleet_root / "projects/vault").symlink_to(secrets, target_is_directory=True)
    # The same text inside the root is judged, but never quoted either.
    write(fleet_root / "projects/inner/DEPLOY-MAP.md", f"## Purpose\nLast-Verified: {SECRET}\n")
    with FakeSlack() as slack:
        env = slack_env(fleet_env, slack)
        run = run_fleet(["run", "blueprint-watchdog", "--once"], env, tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        messages = slack.messages
    scan = run_fleet(["blueprint", "scan", "--json"], fleet_env, tmp_path)
    text = run_fleet(["blueprint", "scan"], fleet_env, tmp_path)
    assert scan.returncode == 1 and text.returncode == 1, scan.stderr
    report = json.loads((fleet_root / "state/blueprint-watchdog/report.json").read_text())
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path[str(leak / "BUILD-BLUEPRINT.md")]["reasons"] == ["outside_root"]
    assert by_path[str(leak / "BUILD-BLUEPRINT.md")]["sha256"] is None
    assert str(fleet_root / "projects/vault/svc/BUILD-BLUEPRINT.md") not in by_path
    problems = [(p["path"], p["problem"]) for p in report["problems"]]
    assert (str(fleet_root / "projects/vault"), "outside_root") in problems
    inner = by_path[str(fleet_root / "projects/inner/DEPLOY-MAP.md")]
    assert "invalid_last_verified" in inner["reasons"]
    assert [m.channel for m in messages] == ["#ops"]
    assert slack_text("leak/BUILD-BLUEPRINT.md") in messages[0].text  # paths are escaped
    outputs = every_output(
        fleet_root,
        run.stdout,
        run.stderr,
        scan.stdout,
        text.stdout,
        *(m.text + json.dumps(m.extra) for m in messages),
    )
    assert len(outputs) > 6
    leaked = [name for name, data in outputs.items() if SECRET.encode() in data]
    assert leaked == [], f"the secret reached {leaked}"


def test_a_link_to_proc_self_is_a_finding_not_a_crash(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    build_compliant_tree(fleet_root)
    (fleet_root / "proc").symlink_to("/proc/self", target_is_directory=True)
    run = run_fleet(["run", "blueprint-watchdog", "--once"], fleet_env, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    report = json.loads((fleet_root / "state/blueprint-watchdog/report.json").read_text())
    assert {"path": str(fleet_root / "proc"), "problem": "outside_root"} in [
        {"path": p["path"], "problem": p["problem"]} for p in report["problems"]
    ]
    assert report["summary"]["total"] == 3 and report["walked_entries"] < 100


def listing_fails(path: str) -> bool:
    """Does listing ``path`` fail part-way (opendir succeeds, readdir fails)?"""
    try:
        it = os.scandir(path)
    except OSError:
        return False
    try:
        with it:
            for _ in it:
                pass
    except OSError:
        return True
    return False


MAP_FILES = "/proc/1/map_files"


@pytest.mark.skipif(
    not listing_fails(MAP_FILES), reason=f"{MAP_FILES} lists cleanly on this kernel"
)
def test_a_listing_that_fails_midway_is_a_finding(
    fleet_env: dict[str, str], fleet_root: Path, tmp_path: Path
) -> None:
    """/proc/1/map_files opens but cannot be listed here (a real readdir error, not a fake):
    once as a scan root's subdirectory, once through a link the config allows following."""
    build_compliant_tree(fleet_root)
    config = write(
        tmp_path / "fleet.toml",
        f'[fleet]\nroot = "{fleet_root}"\n[blueprint_watchdog]\n'
        'roots = ["/proc/1", "<root>"]\nmax_walk_entries = 50000\n',
    )
    env = {k: v for k, v in fleet_env.items() if k != "FLEET_FLEET__ROOT"}
    res = run_fleet(["blueprint", "scan", "--json", "--config", str(config)], env, tmp_path)
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr
    problems = json.loads(res.stdout)["problems"]
    assert {"path": MAP_FILES, "problem": "unreadable"} in [
        {"path": p["path"], "problem": p["problem"]} for p in problems
    ], problems
    (fleet_root / "maps").symlink_to(MAP_FILES, target_is_directory=True)
    config.write_text(
        f'[fleet]\nroot = "{fleet_root}"\n[blueprint_watchdog]\n'
        "follow_symlinks_outside_roots = true\n"
    )
    res = run_fleet(["blueprint", "scan", "--json", "--config", str(config)], env, tmp_path)
    assert res.returncode == 0, res.stderr
    problems = json.loads(res.stdout)["problems"]
    assert [(p["path"], p["problem"]) for p in problems] == [
        (str(fleet_root / "maps"), "unreadable")
    ]
    assert "listing failed" in problems[0]["detail"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bp-hostile-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for sub in path.rglob("*"):
            if sub.is_dir() and not sub.is_symlink():
                sub.chmod(0o755)
        shutil.rmtree(path)


def as_nobody(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        env={**env, "HOME": "/nonexistent"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_what_another_user_cannot_read_is_a_finding(
    fleet_env: dict[str, str], shared_dir: Path
) -> None:
    """As root the modes below mean nothing, so the scan runs as `nobody` (setpriv)."""
    probe = as_nobody([str(FLEET_BIN), "blueprint", "--help"], fleet_env, shared_dir)
    if probe.returncode != 0:
        pytest.skip(f"`nobody` cannot run this checkout's fleet: {probe.stderr[-200:]}")
    root = shared_dir / "root"
    write(root / "ok/BUILD-BLUEPRINT.md", blueprint_text())
    write(root / "closed/BUILD-BLUEPRINT.md", blueprint_text())
    write(root / "listonly/BUILD-BLUEPRINT.md", blueprint_text())
    secret = write(root / "private/BUILD-BLUEPRINT.md", blueprint_text())
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (root / "closed").chmod(0o700)  # cannot be listed
    (root / "listonly").chmod(0o744)  # listed, but nothing in it can be opened
    secret.chmod(0o600)
    config = write(shared_dir / "fleet.toml", f'[fleet]\nroot = "{root}"\n')
    config.chmod(0o644)
    env = {k: v for k, v in fleet_env.items() if k != "FLEET_FLEET__ROOT"}
    res = as_nobody(
        [str(FLEET_BIN), "blueprint", "scan", "--json", "--config", str(config)], env, shared_dir
    )
    assert res.returncode == 1, res.stdout + res.stderr
    data = json.loads(res.stdout)
    findings = {Path(f["path"]).parent.name: f["reasons"] for f in data["files"]}
    assert findings == {"ok": [], "listonly": ["unreadable"], "private": ["unreadable"]}
    assert [(Path(p["path"]).name, p["problem"]) for p in data["problems"]] == [
        ("closed", "unreadable")
    ]

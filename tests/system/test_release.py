"""A release is the built wheel, nothing else: installed from it (dependencies pinned by
constraints.txt) into an empty venv outside the checkout, with the current directory outside
the checkout too, ``fleet`` still prints every example it documents, generates units and
reports restore status, and its version is the git tag it was built from.

The wheel is built from this working tree as it is (tracked and untracked files that git
does not ignore), committed into a throwaway repository tagged ``v9.8.7``, so the test covers
uncommitted edits and the tag -> version path. Building needs the build backend
(setuptools, setuptools-scm) and installing needs the pinned dependencies from the package
index, as CI's own install does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
TAG = "9.8.7"
FALLBACK = "0.0.0"
# The repo venv's interpreter: its pip builds the wheel and installs into the new venv.
PY = sys.executable


def _run(args: list[str | Path], cwd: Path | None = None) -> str:
    res = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def _copy_working_tree(dest: Path) -> None:
    """The checkout's files as they are now, without .git, .venv or anything ignored."""
    listing = _run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO)
    for rel in filter(None, listing.split("\0")):
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree but still tracked
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def _pip(python: Path, *args: str | Path) -> None:
    """The repo venv's pip acting on another venv (which then needs no pip of its own)."""
    _run([PY, "-m", "pip", "--python", python, *args])


def _build_wheel(builder: Path, src: Path, out: Path) -> Path:
    _pip(builder, "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", out, src)
    wheels = sorted(out.glob("alai_fleet-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding pyproject.toml's build requirements (setuptools, setuptools-scm): what
    pip's isolated build would install, installed once for both builds here."""
    with (REPO / "pyproject.toml").open("rb") as fh:
        requires = tomllib.load(fh)["build-system"]["requires"]
    venv = tmp_path_factory.mktemp("builder") / "venv"
    _run([PY, "-m", "venv", "--without-pip", venv])
    _pip(venv / "bin" / "python", "install", "-q", *requires)
    return venv / "bin" / "python"


@dataclass(frozen=True)
class Release:
    wheel: Path
    venv: Path
    base: Path

    def env(self, home: Path) -> dict[str, str]:
        """Only what a login shell on a fresh host has: no PYTHONPATH, no venv of the
        checkout, no FLEET_* overrides."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
        }

    def fleet(self, *args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "fleet"), *args],
            cwd=cwd,
            env=self.env(home),
            capture_output=True,
            text=True,
            check=False,
        )

    def fresh_dir(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        return path


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, builder: Path) -> Release:
    base = tmp_path_factory.mktemp("release")
    assert REPO not in base.parents
    src = base / "src"
    _copy_working_tree(src)
    git = ["git", "-c", "user.name=release", "-c", "user.email=release@example.com"]
    _run([*git, "init", "-q"], cwd=src)
    _run([*git, "add", "-A"], cwd=src)
    _run([*git, "commit", "-q", "-m", "snapshot of the working tree"], cwd=src)
    _run([*git, "tag", "-a", f"v{TAG}", "-m", f"alai-fleet {TAG}"], cwd=src)
    wheel = _build_wheel(builder, src, base / "dist")
    venv = base / "venv"
    _run([PY, "-m", "venv", "--without-pip", venv])
    _pip(
        venv / "bin" / "python",
        "install",
        "-q",
        "--no-compile",
        "-c",
        REPO / "constraints.txt",
        wheel,
    )
    return Release(wheel=wheel, venv=venv, base=base)


def test_version_is_the_git_tag(release: Release) -> None:
    assert release.wheel.name == f"alai_fleet-{TAG}-py3-none-any.whl"
    home = release.fresh_dir("home-version")
    res = release.fleet("--version", cwd=home, home=home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"fleet, version {TAG}"
    # What fleet_build_info{version} and the heartbeat files report, and where the code
    # comes from: the venv, never the checkout.
    probe = subprocess.run(
        [
            str(release.venv / "bin" / "python"),
            "-c",
            "import shared, fleet, daemons; print(shared.__version__); "
            "print(shared.__file__); print(fleet.__file__); print(daemons.__file__)",
        ],
        cwd=home,
        env=release.env(home),
        capture_output=True,
        text=True,
        check=True,
    )
    version, *files = probe.stdout.split()
    assert version == TAG
    for file in files:
        assert Path(file).is_relative_to(release.venv), file


def test_examples_print_and_write_outside_the_checkout(release: Release) -> None:
    home = release.fresh_dir("home-examples")
    res = release.fleet("config", "example", cwd=home, home=home)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (REPO / "config" / "fleet.example.toml").read_text()

    res = release.fleet("litestream", "tables-example", cwd=home, home=home)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (REPO / "config" / "databases.example.toml").read_text()

    # The committed example units, plists and observability pack, written into an empty
    # directory, byte for byte what the checkout holds.
    out = release.fresh_dir("examples")
    for command in (("units", "example"), ("observability", "example")):
        res = release.fleet(*command, cwd=out, home=home)
        assert res.returncode == 0, f"{command}: {res.stdout}{res.stderr}"
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    committed = [
        Path(rel)
        for rel in _run(
            [
                "git",
                "ls-files",
                "units",
                "launchagents",
                "launchdaemons",
                "config/prometheus",
                "config/alertmanager",
                "config/grafana",
            ],
            cwd=REPO,
        ).split()
        if not rel.endswith("README.md")
    ]
    assert written == sorted(committed)
    for rel in written:
        assert (out / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    res = release.fleet("units", "example", "--check", cwd=out, home=home)
    assert res.returncode == 0, res.stdout + res.stderr


def test_units_generate_runs_the_installed_venv(release: Release) -> None:
    home = release.fresh_dir("home-units")
    out = release.fresh_dir("units-out")
    res = release.fleet(
        "units",
        "generate",
        "--target",
        "all",
        "--mode",
        "user",
        "--out",
        str(out),
        cwd=home,
        home=home,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    unit = (out / "alai-fleet-claim-sweeper.service").read_text()
    assert f"ExecStart={release.venv / 'bin' / 'fleet'} run claim-sweeper" in unit
    plist = (out / "no.alai.fleet.claim-sweeper.plist").read_text()
    assert f"<string>{release.venv / 'bin' / 'fleet'}</string>" in plist


def test_restore_status_on_a_fresh_host_points_at_installed_commands(release: Release) -> None:
    home = release.fresh_dir("home-restore")
    config_dir = home / ".local" / "share" / "alai-fleet" / "config"
    tables = config_dir / "databases.toml"
    res = release.fleet("restore", "status", cwd=home, home=home)
    assert res.returncode == 78, res.stdout + res.stderr
    assert f"fleet litestream tables-example > {tables}" in res.stderr
    assert "config/databases.example.toml" not in res.stderr

    # Following the advice (and the next one, for the standby's litestream config) gives a
    # status table: one row per restored DB, nothing restored yet, so exit 1.
    config_dir.mkdir(parents=True)
    res = release.fleet("litestream", "tables-example", cwd=home, home=home)
    assert res.returncode == 0, res.stderr
    tables.write_text(res.stdout)
    res = release.fleet("restore", "status", cwd=home, home=home)
    assert res.returncode == 78
    assert "fleet litestream config --role standby" in res.stderr
    res = release.fleet(
        "litestream", "config", "--role", "standby", "--out", str(config_dir), cwd=home, home=home
    )
    assert res.returncode == 0, res.stdout + res.stderr
    res = release.fleet("restore", "status", cwd=home, home=home)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "restore-loop has not run on this host" in res.stdout
    assert any(line.startswith("mission-control ") for line in res.stdout.splitlines())


def test_a_build_outside_git_gets_the_fallback_version(builder: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _copy_working_tree(src)
    wheel = _build_wheel(builder, src, tmp_path / "dist")
    assert wheel.name == f"alai_fleet-{FALLBACK}-py3-none-any.whl"

"""constraints.txt is the lock: it pins, with ``==``, every distribution alai-fleet installs
(its runtime dependencies and the [test] extra, with everything they pull in) and nothing
else, each pin inside the range pyproject.toml declares. The venv running these tests was
installed with it (README, .ci/run), so what is installed here is what the file says."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate it with the command at the top of constraints.txt"
REINSTALL = ".venv/bin/pip install -q -c constraints.txt -e '.[test]'"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for number, raw in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert match, f"constraints.txt:{number}: {line!r} is not NAME==VERSION"
        name = canonicalize_name(match[1])
        assert name not in found, f"constraints.txt:{number}: {name} pinned twice"
        found[name] = match[2]
    return found


def project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        data: dict[str, object] = tomllib.load(fh)["project"]
    return data


def direct_requirements() -> list[Requirement]:
    meta = project()
    deps = [Requirement(r) for r in meta["dependencies"]]  # type: ignore[attr-defined]
    extras = meta["optional-dependencies"]
    return deps + [Requirement(r) for r in extras["test"]]  # type: ignore[index]


def closure() -> set[str]:
    """Every distribution installing alai-fleet[test] brings in here, from the installed
    metadata, following markers (for this platform and Python) and requested extras."""
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(str(r)), "") for r in direct_requirements()]
    names: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in ["", *sorted(req.extras)]:
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            names.add(name)
            try:
                requires = md.requires(name) or []
            except md.PackageNotFoundError:
                raise AssertionError(f"{name} is required but not installed: {REINSTALL}") from None
            todo.extend((Requirement(r), wanted) for r in requires)
    return names


def test_every_installed_distribution_is_pinned_and_nothing_else() -> None:
    pinned, needed = pins(), closure()
    missing, stale = sorted(needed - set(pinned)), sorted(set(pinned) - needed)
    assert not missing, f"not pinned in constraints.txt: {missing}; {REGENERATE}"
    assert not stale, f"pinned but no longer needed: {stale}; {REGENERATE}"


def test_pins_are_inside_the_declared_ranges() -> None:
    pinned = pins()
    for req in direct_requirements():
        version = pinned[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {req.name}=={version}, outside pyproject's {req}"
        )


def test_this_venv_is_installed_from_the_lock() -> None:
    pinned = pins()
    drift = {
        name: (md.version(name), pinned.get(name))
        for name in closure()
        if md.version(name) != pinned.get(name)
    }
    assert not drift, f"installed != pinned {drift}: {REINSTALL}"

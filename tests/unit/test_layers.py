"""The import contract: three layers, one direction.

``shared/`` (the library) imports neither ``daemons`` nor ``fleet``; a daemon package imports
``shared`` and itself, never another daemon, the ``daemons`` root or the app; only ``fleet/`` (the
app) names every daemon. Every import counts: top level, inside functions, under
``TYPE_CHECKING``. The checker runs over the real tree here, and over a tree with a deliberate
violation to show it can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAEMON_NAMES = sorted(p.name for p in (REPO / "daemons").iterdir() if (p / "__init__.py").is_file())


def _module_of(rel: Path) -> list[str]:
    parts = list(rel.with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path, rel: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports: absolute and relative imports (resolved against its
    package), and string constants handed to ``importlib.import_module`` / ``__import__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_of(rel)
    if rel.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.append((node.lineno, module))
            # `from daemons import email_reactor`, `from .. import beta`
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if name in ("import_module", "__import__") and literal:
                found.append((node.lineno, str(first.value)))  # type: ignore[attr-defined]
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import in ``root`` that crosses a layer, as ``path:line: message``."""
    problems: list[str] = []
    paths = [p for top in ("shared", "daemons", "fleet") for p in (root / top).rglob("*.py")]
    for path in sorted(paths):
        rel = path.relative_to(root)
        top = rel.parts[0]
        for line, module in _imports(path, rel):
            head = module.split(".")
            where = f"{rel}:{line}"
            if top == "shared" and head[0] in ("daemons", "fleet"):
                problems.append(f"{where}: the library imports {module}")
            elif top == "daemons" and len(rel.parts) > 2:
                own = rel.parts[1]
                if head[0] == "fleet":
                    problems.append(f"{where}: daemon {own} imports the app ({module})")
                elif head[0] == "daemons" and len(head) > 1 and head[1] != own:
                    problems.append(f"{where}: daemon {own} imports {module}")
                elif head == ["daemons"]:
                    problems.append(f"{where}: daemon {own} imports the daemons package root")
            elif top == "daemons" and (head[0] == "fleet" or (head[0] == "daemons" and head[1:])):
                # The package root and any module beside the daemon packages: no daemon code,
                # no app (the registry is the app's).
                problems.append(f"{where}: daemons/{rel.name} imports {module}")
    return sorted(set(problems))


def test_the_tree_keeps_its_layers() -> None:
    assert layer_violations(REPO) == []


def test_every_daemon_package_has_a_manifest_and_a_registry_line() -> None:
    from fleet.registry import LINES

    assert DAEMON_NAMES, "no daemon packages found"
    assert {line.manifest.split(".")[1] for line in LINES} == set(DAEMON_NAMES)
    for name in DAEMON_NAMES:
        assert (REPO / "daemons" / name / "manifest.py").is_file(), name


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_catches_each_kind_of_crossing(tmp_path: Path) -> None:
    _write(tmp_path, "shared/fine.py", "import json\nfrom shared.files import x\n")
    _write(tmp_path, "shared/bad.py", "def f():\n    from daemons.heartbeat import policy\n")
    _write(
        tmp_path,
        "shared/typed.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fleet.registry\n",
    )
    _write(tmp_path, "daemons/alpha/ok.py", "from daemons.alpha import rules\nimport shared\n")
    _write(tmp_path, "daemons/alpha/peer.py", "from daemons.beta.config import Section\n")
    _write(tmp_path, "daemons/alpha/root.py", "from daemons import beta\n")
    _write(tmp_path, "daemons/alpha/app.py", "import fleet.cli\n")
    _write(tmp_path, "daemons/alpha/rel.py", "from ..beta import config\nfrom . import rules\n")
    _write(tmp_path, "daemons/alpha/__init__.py", "")
    _write(tmp_path, "daemons/helper.py", "import fleet.cli\n")
    _write(
        tmp_path,
        "shared/dynamic.py",
        "import importlib\nimportlib.import_module('daemons.beta.config')\n"
        "__import__('fleet.registry')\nimportlib.import_module(name)\n",
    )
    _write(tmp_path, "fleet/registry.py", "import daemons.alpha.manifest\n")
    problems = layer_violations(tmp_path)
    assert sorted({p.split(":")[0] for p in problems}) == [
        "daemons/alpha/app.py",
        "daemons/alpha/peer.py",
        "daemons/alpha/rel.py",
        "daemons/alpha/root.py",
        "daemons/helper.py",
        "shared/bad.py",
        "shared/dynamic.py",
        "shared/typed.py",
    ]
    assert any("daemons/alpha/rel.py:1: daemon alpha imports daemons.beta" in p for p in problems)
    assert not any(p.startswith("daemons/alpha/rel.py:2") for p in problems)
    assert sum(p.startswith("shared/dynamic.py") for p in problems) == 2
    assert any("imports daemons.beta.config" in p for p in problems)
    assert any("the library imports fleet.registry" in p for p in problems)

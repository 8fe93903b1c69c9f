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
DAEMON_NAMES = sorted(
    p.name for p in (REPO / "daemons").iterdir() if (p / "__init__.py").is_file()
)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "daemons":  # `from daemons import email_reactor`
                found += [(node.lineno, f"daemons.{a.name}") for a in node.names]
    return found


def layer_violations(root: Path) -> list[str]:
    """Every import in ``root`` that crosses a layer, as ``path:line: message``."""
    problems: list[str] = []
    paths = [p for top in ("shared", "daemons", "fleet") for p in (root / top).rglob("*.py")]
    for path in sorted(paths):
        rel = path.relative_to(root)
        top = rel.parts[0]
        for line, module in _imports(path):
            head = module.split(".")
            where = f"{rel}:{line}"
            if top == "shared" and head[0] in ("daemons", "fleet"):
                problems.append(f"{where}: the library imports {module}")
            elif top == "daemons" and len(rel.parts) > 2:
                own = rel.parts[1]
                if head[0] == "fleet":
                    problems.append(f"{where}: daemon {own} imports the app ({module})")
                elif head[0] == "daemons" and (len(head) == 1 or head[1] != own):
                    problems.append(f"{where}: daemon {own} imports {module}")
            elif top == "daemons" and rel.name == "__init__.py" and head[0] in ("daemons", "fleet"):
                problems.append(f"{where}: the daemons package root imports {module}")
    return problems


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
    _write(tmp_path, "fleet/registry.py", "import daemons.alpha.manifest\n")
    problems = layer_violations(tmp_path)
    assert [p.split(":")[0] for p in problems] == [
        "daemons/alpha/app.py",
        "daemons/alpha/peer.py",
        "daemons/alpha/root.py",
        "daemons/alpha/root.py",
        "shared/bad.py",
        "shared/typed.py",
    ]
    assert any("imports daemons.beta.config" in p for p in problems)
    assert any("the library imports fleet.registry" in p for p in problems)
